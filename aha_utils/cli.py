"""What both CLIs share: `--set` parsing, the settings table of `--help`, checks of names before
anything loads, and `run_main`, which turns an expected error into one readable line."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import traceback
from pathlib import Path

from aha_utils.run_config import FIELD_HELP, RunConfig


TIME_LIMIT_HELP = (
    "size the run to this many minutes: after 3 timed steps the learning-rate schedule (warmup, "
    "then cosine to lr_floor) is planned over min(--steps, the steps that fit the time left), "
    "and that plan is stored with the checkpoint so --resume continues it exactly; as a safety "
    "net the run also stops after the first step that ends past the limit. Either way the last "
    "step is evaluated, checkpointed and summarised")


# Errors a user can cause and fix: printed as one line (no traceback unless --debug).
EXPECTED = (ValueError, FileNotFoundError, FileExistsError, PermissionError, ConnectionError,
            ImportError, FloatingPointError, RuntimeError, OSError)


def run_main(fn, argv: list[str] | None, out: str | None = None) -> int:
    """Call `fn()`; an expected error prints `error: ...` and returns 1 (2 for usage), and a run
    folder `out` that this call created and left with no file is removed."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    fresh = out is not None and not Path(out).exists()
    try:
        return fn()
    except EXPECTED as err:
        if fresh and Path(out).is_dir() and not any(p.is_file() for p in Path(out).rglob("*")):
            shutil.rmtree(out, ignore_errors=True)
        if debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        if not debug:
            print("(add --debug for the traceback)", file=sys.stderr)
        return 1


def check_names(model: str, template: str) -> None:
    """Model and template names, before anything loads (the messages name the CLI flags)."""
    from aha_utils.data.prompts import TEMPLATES
    from aha_utils.weights import MODEL_NAMES
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}: pass --model with one of {MODEL_NAMES} "
                         "(gemma3-270m needs no download)")
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: pass --set template=NAME with one of "
                         f"{TEMPLATES}")


def settings_table(cfg: RunConfig | None = None) -> str:
    """Every RunConfig field, its default (of `cfg`: the preset in use) and its meaning."""
    cfg = cfg or RunConfig()
    lines = ["settings (change any with --set FIELD=VALUE; default = this machine's preset):"]
    for f in dataclasses.fields(RunConfig):
        lines.append(f"  {f.name:<18} {str(getattr(cfg, f.name)):<12} {FIELD_HELP[f.name]}")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict:
    """`["learning_rate=3e-6", "lora_rank=none"]` -> typed RunConfig overrides.

    Each value is parsed as the field's declared type (`int | None` accepts `none`), so a typo
    fails here with the field's name rather than deep inside the run."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(fields)}")
        if key in ("task", "steps"):
            raise ValueError(f"--set {key}=...: use --{key} instead")
        kind = str(fields[key].type)
        if raw.strip().lower() in ("none", "null") and "None" in kind:
            out[key] = None
            continue
        try:
            if kind.startswith("bool"):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("true", "1")
            elif kind.startswith("int"):
                out[key] = int(raw)
            elif kind.startswith("float"):
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise ValueError(f"--set {item!r}: {key} takes a value of type {kind}") from None
    return out
