"""JSON-lines files, the run log's format: one reader for the whole library, an appending writer,
and an atomic rewrite.

A run killed mid-write (an OOM kill, a Colab disconnect) leaves at most a half-written last line;
`read_jsonl` skips it, so `--resume` and the analysis read what was finished. A bad line anywhere
else means a corrupt file and is an error. `rewrite_jsonl` writes a temporary file beside the
target and `os.replace`s it, so a crash mid-rewrite leaves the old file or the new one, never half.
Committed runs keep their completions gzipped (`NAME.jsonl.gz`); the reader takes either form.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file (or of `path.gz`, gzipped, when only that exists); `[]` if
    neither exists.

    A truncated *last* line (what a writer killed mid-line leaves) is skipped; a bad line
    anywhere else is an error that names the file and line, since it means a corrupt file.
    """
    path = Path(path)
    packed = path if path.suffix == ".gz" else path.with_name(path.name + ".gz")
    if not path.exists() and packed.exists():
        path = packed
    if not path.exists():
        return []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}, line {i + 1}: not JSON ({e}); the file is corrupt") from e
    return rows


def write_jsonl(path: str | Path, rows: list[dict], mode: str = "a") -> None:
    """Append `rows` to `path` (`mode="w"`: replace the file, atomically)."""
    path = Path(path)
    if mode == "w":
        return rewrite_jsonl(path, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def rewrite_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Replace `path` with exactly `rows`: a temporary file in the same folder, flushed to disk,
    then `os.replace` (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
