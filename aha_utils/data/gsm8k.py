"""GSM8K: grade-school maths word problems whose answer is one number.

In the original release (github.com/openai/grade-school-math, and `openai/gsm8k` config `main`
on the Hub) each row is `{"question", "answer"}`, where `answer` is the worked solution ending in a
line `#### N`. `load_gsm8k` returns `{"question", "answer", "solution"}`: `answer` is N as a
canonical string (thousands separators removed: `#### 65,960` gives `"65960"`), `solution` the
worked text before `####` (for few-shot prompts or an SFT warm-start). Train has 7,473 rows, test
1,319.

Rows are checked as they load: a row without exactly one `####`, or whose N is not one number,
raises `ValueError` naming the row, rather than producing a problem nobody can score.

The release (MIT, its licence beside it) ships with the course, gzipped, in `gsm8k_release/`:
the task then works offline and with nothing beside the clone. The Hub stays one argument away
(`source="hub"`) for readers who use `datasets`, pinned to one commit (`GSM8K_REVISION`).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

GSM8K_HUB_ID, GSM8K_CONFIG = "openai/gsm8k", "main"
# The Hub commit to load: a later push to openai/gsm8k cannot change the problems under a run.
# This is the commit whose "main" config holds the release's 7,473 train / 1,319 test rows.
GSM8K_REVISION = "740312add88f781978c0658806c59bc2815b9866"
SPLITS = ("train", "test")
SOURCES = ("bundled", "hub")
BUNDLED_DIR = Path(__file__).resolve().parent / "gsm8k_release"   # {train,test}.jsonl.gz, LICENSE
# What follows `####` in the release: an integer, sometimes negative or with thousands commas.
_FINAL_NUMBER = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+|-?[0-9]+(?:\.[0-9]+)?")


def split_solution(text: str) -> tuple[str, str]:
    """`(worked solution, answer)` from a GSM8K answer field `... #### N`; the answer canonical.

    >>> split_solution("2 + 2 = <<2+2=4>>4 eggs.\\n#### 4")
    ('2 + 2 = <<2+2=4>>4 eggs.', '4')
    """
    parts = text.split("####")
    if len(parts) != 2:
        raise ValueError(f"expected exactly one '####' in a GSM8K answer, found {len(parts) - 1}: {text[-80:]!r}")
    raw = parts[1].strip()
    if not _FINAL_NUMBER.fullmatch(raw):
        raise ValueError(f"the text after '####' is not a single number: {raw!r}")
    return parts[0].rstrip(), raw.replace(",", "")


def _rows_to_problems(rows, source: str) -> list[dict]:
    problems = []
    for i, row in enumerate(rows):
        try:
            solution, answer = split_solution(row["answer"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}, row {i}: not a GSM8K row ({err})") from err
        problems.append({"question": row["question"], "answer": answer, "solution": solution})
    return problems


def _read_jsonl(file: Path) -> list[dict]:
    rows = []
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}:{line_no}: not JSON ({err})") from err
    return rows


def load_gsm8k(split: str, *, path: str | Path | None = None, source: str = "bundled"
               ) -> list[dict]:
    """GSM8K's `split` ("train" or "test") as `[{"question", "answer", "solution"}, ...]`.

    `path` is a local copy in the original release's JSONL format (plain or `.gz`): a file, or the
    folder holding `train.jsonl` and `test.jsonl`. Without it, `source` picks the copy shipped
    with the course ("bundled", offline) or the Hugging Face Hub ("hub", needs internet).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if path is not None:
        file = Path(path)
        if file.is_dir():
            plain, packed = file / f"{split}.jsonl", file / f"{split}.jsonl.gz"
            file = plain if plain.is_file() or not packed.is_file() else packed
        if not file.is_file():
            raise ValueError(f"no GSM8K file at {file}: pass the folder holding {split}.jsonl or the file itself")
        return _rows_to_problems(_read_jsonl(file), str(file))
    if source == "bundled":
        return load_gsm8k(split, path=BUNDLED_DIR)

    import datasets  # heavy and only needed here

    try:
        table = datasets.load_dataset(GSM8K_HUB_ID, GSM8K_CONFIG, split=split,
                                      revision=GSM8K_REVISION)
    except OSError as err:  # ConnectionError and the Hub's offline errors are OSErrors
        raise ConnectionError(
            f"could not load {GSM8K_HUB_ID} from the Hugging Face Hub ({err}). Offline, use the "
            "copy shipped with the course (source='bundled', the default) or a folder holding "
            "train.jsonl/test.jsonl from github.com/openai/grade-school-math (CLI: --gsm8k-path "
            "DIR; Python: path=DIR)."
        ) from err
    return _rows_to_problems(table, f"{GSM8K_HUB_ID} {split}")
