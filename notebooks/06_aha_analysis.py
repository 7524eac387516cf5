# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Was there an aha moment? Reading what training changed
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/06_aha_analysis.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/06_aha_analysis.ipynb)
#
# **Hardware:** a CPU is enough. This notebook only reads the files that training runs wrote
# (no model, no JAX); it takes seconds.
#
# DeepSeek-R1-Zero's report describes an "aha moment": during RL with nothing but a correctness
# reward, the responses grew longer and the model started to stop and re-check itself
# (*"Wait, wait. Wait. That's an aha moment I can flag here."*). Later replications were more
# careful. oat-zero (Liu et al., 2025, *There May Not be Aha Moment in R1-Zero-like Training*)
# found such self-reflection in base models before any RL, and found that response length can
# grow during RL without self-reflection growing with it. SimpleRL-Zoo (Zeng et al., 2025) trained
# ten base models and reported that longer responses did not always come with verification
# behaviour.
#
# So "the model had an aha moment" is a claim to test, not to assume. The committed runs come in
# two **arms**:
# - the **zero** arm is R1-Zero's recipe: GRPO straight from the base model, with the plain
#   prompt or with a few-shot prompt that shows two solved problems;
# - the **warm-start** arm is SimpleRL-Zoo's two-stage recipe: a few minutes of supervised
#   fine-tuning (SFT) on solver-written solutions (`python -m aha_utils.sft`), then the same GRPO
#   from those weights.
#
# For every GRPO run committed under `notebooks/runs/<run>/` (written by
# `python -m aha_utils.train`, notebook 05) we measure:
# 1. the reward and each of its terms over training;
# 2. held-out accuracy and format rate, before and after, with 95% confidence intervals, and
#    how much of the warm start's accuracy came from SFT and how much from GRPO;
# 3. response length over training;
# 4. how often completions use reflection words ("wait", "let me check", ...);
# 5. the same held-out problems answered before and after, and whether the written steps are right;
#
# and the last cells state, from these numbers, what grew and what did not.

# %% [markdown]
# ## Setup

# %%
# Use the course's repository if this notebook sits in a clone (or aha_utils was installed from
# one); otherwise (Colab, Kaggle, a notebook opened alone) clone it and run colab_setup.sh, which
# installs the right JAX for this machine and the pinned requirements (a few minutes).
# AHA_REPO_URL and AHA_SETUP_FLAGS (e.g. "--test") override the defaults below.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = os.environ.get("AHA_REPO_URL", "https://github.com/getting-to-aha/getting-to-aha")
SETUP_FLAGS = os.environ.get("AHA_SETUP_FLAGS", "").split()


def is_repo(d: Path) -> bool:
    return (d / "aha_utils").is_dir() and (d / "colab_setup.sh").is_file()


def find_repo_root() -> Path | None:
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:  # this folder or one above it
        if is_repo(d):
            return d
    spec = importlib.util.find_spec("aha_utils")  # `pip install -e .` from a clone elsewhere
    if spec and spec.origin and is_repo(Path(spec.origin).resolve().parents[1]):
        return Path(spec.origin).resolve().parents[1]
    return None


ROOT = find_repo_root()
if ROOT is None:  # no clone here: make one (kept, so rerunning this cell does not clone again)
    ROOT = Path("getting-to-aha").resolve()
    if not ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(ROOT)], check=True)
    subprocess.run(["bash", "colab_setup.sh", *SETUP_FLAGS], cwd=ROOT, check=True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # a clone works without `pip install -e .` too
print("repo root:", ROOT)

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI runs every notebook in quick mode

RUNS_DIR = Path(os.environ.get("AHA_RUNS_DIR", ROOT / "notebooks" / "runs"))  # the committed runs; point AHA_RUNS_DIR at your own `--out` folders
N_EXAMPLES = 2 if AHA_QUICK else 3  # held-out problems shown before/after, per run
MAX_CHARS = 400 if AHA_QUICK else 900  # a printed completion is cut after this many characters
TOP_PHRASES = 5  # reflection phrases drawn one by one: the most frequent over the run
SMOOTH = 5  # moving-average window (steps) for the noisy per-step training curves
WINDOW = 0.1  # "start" and "end" of training = the first and last 10% of logged steps (at least one)
MIN_REL_CHANGE = 0.10  # a length counts as changed when the end differs from the start by more than 10%
STALL_FRACTION = 0.8  # a run has stalled when at least 80% of its final steps have a zero gradient
STALL_RUN = 10  # where a stall starts: the first 10 steps in a row with a zero gradient
TARGET_ACC = 0.40  # the course's bar for Countdown-3: at least 40% held-out greedy accuracy ...
TARGET_GAIN = 0.20  # ... and at least 20 points above the base model
TARGETS = {"countdown-3": (TARGET_ACC, TARGET_GAIN),  # task -> (least accuracy, least gain over the base)
           "countdown-4": (0.15, 0.0), "gsm8k": (0.0, 0.10)}  # the bars for the harder tasks
NCOLS = 3  # panels per row in the per-run small multiples

# %% [markdown]
# ## 1. The runs
#
# A run folder holds `summary.json` (task, model, hardware, minutes, config, accuracy before and
# after), `metrics.jsonl` (one line per GRPO step: reward terms, lengths in tokens, loss, ...),
# `eval.jsonl` (greedy held-out accuracy at step 0 and every few steps) and `completions/`:
# `step_XXXXX.jsonl` are the completions *sampled* at temperature 1 during training,
# `eval_XXXXX.jsonl` the *greedy* answers to the held-out problems. The committed folders keep only
# some steps' completions, so the per-completion curves below have fewer points than the
# per-step ones. `aha_utils.analysis.load_run` reads a folder and tolerates what is missing.
#
# The warm-start arm's SFT phase (`python -m aha_utils.sft --out runs/sft_...`) writes a folder
# too, but not a GRPO run: `summary.json` with `"phase": "sft"` and its own schema,
# `sft_metrics.jsonl` (loss per SFT step) and a small evaluation of its own. `find_runs` lists it
# (it has a `summary.json`), so we set these folders apart: they are the *step before* a
# warm-start run, which names its SFT folder in `config.init_from`.
#
# The arm is read from each run's config, not from its folder name: `init_from` set means a warm
# start; otherwise the prompt `template` ("base" or "few_shot") tells the zero-arm variant.

# %%
import numpy as np

from aha_utils.analysis import (
    REFLECTION_PHRASES,
    REFLECTION_REGEX,
    before_after,
    completion_stats,
    find_runs,
    has_reflection,
    load_run,
    read_jsonl,
    reflection_counts,
    step_stats,
    wilson_interval,
)

folders = [load_run(p) for p in find_runs(RUNS_DIR)]
is_sft = lambda f: (f["summary"] or {}).get("phase") == "sft"
sft_phases = {f["name"]: f for f in folders if is_sft(f)}  # SFT folders, by name
for f in sft_phases.values():  # its per-step log is not metrics.jsonl: read it here
    f["sft_metrics"] = read_jsonl(f["path"] / "sft_metrics.jsonl")


def config(run: dict) -> dict:
    return (run["summary"] or {}).get("config") or {}


def task_of(run: dict) -> str:
    c = config(run)
    task = c.get("task", (run["summary"] or {}).get("task", "?"))
    return f"{task}-{c.get('num_numbers', 3)}" if task == "countdown" else task


def sft_of(run: dict) -> dict | None:
    """The SFT folder a warm-start run started from (`init_from` names it), if it is here."""
    init = config(run).get("init_from")
    return sft_phases.get(Path(init).name) if init else None


def arm_of(run: dict) -> str:
    c = config(run)
    if c.get("init_from"):
        return "warm start (SFT, then GRPO)"
    return f"zero ({c.get('template', 'base')} template)"


ARM_ORDER = ["zero (base template)", "zero (few_shot template)", "warm start (SFT, then GRPO)"]
arm_rank = lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER)
# GRPO runs only, grouped by arm, then task, then learning rate (high first: the first round).
runs = sorted((f for f in folders if not is_sft(f)),
              key=lambda r: (arm_rank(arm_of(r)), task_of(r), -config(r).get("learning_rate", 0)))
COLOR = {run["name"]: f"C{i}" for i, run in enumerate(runs)}  # one colour per run, in every figure
STYLE = {run["name"]: "-" if config(run).get("init_from") else "--" for run in runs}  # warm solid, zero dashed

resolved = RUNS_DIR.resolve()
shown_dir = resolved.relative_to(ROOT.resolve()) if resolved.is_relative_to(ROOT.resolve()) else resolved
print(f"{len(runs)} GRPO run(s) and {len(sft_phases)} SFT phase(s) under {shown_dir}")
if not runs:
    print(f"No run is committed under {shown_dir}, so there is nothing to analyse yet: every cell\n"
          "below runs and draws nothing. Train one (notebook 05, or\n"
          "  python -m aha_utils.train --task countdown --model gemma3-270m --steps 200 --out runs/mine)\n"
          "and set AHA_RUNS_DIR to the folder that holds its run folder (here: runs).")

header = f"{'arm':28} {'run':26} {'task':12} {'template':9} {'lr':>7} {'steps':>5} {'min':>5}  starts from"
print("\n" + header + "\n" + "-" * len(header))
for run in runs:
    c, s = config(run), run["summary"] or {}
    last = max((m["step"] for m in run["metrics"]), default=0)
    sft = sft_of(run)
    start = "base model" if not c.get("init_from") else (
        f"{sft['name']}" if sft else f"{c['init_from']} (SFT folder not committed)")
    print(f"{arm_of(run):28} {run['name']:26} {task_of(run):12} {c.get('template', '?'):9} "
          f"{c.get('learning_rate', float('nan')):7.0e} {last:5d} {s.get('wall_minutes', '?'):>5}  {start}")

if sft_phases:
    print(f"\n{'SFT phase':18} {'task':12} {'steps':>5} {'batch':>5} {'lr':>7} {'min':>5}  final loss  token acc.  "
          f"its own eval (n small)")
for f in sft_phases.values():
    s, c = f["summary"], f["summary"].get("config", {})
    ev = s.get("eval", {})
    own = " -> ".join(f"{ev[k]['accuracy']:.1%}" for k in ("before", "after") if k in ev)
    print(f"{f['name']:18} {task_of(f):12} {c.get('steps', '?'):>5} {c.get('batch', '?'):>5} "
          f"{c.get('lr', float('nan')):7.0e} {s.get('wall_minutes', '?'):>5}  "
          f"{s.get('final', {}).get('loss', float('nan')):10.3f}  {s.get('final', {}).get('token_accuracy', float('nan')):9.1%}  "
          f"{own} (n={ev.get('after', {}).get('n', '?')})")

print()
for run in runs:
    steps = [m["step"] for m in run["metrics"]]
    print(f"{run['name']}: {len(steps)} steps logged (last {max(steps, default=0)}), "
          f"evaluations at steps {[e['step'] for e in run['evals']]}, sampled completions kept "
          f"at steps {list(run['samples'])}, summary {'yes' if run['summary'] else 'no (unfinished?)'}, "
          f"reward scheme {config(run).get('reward_scheme', '?')}")

# %% [markdown]
# ## 2. How sure is an accuracy? The Wilson interval
#
# A held-out accuracy is $\hat p = k/n$: $k$ problems right out of $n$. With $n = 128$, one more
# right answer moves it by 0.8 points, so every accuracy below comes with an interval. The usual
# $\hat p \pm z\sqrt{\hat p(1-\hat p)/n}$ is useless where a small model starts: at $k = 0$ it
# is $[0, 0]$, as if 0 out of 128 proved the model can never be right. The **Wilson score
# interval** is the set of $p$ that a two-sided score test at level 95% ($z = 1.96$) does not
# reject, $|\hat p - p| \le z \sqrt{p(1-p)/n}$; solving that quadratic in $p$ gives
#
# $$\frac{\hat p + \frac{z^2}{2n}}{1 + \frac{z^2}{n}} \;\pm\; \frac{z}{1 + \frac{z^2}{n}}\sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}.$$
#
# Two accuracies whose intervals do not overlap differ beyond sampling noise; this is a
# conservative rule (a difference can be real while the intervals still touch), and it is the
# rule the last section uses. The library's `wilson_interval` is the formula above; here it is
# checked against the formula typed out, and printed at a few counts:

# %%
def wilson_by_hand(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


for k, n in [(0, 128), (1, 128), (13, 128), (64, 128), (0, 8)]:
    assert np.allclose(wilson_interval(k, n), wilson_by_hand(k, n))
    lo, hi = wilson_interval(k, n)
    print(f"{k:3d}/{n:<3d} = {k / n:6.1%}   95% interval [{lo:6.1%}, {hi:6.1%}]")


# %% [markdown]
# ## 3. The runs at a glance
#
# One line per run. *Before* is the greedy accuracy of the model at step 0 of GRPO, *after* at
# the last evaluation, both on the same held-out problems. For a warm start, *before* is
# therefore the SFT model, not the base model (section 6 separates the two).

# %%
def ci(rate: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a rate measured on n problems."""
    return wilson_interval(round(rate * n), n)


def fmt_rate(rate: float, n: int) -> str:
    lo, hi = ci(rate, n)
    return f"{rate:5.1%} [{lo:.1%}, {hi:.1%}]"


header = (f"{'run':26} {'arm':28} {'task':12} {'hardware':22} {'steps':>5}  "
          f"{'accuracy before -> after (95% CI)':48} format before -> after")
print(header)
print("-" * len(header))
if not runs:
    print("(no runs)")
for run in runs:
    s = run["summary"] or {}
    hardware = s.get("hardware", "?").replace(" 80GB HBM3", "").replace("NVIDIA ", "")
    last_step = max((m["step"] for m in run["metrics"]), default=0)
    if run["evals"]:
        e0, e1 = run["evals"][0], run["evals"][-1]
        acc = f"{fmt_rate(e0['accuracy'], e0['n'])} -> {fmt_rate(e1['accuracy'], e1['n'])}"
        form = f"{e0['format_rate']:.1%} -> {e1['format_rate']:.1%} (n={e1['n']})"
    else:
        acc = form = "no evaluation logged"
    print(f"{run['name']:26} {arm_of(run):28} {task_of(run):12} {hardware[:22]:22} {last_step:>5}  {acc:48} {form}")

# %% [markdown]
# ## 4. The reward over training
#
# `metrics.jsonl` logs, each step, the mean over that step's sampled completions of the reward
# and of each of its terms (`<term>_mean`): `format_soft` (a final `<answer>` exists), `correct`,
# `format_strict`, and the terms other schemes use. With TinyZero's scheme the reward is
# $1.0 \cdot \text{correct} + 0.1 \cdot (\text{format\_soft} \wedge \neg\text{correct})$, so a reward
# near 0.1 means "well-formed and wrong", and only `correct` moves it towards 1. One panel per run
# (small multiples, same axes): the thin black line is the raw reward per step, the thick one its
# moving average over `SMOOTH` steps, and the coloured lines the terms (moving averages).

# %%
import math

import matplotlib.pyplot as plt


def smooth(values, window: int = SMOOTH) -> np.ndarray:
    """Trailing moving average (shorter at the start), so the curve keeps its first point."""
    v = np.asarray(values, float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def reward_terms_of(metrics: list[dict]) -> list[str]:
    """Terms logged as `<term>_mean` with a `<term>_std` (the reward and its terms)."""
    first = metrics[0]
    return [k[:-5] for k in first if k.endswith("_mean") and f"{k[:-5]}_std" in first]


def small_multiples(n: int, height: float = 3.3):
    """A grid of NCOLS panels per row for n runs; the unused panels are switched off."""
    rows = max(1, math.ceil(n / NCOLS))
    fig, axes = plt.subplots(rows, NCOLS, figsize=(5 * NCOLS, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


if runs:
    fig, axes = small_multiples(len(runs))
    for run, ax in zip(runs, axes):
        m = run["metrics"]
        ax.set(title=f"{run['name']}\n{arm_of(run)}, {task_of(run)}", xlabel="GRPO step", ylim=(-0.02, 1.02))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        if not m:
            ax.text(0.5, 0.5, "no metrics.jsonl", ha="center", transform=ax.transAxes)
            continue
        steps = [r["step"] for r in m]
        reward = [r["reward_mean"] for r in m]
        ax.plot(steps, reward, color="k", alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(reward), color="k", lw=2, label="reward")
        for i, term in enumerate(t for t in reward_terms_of(m) if t != "reward"):
            ax.plot(steps, smooth([r[f"{term}_mean"] for r in m]), color=f"C{i}", lw=1.3, label=term)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 5. Held-out accuracy and format, before and after
#
# The training reward is measured on the problems being trained on, sampled at temperature 1.
# The held-out evaluation is greedy, on problems never trained on: the number that says whether
# the model *learned* the task. Shaded bands are 95% Wilson intervals; the first point is
# *before* (step 0 of GRPO), the last *after*. Dashed lines are the zero arm, solid ones the warm start.

# %%
if runs:
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    for run in runs:
        ev = run["evals"]
        if not ev:
            continue
        steps = [e["step"] for e in ev]
        for ax, key in zip(axes, ("accuracy", "format_rate")):
            rates = [e[key] for e in ev]
            bands = np.array([ci(e[key], e["n"]) for e in ev])
            ax.plot(steps, rates, "o", ls=STYLE[run["name"]], ms=3, color=COLOR[run["name"]],
                    label=f"{run['name']} (n={ev[-1]['n']})")
            ax.fill_between(steps, bands[:, 0], bands[:, 1], color=COLOR[run["name"]], alpha=0.15)
    axes[0].set(title="held-out accuracy (greedy)", xlabel="GRPO step", ylim=(-0.01, 0.6))
    axes[1].set(title="held-out format rate (greedy)", xlabel="GRPO step", ylim=(-0.02, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 6. Zero start or warm start? Where the accuracy came from
#
# The zero arm asks GRPO to find correct answers on its own; the warm start first shows the model
# a few thousand solved problems. To compare them fairly we need three accuracies on the **same**
# held-out problems:
# - the **base model**: step 0 of a zero-arm run with the same task and template (every run
#   evaluates the same `eval_n` problems, drawn with the same seed; the cell checks it). Where no
#   such run is committed, the SFT phase's own "before" number stands in (on only its `eval_n`);
# - the **SFT model**: step 0 of the warm-start run, since GRPO starts from the SFT weights;
# - the **trained model**: the last evaluation of each GRPO run.
#
# So the SFT phase's contribution is the jump from the first to the second, and GRPO's the
# rise from the second to the third. Left: Countdown-3 runs side by side against the GRPO step,
# with the SFT phase drawn as the arrow at step 0. Middle: the three numbers per run (every task),
# with Wilson 95% error bars; the dotted line is the course's bar (`TARGET_ACC`). Right: the SFT
# phase itself, its cross-entropy loss and token accuracy per step.

# %%
def first_eval_problems(run: dict) -> list | None:
    rows = run["eval_completions"].get(0) or []
    return [r["problem"] for r in rows] or None


def base_model_of(run: dict) -> tuple[float, int, str] | None:
    """(accuracy, n, where from) of the base model on this run's task and held-out problems."""
    if not config(run).get("init_from") and run["evals"]:
        e = run["evals"][0]
        return e["accuracy"], e["n"], f"step 0 of {run['name']}"
    for other in runs:  # a zero-arm run of the same task and template: its step 0 is the base model
        same = all(config(other).get(k) == config(run).get(k) for k in ("task", "num_numbers", "template", "eval_n"))
        if other is not run and not config(other).get("init_from") and same and other["evals"]:
            if first_eval_problems(other) == first_eval_problems(run):  # the same problems, checked
                e = other["evals"][0]
                return e["accuracy"], e["n"], f"step 0 of {other['name']}"
    sft = sft_of(run)
    before = ((sft or {}).get("summary") or {}).get("eval", {}).get("before")
    if before:
        return before["accuracy"], before["n"], f"{sft['name']}'s own eval (n={before['n']} only)"
    return None


compared = [run for run in runs if run["evals"]]  # every task: Countdown-3, Countdown-4, GSM8K
countdown = [run for run in compared if task_of(run).startswith("countdown")]
phases = {}  # run name -> {"base", "start", "best", "end"}: (accuracy, n, step or source)
for run in compared:
    ev = run["evals"]
    best = max(ev, key=lambda e: e["accuracy"])
    phases[run["name"]] = {"base": base_model_of(run),
                           "start": (ev[0]["accuracy"], ev[0]["n"], ev[0]["step"]),
                           "best": (best["accuracy"], best["n"], best["step"]),
                           "end": (ev[-1]["accuracy"], ev[-1]["n"], ev[-1]["step"])}

if compared:
    fig, (ax_c3, ax_bar, ax_sft) = plt.subplots(1, 3, figsize=(18, 4.6), gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
    for run in (r for r in countdown if task_of(r) == "countdown-3"):
        ev, name = run["evals"], run["name"]
        steps = np.array([e["step"] for e in ev])
        acc = np.array([e["accuracy"] for e in ev])
        bands = np.array([ci(e["accuracy"], e["n"]) for e in ev])
        ax_c3.errorbar(steps, acc, yerr=[acc - bands[:, 0], bands[:, 1] - acc], fmt="o", ls=STYLE[name],
                       ms=4, capsize=3, color=COLOR[name], label=f"{name} ({arm_of(run).split(' (')[0]})")
        base = phases[name]["base"]
        if config(run).get("init_from") and base:  # the SFT phase: base model -> step 0 of GRPO
            ax_c3.annotate("", xy=(0, acc[0]), xytext=(0, base[0]),
                           arrowprops=dict(arrowstyle="->", color=COLOR[name], lw=2))
            ax_c3.text(4, (base[0] + acc[0]) / 2, f"SFT: +{acc[0] - base[0]:.1%}", color=COLOR[name], fontsize=9)
    ax_c3.axhline(TARGET_ACC, color="k", ls=":", lw=1)
    ax_c3.set(title="Countdown-3: held-out accuracy (greedy, Wilson 95%)", xlabel="GRPO step", ylim=(-0.01, 0.55))
    ax_c3.legend(fontsize=8, loc="upper left")

    kinds = [("base", "base model"), ("start", "after SFT (GRPO step 0)"), ("best", "best eval in GRPO"), ("end", "end of GRPO")]
    width = 0.2
    for j, (kind, label) in enumerate(kinds):
        for i, run in enumerate(compared):
            p = phases[run["name"]][kind]
            if p is None or (kind == "start" and not config(run).get("init_from")):
                continue  # a zero-arm run has no SFT phase: its step 0 is the base model
            lo, hi = ci(p[0], p[1])
            ax_bar.bar(i + (j - 1.5) * width, p[0], width, yerr=[[p[0] - lo], [hi - p[0]]], capsize=2,
                       color=f"C{j}", alpha=0.85, label=label)
    handles, labels = ax_bar.get_legend_handles_labels()
    keep = dict(zip(labels, handles))  # one legend entry per kind
    ax_bar.legend(keep.values(), keep.keys(), fontsize=8, loc="upper left")
    ax_bar.axhline(TARGET_ACC, color="k", ls=":", lw=1)
    ax_bar.set_xticks(range(len(compared)), [f"{r['name']}\n{task_of(r)}" for r in compared], fontsize=6, rotation=30,
                      ha="right")
    ax_bar.set(title="accuracy before SFT, after SFT, and during/after GRPO", ylim=(0, 0.55))

    for f in sft_phases.values():
        m = f["sft_metrics"]
        if m:
            steps = [r["step"] for r in m]
            ax_sft.plot(steps, [r["loss"] for r in m], label=f"{f['name']} loss")
            ax_sft.plot(steps, [r["token_accuracy"] for r in m], ls="--", label=f"{f['name']} token accuracy")
    ax_sft.set(title="the SFT phase (before GRPO)", xlabel="SFT step", ylim=(0, 1.6))
    if ax_sft.lines:
        ax_sft.legend(fontsize=8)
    for ax in (ax_c3, ax_bar, ax_sft):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.show()

    print(f"{'run':26} {'base model':22} {'after SFT':22} {'end of GRPO':22} {'SFT':>7} {'GRPO':>7}  GRPO's change beyond noise?")
    for run in compared:
        ph = phases[run["name"]]
        base, start, end = ph["base"], ph["start"], ph["end"]
        warm = bool(config(run).get("init_from"))
        sft_txt = fmt_rate(start[0], start[1]) if warm else "(no SFT)"
        base_txt = fmt_rate(base[0], base[1]) if base else "?"
        (lo0, hi0), (lo1, hi1) = ci(start[0], start[1]), ci(end[0], end[1])
        beyond = "rose" if lo1 > hi0 else "fell" if hi1 < lo0 else "no"
        gain_sft = f"{start[0] - base[0]:+7.1%}" if warm and base else f"{'':7}"
        print(f"{run['name']:26} {base_txt:22} {sft_txt:22} {fmt_rate(end[0], end[1]):22} {gain_sft} "
              f"{end[0] - start[0]:+7.1%}  {beyond}")
    print("\nbase model from:", {r["name"]: phases[r["name"]]["base"][2] for r in compared if phases[r["name"]]["base"]})

# %% [markdown]
# ## 7. Response length over training
#
# R1-Zero's responses grew from hundreds to thousands of tokens as accuracy rose; it is the
# most quoted sign of learning to "think longer". Two caveats to read the curves with:
# - every completion is cut at `max_new_tokens`. The right panel shows the fraction cut
#   (`truncated_frac`): if it is high, the length is pinned by the cap, not chosen by the model;
# - a completion can be long because it loops (`<answer>\n<answer>\n...`), not because it reasons.
#   Section 9 shows what the words are.
#
# Left: mean generated tokens per step (every step, from `metrics.jsonl`). Middle: mean (solid)
# and median (dotted) words per sampled completion, at the steps whose completions were kept.

# %%
sample_stats = {run["name"]: step_stats(run) for run in runs}
eval_stats = {run["name"]: step_stats(run, "eval_completions") for run in runs}

if runs:
    fig, (ax_tok, ax_words, ax_trunc) = plt.subplots(1, 3, figsize=(16, 4.2))
    for run in runs:
        name, m, st = run["name"], run["metrics"], sample_stats[run["name"]]
        if m:
            steps = [r["step"] for r in m]
            ax_tok.plot(steps, smooth([r["completion_len_mean"] for r in m]), ls=STYLE[name], color=COLOR[name], label=name)
            ax_trunc.plot(steps, smooth([r["truncated_frac"] for r in m]), ls=STYLE[name], color=COLOR[name])
        if st:
            x = [s["step"] for s in st]
            ax_words.plot(x, [s["words_mean"] for s in st], "o-", ms=3, color=COLOR[name])
            ax_words.plot(x, [s["words_median"] for s in st], "x:", ms=3, color=COLOR[name])
    ax_tok.set(title=f"tokens per completion (moving average, {SMOOTH} steps)", xlabel="GRPO step")
    ax_words.set(title="words per sampled completion (mean, median)", xlabel="GRPO step")
    ax_trunc.set(title="fraction cut at max_new_tokens", xlabel="GRPO step", ylim=(-0.02, 1.02))
    for ax in (ax_tok, ax_words, ax_trunc):
        ax.grid(alpha=0.3)
    ax_tok.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

for run in runs:
    ev = eval_stats[run["name"]]
    if len(ev) >= 2:
        print(f"{run['name']}: greedy held-out answers, words per completion: mean "
              f"{ev[0]['words_mean']:.0f} -> {ev[-1]['words_mean']:.0f}, median "
              f"{ev[0]['words_median']:.0f} -> {ev[-1]['words_median']:.0f} "
              f"(step {ev[0]['step']} -> {ev[-1]['step']})")

# %% [markdown]
# ## 8. Reflection words over training
#
# Did the model start to *re-check itself*? We cannot read minds, so we count words, as
# oat-zero does with its self-reflection keywords: a completion "reflects" if it contains at
# least one phrase of a fixed list, matched case-insensitively on word boundaries ("wait"
# counts, "await" and "waiter" do not). The list (`aha_utils.analysis.REFLECTION_PHRASES`):

# %%
print(", ".join(f'"{p}"' for p in REFLECTION_PHRASES))
demo = "Wait, 44 + 19 = 63. But wait, let me check again: the waiter said to await the result."
print(f"\n{demo!r}\n  has reflection: {has_reflection(demo)}; counts:",
      {p: c for p, c in reflection_counts(demo).items() if c})

# %% [markdown]
# A keyword is a proxy, and a leaky one: "again" and "however" appear in plain prose, and a
# model can write "wait" and change nothing (oat-zero calls this *superficial* self-reflection).
# We report the **fraction of completions** that contain a phrase, not occurrences per word, so
# that one completion looping "wait wait wait" counts once. For the warm start the test is
# sharp: its SFT data was written without a single phrase of this list (`aha_utils.sft` builds
# its solutions from a few fixed phrasings and never uses one), so any that appear during GRPO
# were not taught; they emerged. The SFT model's own answers are checked for them too.
#
# One panel per run: the thick line is the fraction of sampled completions with any phrase
# (band: 95% Wilson interval over that step's completions), the thin ones the `TOP_PHRASES`
# most frequent phrases. A panel with no thin line means no phrase was ever used.

# %%
def top_phrases(stats: list[dict], k: int = TOP_PHRASES) -> list[str]:
    """The k phrases used by the largest fraction of completions, pooled over the saved steps."""
    pooled = {p: sum(s["phrase_frac"][p] * s["n"] for s in stats) for p in REFLECTION_PHRASES}
    return [p for p in sorted(pooled, key=pooled.get, reverse=True)[:k] if pooled[p] > 0]


runs_with_samples = [run for run in runs if sample_stats[run["name"]]]
if runs_with_samples:
    fig, axes = small_multiples(len(runs_with_samples), height=3.0)
    for run, ax in zip(runs_with_samples, axes):
        st = sample_stats[run["name"]]
        steps = [s["step"] for s in st]
        frac = [s["reflection_frac"] for s in st]
        bands = np.array([ci(s["reflection_frac"], s["n"]) for s in st])
        ax.plot(steps, frac, "o-", lw=2, color="k", label="any phrase")
        ax.fill_between(steps, bands[:, 0], bands[:, 1], color="k", alpha=0.15)
        for i, phrase in enumerate(top_phrases(st)):
            ax.plot(steps, [s["phrase_frac"][phrase] for s in st], "o-", ms=2, lw=1, color=f"C{i}", label=f'"{phrase}"')
        top = min(1.02, max(0.1, bands[:, 1].max() * 1.1))  # zoomed to the data: most runs stay near 0
        ax.set(title=f"{run['name']}: completions with a reflection phrase", xlabel="GRPO step", ylim=(-0.01, top))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
elif runs:
    print("No run kept sampled completions (completions/step_*.jsonl): nothing to count.")

for run in runs:
    ev, st = eval_stats[run["name"]], sample_stats[run["name"]]
    if len(ev) >= 2:
        print(f"{run['name']}: greedy held-out answers with a reflection phrase: "
              f"{fmt_rate(ev[0]['reflection_frac'], ev[0]['n'])} at step {ev[0]['step']} -> "
              f"{fmt_rate(ev[-1]['reflection_frac'], ev[-1]['n'])} at step {ev[-1]['step']}")
    if st:
        hits = sum(round(s["reflection_frac"] * s["n"]) for s in st)
        print(f"{'':{len(run['name'])}}  sampled completions with one, all kept steps pooled: {hits} of {sum(s['n'] for s in st)}")
for f in sft_phases.values():  # what the SFT model writes, before any GRPO
    rows = read_jsonl(f["path"] / "completions" / "eval_after.jsonl")
    if rows:
        print(f"{f['name']} (the SFT model, its own eval): {sum(has_reflection(r['completion']) for r in rows)} "
              f"of {len(rows)} answers use a reflection phrase")


# %% [markdown]
# ## 9. The same problems, before and after
#
# Numbers hide what the text looks like. For each run, a few held-out problems with the greedy
# answer at step 0 (the base model, or the SFT model for a warm start) and the trained model's
# (last evaluation), matched by problem (`aha_utils.analysis.before_after`). Problems whose score
# changed are shown first, then the others in their original order; nothing else is picked.
# Reflection phrases are marked `[[like this]]`, and a line repeated k times in a row is printed
# once with `[x k]`.

# %%
def describe(problem: dict) -> str:
    if "nums" in problem:
        return f"numbers {problem['nums']} -> target {problem['target']}"
    return f"{problem.get('question', problem)!s}  (reference answer: {problem.get('answer', '?')})"


def collapse_repeats(lines: list[str]) -> list[str]:
    """A line repeated k times in a row (a looping model) is printed once, with "[x k]"."""
    out = []
    for line in lines:
        if out and out[-1][0] == line:
            out[-1][1] += 1
        else:
            out.append([line, 1])
    return [line if k == 1 else f"{line}   [x {k}]" for line, k in out]


def show(text: str) -> str:
    text = REFLECTION_REGEX.sub(lambda m: f"[[{m.group(0)}]]", text.strip())
    cut = text[:MAX_CHARS] + (f" ... [{len(text) - MAX_CHARS} more characters]" if len(text) > MAX_CHARS else "")
    return "\n".join("    " + line for line in collapse_repeats(cut.splitlines())) or "    (empty)"


def score(row: dict) -> str:
    return "correct" if row["correct"] else ("well-formed, wrong" if row["format_soft"] else "no final answer")


for run in runs:
    pairs = before_after(run, k=None)
    if not pairs:
        print(f"=== {run['name']}: fewer than two evaluations with completions kept: nothing to pair\n")
        continue
    same = lambda p: all(p["after"][k] == p["before"][k] for k in ("correct", "format_soft"))
    pairs = sorted(pairs, key=same)[:N_EXAMPLES]  # a stable sort: changed ones first, in order
    print(f"=== {run['name']} ({arm_of(run)}): step {pairs[0]['before_step']} vs step {pairs[0]['after_step']}\n")
    for p in pairs:
        print(f"--- {describe(p['problem'])}")
        print(f"  BEFORE ({score(p['before'])}):\n{show(p['before']['completion'])}")
        print(f"  AFTER  ({score(p['after'])}):\n{show(p['after']['completion'])}\n")


# %% [markdown]
# ## 10. Right answer, wrong working
#
# The warm-start answers above write their working out: "45 - 54 is -1. 48 - -1 is 18." The
# reward reads only the final `<answer>` expression, so nothing in GRPO rewards the steps for
# being true. Are they? Each written step of the form `a op b = c` (or "is c", "gives c", the SFT
# phrasings) before `</think>` can be checked with exact fractions. For each Countdown run, at the
# first and last evaluation with kept answers: how many answers write any step, the share of
# written steps that are false, and, of the *correct* answers that write steps, the share with
# at least one false step: a right answer reached through wrong working.

# %%
import re
from fractions import Fraction

# "a op b = c" / "a op b is c" / "a op b gives c"; numbers may be negative, c may be a fraction.
STEP_RE = re.compile(r"(?<![\d.])(-?\d+)\s*([-+*/])\s*(-?\d+)\s*(?:=|is|gives)\s*(-?\d+(?:/\d+)?)(?!\.?\d)")


def written_steps(text: str) -> list[tuple[str, bool]]:
    """Every arithmetic step written before </think>, with whether it is true."""
    out = []
    for a, op, b, c in STEP_RE.findall(text.split("</think>")[0]):
        a, b = Fraction(int(a)), Fraction(int(b))
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        out.append((f"{a} {op} {b} = {c}", value is not None and value == Fraction(c)))
    return out


assert written_steps("45 - 54 is -1. 48 - -1 is 18. </think>") == [("45 - 54 = -1", False), ("48 - -1 = 18", False)]
assert all(ok for _, ok in written_steps(" 44 + 19 = 63. 63 - 35 gives 28. 12 / 8 = 3/2. Done."))


def step_check(rows: list[dict]) -> dict:
    checked = [(bool(r["correct"]), written_steps(r["completion"])) for r in rows]
    steps = [ok for _, s in checked for _, ok in s]
    right = [s for c, s in checked if c and s]
    return {"n": len(rows), "with_steps": sum(bool(s) for _, s in checked), "steps": len(steps),
            "false_steps": steps.count(False), "correct_with_steps": len(right),
            "correct_with_false_step": sum(not all(ok for _, ok in s) for s in right)}


arith = {}  # run name -> {step: step_check}
print(f"{'run':26} {'step':>5}  answers writing steps   false steps            correct answers with a false step")
for run in countdown:
    ec = {s: rows for s, rows in run["eval_completions"].items() if rows}
    arith[run["name"]] = {s: step_check(ec[s]) for s in sorted(ec)[:1] + sorted(ec)[1:][-1:]}
    for s, c in arith[run["name"]].items():
        frac = lambda k, n: f"{k:4d}/{n:<4d} ({k / n:5.1%})" if n else f"{k:4d}/{n:<4d}        "
        print(f"{run['name']:26} {s:5d}  {frac(c['with_steps'], c['n']):22} {frac(c['false_steps'], c['steps']):22} "
              f"{frac(c['correct_with_false_step'], c['correct_with_steps'])}")

# One example, the first of its kind in the file: a correct final answer after false steps, at
# the last evaluation of the warm start on Countdown-3, next to the same problem at step 0.
warm3 = next((r for r in countdown if config(r).get("init_from") and task_of(r) == "countdown-3"), None)
if warm3:
    last = max(s for s, rows in warm3["eval_completions"].items() if rows)
    example = next((r for r in warm3["eval_completions"][last]
                    if r["correct"] and not all(ok for _, ok in written_steps(r["completion"]))), None)
    if example:
        before = next((r for r in warm3["eval_completions"].get(0, []) if r["problem"] == example["problem"]), None)
        print(f"\n{warm3['name']}, {describe(example['problem'])}")
        if before:
            print(f"  step 0 ({score(before)}):\n{show(before['completion'])}")
        print(f"  step {last} ({score(example)}):\n{show(example['completion'])}")
        print("  false steps:", [s for s, ok in written_steps(example["completion"]) if not ok])

# %% [markdown]
# ## 11. Where a run stalls
#
# GRPO learns only from groups whose samples earn *different* rewards: when the G samples of
# every prompt score alike (all wrong, or all the same right answer), every advantage is 0 and
# the step's gradient is exactly 0 (`grad_norm == 0` in `metrics.jsonl`). For each run: how many
# steps had a zero gradient, the first `STALL_RUN` of them in a row, and the steps just before,
# with the gradient norm (before clipping) and the entropy of the sampled tokens. A collapse that
# follows large gradient norms and rising entropy is the policy being pushed off a cliff; a stall
# at a constant non-zero reward is a policy that has found one answer that every sample gives.

# %%
for run in runs:
    m = run["metrics"]
    if not m:
        continue
    # The first stretch of STALL_RUN consecutive steps with a zero gradient: the signal is gone.
    flat = [r["grad_norm"] == 0 for r in m]
    k = next((i for i in range(len(m) - STALL_RUN + 1) if all(flat[i:i + STALL_RUN])), None)
    print(f"=== {run['name']}: {sum(flat)} of {len(m)} steps had a zero gradient")
    if k is None:
        print(f"  never {STALL_RUN} steps in a row with a zero gradient: no stall\n")
        continue
    rest = flat[k:]
    print(f"  first {STALL_RUN} steps in a row with a zero gradient start at step {m[k]['step']}; from "
          f"there to the end ({len(rest)} steps) {np.mean(rest):.0%} had a zero gradient; last reward "
          f"{m[-1]['reward_mean']:.2f}, mean length {m[-1]['completion_len_mean']:.0f} tokens")
    print("  step  reward  format  length  grad_norm  entropy")
    for r in m[max(0, k - 8):k + 2]:
        print(f"  {r['step']:4d}  {r['reward_mean']:6.3f}  {r['format_rate']:6.2f}  "
              f"{r['completion_len_mean']:6.0f}  {r['grad_norm']:9.2f}  {r['entropy']:7.3f}")
    print()

# %% [markdown]
# ## 12. What emerged, and what did not
#
# The verdicts below are computed, with their rules stated, so they say exactly what the data
# supports and no more:
# - **start** and **end** are the first and last `WINDOW` (10%) of logged steps, at least one step each;
# - a **length** changed if the end's mean differs from the start's by more than `MIN_REL_CHANGE`;
#   it is flagged as capped when more than half of the end's completions hit `max_new_tokens`;
# - an **accuracy**, **format rate** or **reflection fraction** changed if the 95% Wilson
#   intervals at the two ends do not overlap (reflection: first vs last step with kept completions);
# - the **oat-zero check** asks whether length grew while reflection did not;
# - the **signal** check comes first, because it decides whether the others mean anything: a
#   run in which at least `STALL_FRACTION` of the last `WINDOW` of steps have a zero gradient
#   (section 11) is *stalled*, and if its reward there is 0 it has *collapsed*: it no longer
#   writes anything the reward can see, and keywords in its text are noise, not reflection.

# %%
def ends(values: list[float]) -> tuple[float, float]:
    k = max(1, int(len(values) * WINDOW))
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))


def rel_change(start: float, end: float) -> str:
    if start == 0:
        return "grew" if end > 0 else "did not change"
    r = (end - start) / start
    return "grew" if r > MIN_REL_CHANGE else "shrank" if r < -MIN_REL_CHANGE else "did not change"


def interval_change(rate0: float, n0: int, rate1: float, n1: int) -> str:
    (lo0, hi0), (lo1, hi1) = ci(rate0, n0), ci(rate1, n1)
    if lo1 > hi0:
        return "rose"
    if hi1 < lo0:
        return "fell"
    return "did not change beyond noise"


verdicts = {}
for run in runs:
    name, m, ev, st = run["name"], run["metrics"], run["evals"], sample_stats[run["name"]]
    print(f"=== {name} ({arm_of(run)}, {task_of(run)})")
    v = {}
    if m:
        r0, r1 = ends([r["reward_mean"] for r in m])
        print(f"  train reward: {r0:.3f} at the start -> {r1:.3f} at the end")
        _, flat = ends([float(r["grad_norm"] == 0) for r in m])
        v["stalled"] = flat >= STALL_FRACTION
        v["collapsed"] = v["stalled"] and r1 == 0
        state = ("collapsed (no reward at all)" if v["collapsed"] else
                 f"stalled (mean reward {r1:.2f}; within every group the samples score alike)" if v["stalled"] else "learning signal present")
        print(f"  signal: {flat:.0%} of the last steps had a zero gradient (all advantages 0): {state}")
        t0, t1 = ends([r["completion_len_mean"] for r in m])
        c0, c1 = ends([r["truncated_frac"] for r in m])
        v["length"], v["tokens"] = rel_change(t0, t1), (t0, t1)
        v["capped"] = c1 > 0.5
        print(f"  length (tokens per sampled completion): {t0:.0f} -> {t1:.0f}: {v['length']} "
              f"(cut at max_new_tokens: {c0:.0%} -> {c1:.0%})")
        if v["capped"]:
            print("    most completions hit max_new_tokens at the end: the cap, not the model, sets this length")
    if len(st) >= 2:
        w0, w1 = st[0]["words_mean"], st[-1]["words_mean"]
        print(f"  length (words per sampled completion, step {st[0]['step']} -> {st[-1]['step']}): "
              f"{w0:.0f} -> {w1:.0f}: {rel_change(w0, w1)}")
        v["reflection"] = interval_change(st[0]["reflection_frac"], st[0]["n"], st[-1]["reflection_frac"], st[-1]["n"])
        print(f"  sampled completions with a reflection phrase: {fmt_rate(st[0]['reflection_frac'], st[0]['n'])} -> "
              f"{fmt_rate(st[-1]['reflection_frac'], st[-1]['n'])}: {v['reflection']}")
    if len(ev) >= 2:
        for key, label in (("accuracy", "held-out accuracy"), ("format_rate", "held-out format rate")):
            v[key] = interval_change(ev[0][key], ev[0]["n"], ev[-1][key], ev[-1]["n"])
            print(f"  {label}: {fmt_rate(ev[0][key], ev[0]['n'])} -> {fmt_rate(ev[-1][key], ev[-1]['n'])}: {v[key]}")
    if "length" in v and "reflection" in v:
        grew, reflected = v["length"] == "grew", v["reflection"] == "rose"
        if grew and reflected:
            check = "length grew and reflection rose together: the R1-Zero pattern, in keywords at least"
        elif grew:
            check = "length grew WITHOUT more reflection: oat-zero's pattern (longer is not re-checking)"
        elif reflected:
            check = "reflection rose without the length growing"
        else:
            check = "neither length grew nor reflection rose: no aha moment by these measures"
        if v.get("collapsed"):
            check = "not meaningful: the policy collapsed, so its length and keywords are not reasoning"
        print("  oat-zero check:", check + (" (but the length is pinned at the cap)" if grew and v["capped"] else ""))
    else:
        print("  oat-zero check: not enough data (needs metrics and two steps of kept completions)")
    verdicts[name] = v
    print()
if not runs:
    print(f"No run under {shown_dir}: no verdict to compute.")

# %% [markdown]
# ### In plain words
#
# The same numbers, gathered per arm into sentences. Nothing in this cell is typed in: every
# figure comes from the files, so a new run changes the text.

# %%
import textwrap


def say(text: str) -> None:
    print(textwrap.fill(text, width=110, subsequent_indent="  ") + "\n")


def samples_per_step(run: dict) -> int:
    c = config(run)
    return c.get("prompts_per_step", 0) * c.get("num_samples", 0)


def zero_grad(run: dict) -> str:
    m = run["metrics"]
    return f"{sum(r['grad_norm'] == 0 for r in m)} of {len(m)} GRPO steps had a zero gradient"


zero = [r for r in runs if not config(r).get("init_from")]
warm = [r for r in runs if config(r).get("init_from")]

for run in (r for r in warm if r["name"] in phases):
    ph = phases[run["name"]]
    base, start, end = ph["base"], ph["start"], ph["end"]
    gain_total = end[0] - base[0] if base else float("nan")
    grpo_change = interval_change(start[0], start[1], end[0], end[1])
    text = (f"Warm start, {task_of(run)} ({run['name']}): base model {fmt_rate(base[0], base[1]) if base else '?'}, "
            f"after {sft_of(run)['summary']['config']['steps'] if sft_of(run) else '?'} SFT steps "
            f"{fmt_rate(start[0], start[1])}, after {end[2]} GRPO steps {fmt_rate(end[0], end[1])} (n={end[1]}). "
            f"SFT added {start[0] - (base[0] if base else 0):+.1%}, GRPO {end[0] - start[0]:+.1%} ({grpo_change}). ")
    if task_of(run) in TARGETS:
        least, gain = TARGETS[task_of(run)]
        met = end[0] >= least and gain_total >= gain
        bar = " and ".join(([f">= {least:.0%}"] if least else []) + ([f">= {gain * 100:.0f} points over the base model"] if gain else []))
        text += f"The course's bar ({bar}) is {'MET' if met else 'NOT met'}: {end[0]:.1%}, {gain_total * 100:+.1f} points. "
    if end[0] < start[0]:
        text += (f"GRPO lowered it: the best evaluation was {ph['best'][0]:.1%} at step {ph['best'][2]}"
                 f"{' (the SFT model itself)' if ph['best'][2] == start[2] else ''}. ")
    else:
        text += f"Its best evaluation was {ph['best'][0]:.1%} at step {ph['best'][2]}. "
    m = run["metrics"]
    if m:
        a0, a1 = ends([r["correct_mean"] for r in m])
        text += (f"Sampled training answers correct: {a0:.0%} at the start -> {a1:.0%} at the end; {zero_grad(run)}; "
                 f"tokens per completion {verdicts[run['name']]['tokens'][0]:.0f} -> {verdicts[run['name']]['tokens'][1]:.0f}.")
    say(text)

for run in zero:
    ev, m = run["evals"], run["metrics"]
    if not ev or not m:
        continue
    best = max(ev, key=lambda e: e["accuracy"])
    found = round(sum(r["correct_mean"] for r in m) * samples_per_step(run))
    text = (f"Zero arm, {task_of(run)}, {config(run).get('template')} template, lr {config(run).get('learning_rate'):.0e} "
            f"({run['name']}): held-out accuracy {fmt_rate(ev[0]['accuracy'], ev[0]['n'])} -> "
            f"{fmt_rate(ev[-1]['accuracy'], ev[-1]['n'])}, best {best['accuracy']:.1%} at step {best['step']}; "
            f"format {ev[0]['format_rate']:.0%} -> {ev[-1]['format_rate']:.0%}. "
            f"Correct sampled answers during training: {found} of {len(m) * samples_per_step(run)}; {zero_grad(run)}.")
    (lo_b, _), (_, hi_0), (_, hi_1) = ci(best["accuracy"], best["n"]), ci(ev[0]["accuracy"], ev[0]["n"]), ci(ev[-1]["accuracy"], ev[-1]["n"])
    if lo_b > max(hi_0, hi_1):  # a rise beyond noise that did not last
        text += f" It helped briefly: {best['accuracy']:.1%} at step {best['step']} is beyond noise of both ends, and it fell back."
    if verdicts[run["name"]].get("collapsed"):
        text += " The policy collapsed (no reward at all at the end)."
    elif verdicts[run["name"]].get("stalled"):
        text += " It stalled: every sample of a prompt scores the same, so GRPO has nothing to learn from."
    say(text)

for run in countdown:
    if run["name"] in arith and len(arith[run["name"]]) == 2 and config(run).get("init_from"):
        (s0, c0), (s1, c1) = arith[run["name"]].items()
        if c1["correct_with_steps"]:
            say(f"Written working, {run['name']}: false steps {c0['false_steps']}/{c0['steps']} at step {s0} -> "
                f"{c1['false_steps']}/{c1['steps']} at step {s1}; correct answers reached through at least one false "
                f"step {c0['correct_with_false_step']}/{c0['correct_with_steps']} -> "
                f"{c1['correct_with_false_step']}/{c1['correct_with_steps']}. The reward checks only the final "
                f"expression, and GRPO made the working "
                + ("less true." if c1["false_steps"] / max(c1["steps"], 1) > c0["false_steps"] / max(c0["steps"], 1) else "no less true."))

# Reflection: sampled completions with any phrase, pooled over the kept steps after the first,
# and the greedy answers at the last evaluation.
refl = {}
for run in runs:
    st = [s for s in sample_stats[run["name"]] if s["step"] > 1]
    refl[run["name"]] = (sum(round(s["reflection_frac"] * s["n"]) for s in st), sum(s["n"] for s in st))
warm_hits = sum(refl[r["name"]][0] for r in warm)
warm_total = sum(refl[r["name"]][1] for r in warm)
grew = [r["name"] for r in runs if verdicts[r["name"]].get("length") == "grew" and not verdicts[r["name"]].get("collapsed")]
say("Reflection words, sampled completions after step 1 (pooled over the kept steps): " +
    "; ".join(f"{name} {k}/{n}" for name, (k, n) in refl.items()) + ".")
say("Length: tokens per sampled completion, start -> end of training: " +
    "; ".join(f"{r['name']} {verdicts[r['name']]['tokens'][0]:.0f} -> {verdicts[r['name']]['tokens'][1]:.0f} "
              f"({verdicts[r['name']]['length']})" for r in runs if "tokens" in verdicts[r["name"]]) + ".")
collapsed = [r["name"] for r in runs if verdicts[r["name"]].get("collapsed")]
rest = [r for r in zero if r["name"] not in collapsed]
rest_hits, rest_total = sum(refl[r["name"]][0] for r in rest), sum(refl[r["name"]][1] for r in rest)
if warm and warm_total and warm_hits == 0 and not any(r["name"] in grew for r in warm):
    say(f"So: no aha moment appeared. The warm-start runs, the only ones that learned to solve problems, wrote "
        f"no reflection phrase in {warm_total} sampled completions after step 1, and their length did not grow. "
        f"The zero-arm runs that did not collapse wrote one in {rest_hits} of {rest_total}. "
        + (f"The collapsed run(s) {collapsed} are the only ones where length and keywords grew, and their text "
           f"has no answer tag and no reward (sections 9 and 11): fragments, not re-checking." if collapsed else ""))
elif warm and warm_total:
    say(f"Reflection phrases in the warm-start runs: {warm_hits} of {warm_total} sampled completions (none were "
        f"taught by SFT), and length grew in: {grew or 'no run'}. Read them in section 9 before calling it an aha moment.")

# %% [markdown]
# ## Key takeaways
#
# - An "aha moment" is a claim about behaviour; here it is split into numbers that can be
#   checked: reward, held-out accuracy and format (with Wilson intervals), response length, the
#   fraction of completions with reflection phrases, and whether the written working is true.
#   The cells above compute each of them per run and state which changed beyond the stated rules.
# - **Zero start, at this scale, finds no correct answer to learn from.** Gemma 3 270M with the
#   plain prompt learns the *format* within tens of steps and then guesses: a bare expression or
#   number in answer tags, every sample of a prompt scoring the same 0.1, so the gradient is 0
#   and nothing more is learned. A higher learning rate (the first round) went further and
#   collapsed into text with no answer tag; a lower one just stalls. The few-shot prompt starts
#   the model with well-formed working and bought a few correct answers for a while, then lost
#   them. GRPO cannot reinforce what no sample ever does: this is "guess and stop", as TinyZero
#   reports for small models.
# - **A warm start gives GRPO something to sharpen.** A couple of minutes of SFT on solver-written
#   solutions lifts Countdown-3 from the base model's zero to a real starting accuracy; GRPO,
#   from there, has groups with mixed rewards at every step and raises held-out accuracy
#   past the course's bar (section 6 and "In plain words" give the numbers). Most of the
#   lift from zero is SFT's; GRPO's part is what RL adds on top, and it is beyond noise.
# - **It does not always work.** The same recipe on Countdown-4 starts much lower after SFT, and
#   GRPO made it worse, not better: its best evaluation is the SFT model it started from. Three
#   times the SFT and a third of the learning rate (the third round) left it flat instead, and so
#   did every knob tried after that: a KL anchor to the SFT weights, groups of 16, LoRA adapters
#   only. Each raised the share of correct *samples* by a point or few and left greedy held-out
#   accuracy within noise of its 8-9% start. With 4 numbers the SFT model's greedy answer is one
#   guess of an expression; GRPO sharpens which guesses it samples but has no search to
#   reinforce. On GSM8K the warm start (SFT on the train split's own worked solutions) does the
#   lifting, more with more SFT (5.3%, 7.0%, 7.8% after 300, 500, 1,000 steps); GRPO on top
#   lost points at 3e-6 and held them within noise at 1e-6 with the KL anchor. The best, 8.4%,
#   is short of +10 points; the zero arm with a few-shot prompt gains a point or two by guessing
#   short.
# - **Right answers, wrong working.** The reward reads only the final expression, so RL improves
#   the answer and leaves the written steps free to be false; after GRPO most written steps are.
#   An outcome reward teaches outcomes.
# - **No aha moment here.** Length stayed flat and no reflection phrase appeared in the runs
#   that learned. The zero arm's few hits are the base model's prose in the first steps, and
#   the many in the collapsed first-round run are fragments of text that earns no reward. At 270M
#   parameters and ten minutes of GRPO, re-checking oneself did not emerge: the small-model
#   results of TinyZero and SimpleRL-Zoo, not DeepSeek-R1-Zero's.
# - Everything here is computed from files a run writes (`aha_utils.analysis` reads them), so
#   your own run (`AHA_RUNS_DIR=/path/to/runs`) gets the same analysis, and the "In plain words"
#   cell rewrites itself.
