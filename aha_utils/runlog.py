"""The run log a training run leaves in its folder: `summary.json` and `reward.png`, from the
JSON-lines files (`aha_utils.jsonl`) the loop appends to step by step.

`summary.json` (DESIGN.md's format): `task`, `model`, `hardware`, `wall_minutes`, `steps_done`,
`config`, and `eval.before` / `eval.after` (test set, greedy: `accuracy` with a 95% Wilson
interval, `format_rate`, `n`, `step`); with a validation split also `eval.best`: the test
evaluation of the best-on-validation parameters, with their `step` and `val_accuracy`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from aha_utils.analysis import AHA_KEYS, wilson_interval
from aha_utils.jsonl import read_jsonl
from aha_utils.run_config import RunConfig


def eval_summary(row: dict) -> dict:
    """One evaluation as summary.json gives it, with a 95% Wilson interval on the accuracy."""
    lo, hi = wilson_interval(round(row["accuracy"] * row["n"]), row["n"])
    aha = {k: row[k] for k in (*AHA_KEYS, "attempts_hist") if k in row}   # Countdown's
    return {"accuracy": row["accuracy"], "accuracy_ci95": [round(lo, 4), round(hi, 4)],
            "format_rate": row["format_rate"], "n": row["n"], "step": row["step"], **aha}


def write_summary(cfg: RunConfig, out: Path, elapsed_s: float, *, hardware: str,
                  best: dict | None = None, extra: dict | None = None) -> dict:
    """`summary.json` and `reward.png` from `out`'s `metrics.jsonl`, `eval.jsonl` (test) and
    `val.jsonl` (validation); `best`: the best-on-validation model's test evaluation row plus
    `val_accuracy`. Prints a short summary."""
    out = Path(out)
    evals = read_jsonl(out / "eval.jsonl")
    vals = read_jsonl(out / "val.jsonl")
    metrics = read_jsonl(out / "metrics.jsonl")
    summary = {"task": cfg.task, "model": cfg.model, "hardware": hardware,
               "wall_minutes": round(elapsed_s / 60, 2), "steps_done": metrics[-1]["step"],
               "config": dataclasses.asdict(cfg), **(extra or {}),
               "eval": {"before": eval_summary(evals[0]), "after": eval_summary(evals[-1])}}
    if best is not None:
        summary["eval"]["best"] = {**eval_summary(best), "val_accuracy": best["val_accuracy"],
                                   "selected_on": "validation"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_rewards(metrics, evals, out / "reward.png", vals)
    last = metrics[-1]
    print(f"{cfg.task} / {cfg.model}: {last['step']} steps in {summary['wall_minutes']} min on "
          f"{hardware}\n  last step: reward {last['reward_mean']:.3f}, format "
          f"{last.get('format_rate')}, length {last['completion_len_mean']:.0f}\n  held-out "
          f"(greedy, n={evals[-1]['n']}): accuracy {evals[0]['accuracy']:.3f} -> "
          f"{evals[-1]['accuracy']:.3f}, format {evals[0]['format_rate']:.3f} -> "
          f"{evals[-1]['format_rate']:.3f}" + (
              "" if best is None else f"; best on validation (step {best['step']}, val "
              f"{best['val_accuracy']:.3f}): test {best['accuracy']:.3f}") + f"\n  files in {out}")
    return summary


def plot_rewards(metrics: list[dict], evals: list[dict], path: Path,
                 vals: list[dict] = ()) -> None:
    """Train reward per step, test (and validation) accuracy and format rate per evaluation."""
    # A bare Figure needs no display and, unlike `matplotlib.use("Agg")`, leaves the process's
    # backend alone, so a notebook that calls `train()` keeps its inline plots.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["reward_mean"] for m in metrics], label="train reward (mean)")
    for key, label in (("accuracy", "eval accuracy"), ("format_rate", "eval format rate")):
        ax.plot([e["step"] for e in evals], [e[key] for e in evals], "o--", label=label)
    if vals:
        ax.plot([v["step"] for v in vals], [v["accuracy"] for v in vals], "s:",
                label="validation accuracy")
    ax.set_xlabel("GRPO step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
