# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
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
# So "the model had an aha moment" is a claim to test, not to assume. For every run committed
# under `notebooks/runs/<run>/` (written by `python -m aha_utils.train`, notebook 05) we measure:
# 1. the reward and each of its terms over training;
# 2. held-out accuracy and format rate, before and after, with 95% confidence intervals;
# 3. response length over training;
# 4. how often completions use reflection words ("wait", "let me check", ...);
# 5. the same held-out problems answered before and after;
#
# and a last cell states, from these numbers, what grew and what did not.

# %% [markdown]
# ## Setup

# %%
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/getting-to-aha/getting-to-aha"
ON_HOSTED = "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def find_repo_root() -> Path | None:
    for d in [Path.cwd(), *Path.cwd().parents]:
        if (d / "aha_utils").is_dir() and (d / "colab_setup.sh").exists():
            return d
    try:  # installed with `pip install -e .` and run from elsewhere
        import aha_utils
        return Path(aha_utils.__file__).resolve().parents[1]
    except ImportError:
        return None


ROOT = find_repo_root()
if ROOT is None and ON_HOSTED:  # fresh Colab/Kaggle session: a clone is enough (numpy + matplotlib)
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "getting-to-aha"], check=True)
    ROOT = Path("getting-to-aha").resolve()
if ROOT is None:
    raise RuntimeError(f"Run this notebook from a clone of {REPO_URL} (or on Colab/Kaggle).")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
print("repo root:", ROOT)

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI runs every notebook in quick mode

RUNS_DIR = Path(os.environ.get("AHA_RUNS_DIR", ROOT / "notebooks" / "runs"))  # the committed runs; point AHA_RUNS_DIR at your own `--out` folders
N_EXAMPLES = 2 if AHA_QUICK else 4  # held-out problems shown before/after, per run
MAX_CHARS = 400 if AHA_QUICK else 900  # a printed completion is cut after this many characters
TOP_PHRASES = 5  # reflection phrases drawn one by one: the most frequent over the run
SMOOTH = 5  # moving-average window (steps) for the noisy per-step training curves
WINDOW = 0.1  # "start" and "end" of training = the first and last 10% of logged steps (at least one)
MIN_REL_CHANGE = 0.10  # a length counts as changed when the end differs from the start by more than 10%
STALL_FRACTION = 0.8  # a run has stalled when at least 80% of its final steps have a zero gradient
STALL_RUN = 10  # where a stall starts: the first 10 steps in a row with a zero gradient

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
    reflection_counts,
    step_stats,
    wilson_interval,
)

runs = [load_run(p) for p in find_runs(RUNS_DIR)]
resolved = RUNS_DIR.resolve()
shown_dir = resolved.relative_to(ROOT.resolve()) if resolved.is_relative_to(ROOT.resolve()) else resolved
print(f"{len(runs)} run(s) under {shown_dir}")
if not runs:
    print(f"No run is committed under {shown_dir}, so there is nothing to analyse yet: every cell\n"
          "below runs and draws nothing. Train one (notebook 05, or\n"
          "  python -m aha_utils.train --task countdown --model gemma3-270m --steps 200 --out runs/mine)\n"
          "and set AHA_RUNS_DIR to the folder that holds its run folder (here: runs).")
for run in runs:
    steps = [m["step"] for m in run["metrics"]]
    print(f"{run['name']}: {len(steps)} steps logged (last {max(steps, default=0)}), "
          f"evaluations at steps {[e['step'] for e in run['evals']]}, sampled completions kept "
          f"at steps {list(run['samples'])}, summary {'yes' if run['summary'] else 'no (unfinished?)'}, "
          f"reward scheme {((run['summary'] or {}).get('config') or {}).get('reward_scheme', '?')}")

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
# One line per run. *Before* is the greedy accuracy of the model at step 0, *after* at the last
# evaluation, both on the same held-out problems.

# %%
def ci(rate: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a rate measured on n problems."""
    return wilson_interval(round(rate * n), n)


def fmt_rate(rate: float, n: int) -> str:
    lo, hi = ci(rate, n)
    return f"{rate:5.1%} [{lo:.1%}, {hi:.1%}]"


header = (f"{'run':22} {'task':9} {'model':13} {'hardware':34} {'min':>6} {'steps':>5}  "
          f"{'accuracy before -> after (95% CI)':48} format before -> after")
print(header)
print("-" * len(header))
if not runs:
    print("(no runs)")
for run in runs:
    s = run["summary"] or {}
    hardware, minutes = s.get("hardware", "?"), s.get("wall_minutes")
    last_step = max((m["step"] for m in run["metrics"]), default=0)
    if run["evals"]:
        e0, e1 = run["evals"][0], run["evals"][-1]
        acc = f"{fmt_rate(e0['accuracy'], e0['n'])} -> {fmt_rate(e1['accuracy'], e1['n'])}"
        form = f"{e0['format_rate']:.1%} -> {e1['format_rate']:.1%} (n={e1['n']})"
    else:
        acc = form = "no evaluation logged"
    print(f"{run['name']:22} {s.get('task', '?'):9} {s.get('model', '?'):13} {hardware[:34]:34} "
          f"{minutes if minutes is not None else '?':>6} {last_step:>5}  {acc:48} {form}")

# %% [markdown]
# ## 4. The reward over training
#
# `metrics.jsonl` logs, each step, the mean over that step's sampled completions of the reward
# and of each of its terms (`<term>_mean`): `format_soft` (a final `<answer>` exists), `correct`,
# `format_strict`, and the terms other schemes use. With TinyZero's scheme the reward is
# $1.0 \cdot \text{correct} + 0.1 \cdot (\text{format\_soft} \wedge \neg\text{correct})$, so a reward
# near 0.1 means "well-formed and wrong", and only `correct` moves it towards 1. The thin lines
# are the raw steps; the thick ones a moving average over `SMOOTH` steps.

# %%
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


if runs:
    fig, axes = plt.subplots(len(runs), 2, figsize=(12, 3.4 * len(runs)), squeeze=False)
    for run, (ax_r, ax_t) in zip(runs, axes):
        m = run["metrics"]
        if not m:
            ax_r.set_title(f"{run['name']}: no metrics.jsonl")
            continue
        steps = [r["step"] for r in m]
        reward = [r["reward_mean"] for r in m]
        ax_r.plot(steps, reward, color="C0", alpha=0.3, lw=1)
        ax_r.plot(steps, smooth(reward), color="C0", lw=2, label="reward (mean)")
        ax_r.set(title=f"{run['name']}: reward", xlabel="GRPO step")
        for i, term in enumerate(t for t in reward_terms_of(m) if t != "reward"):
            values = [r[f"{term}_mean"] for r in m]
            ax_t.plot(steps, values, color=f"C{i}", alpha=0.25, lw=1)
            ax_t.plot(steps, smooth(values), color=f"C{i}", lw=2, label=term)
        ax_t.set(title=f"{run['name']}: reward terms (mean over samples)", xlabel="GRPO step")
        for ax in (ax_r, ax_t):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 5. Held-out accuracy and format, before and after
#
# The training reward is measured on the problems being trained on, sampled at temperature 1.
# The held-out evaluation is greedy, on problems never trained on: the number that says whether
# the model *learned* the task. Shaded bands are 95% Wilson intervals; the first point is
# *before* (step 0), the last *after*.

# %%
if runs:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for i, run in enumerate(runs):
        ev = run["evals"]
        if not ev:
            continue
        steps = [e["step"] for e in ev]
        for ax, key in zip(axes, ("accuracy", "format_rate")):
            rates = [e[key] for e in ev]
            bands = np.array([ci(e[key], e["n"]) for e in ev])
            ax.plot(steps, rates, "o-", color=f"C{i}", label=f"{run['name']} (n={ev[-1]['n']})")
            ax.fill_between(steps, bands[:, 0], bands[:, 1], color=f"C{i}", alpha=0.2)
    for ax, title in zip(axes, ("held-out accuracy (greedy)", "held-out format rate (greedy)")):
        ax.set(title=title, xlabel="GRPO step", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## 6. Response length over training
#
# R1-Zero's responses grew from hundreds to thousands of tokens as accuracy rose; it is the
# most quoted sign of learning to "think longer". Two caveats to read the curves with:
# - every completion is cut at `max_new_tokens`. The right panel shows the fraction cut
#   (`truncated_frac`): if it is high, the length is pinned by the cap, not chosen by the model;
# - a completion can be long because it loops (`<answer>\n<answer>\n...`), not because it reasons.
#   Section 8 shows what the words are.
#
# Left: mean generated tokens per step (every step, from `metrics.jsonl`). Middle: mean and
# median words per sampled completion, at the steps whose completions were kept.

# %%
sample_stats = {run["name"]: step_stats(run) for run in runs}
eval_stats = {run["name"]: step_stats(run, "eval_completions") for run in runs}

if runs:
    fig, (ax_tok, ax_words, ax_trunc) = plt.subplots(1, 3, figsize=(15, 3.8))
    for i, run in enumerate(runs):
        m, st = run["metrics"], sample_stats[run["name"]]
        if m:
            steps = [r["step"] for r in m]
            ax_tok.plot(steps, smooth([r["completion_len_mean"] for r in m]), color=f"C{i}", label=run["name"])
            ax_trunc.plot(steps, smooth([r["truncated_frac"] for r in m]), color=f"C{i}", label=run["name"])
        if st:
            x = [s["step"] for s in st]
            ax_words.plot(x, [s["words_mean"] for s in st], "o-", color=f"C{i}", label=f"{run['name']} mean")
            ax_words.plot(x, [s["words_median"] for s in st], "x--", color=f"C{i}", label=f"{run['name']} median")
    ax_tok.set(title=f"tokens per completion (moving average, {SMOOTH} steps)", xlabel="GRPO step")
    ax_words.set(title="words per sampled completion", xlabel="GRPO step")
    ax_trunc.set(title="fraction cut at max_new_tokens", xlabel="GRPO step", ylim=(-0.02, 1.02))
    for ax in (ax_tok, ax_words, ax_trunc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
# ## 7. Reflection words over training
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
# that one completion looping "wait wait wait" counts once. Bands: 95% Wilson intervals over the
# completions of that step.

# %%
def top_phrases(stats: list[dict], k: int = TOP_PHRASES) -> list[str]:
    """The k phrases used by the largest fraction of completions, pooled over the saved steps."""
    pooled = {p: sum(s["phrase_frac"][p] * s["n"] for s in stats) for p in REFLECTION_PHRASES}
    return [p for p in sorted(pooled, key=pooled.get, reverse=True)[:k] if pooled[p] > 0]


runs_with_samples = [run for run in runs if sample_stats[run["name"]]]
if runs_with_samples:
    fig, axes = plt.subplots(len(runs_with_samples), 2, figsize=(12, 3.4 * len(runs_with_samples)), squeeze=False)
    for run, (ax_any, ax_top) in zip(runs_with_samples, axes):
        st = sample_stats[run["name"]]
        steps = [s["step"] for s in st]
        frac = [s["reflection_frac"] for s in st]
        bands = np.array([ci(s["reflection_frac"], s["n"]) for s in st])
        ax_any.plot(steps, frac, "o-", color="C0")
        ax_any.fill_between(steps, bands[:, 0], bands[:, 1], color="C0", alpha=0.2)
        ax_any.set(title=f"{run['name']}: completions with any reflection phrase", xlabel="GRPO step", ylim=(-0.02, 1.02))
        for i, phrase in enumerate(top_phrases(st)):
            ax_top.plot(steps, [s["phrase_frac"][phrase] for s in st], "o-", color=f"C{i}", label=f'"{phrase}"')
        ax_top.set(title=f"{run['name']}: the most frequent phrases", xlabel="GRPO step", ylim=(-0.02, 1.02))
        for ax in (ax_any, ax_top):
            ax.grid(alpha=0.3)
        if ax_top.lines:
            ax_top.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
elif runs:
    print("No run kept sampled completions (completions/step_*.jsonl): nothing to count.")

for run in runs:
    ev = eval_stats[run["name"]]
    if len(ev) >= 2:
        print(f"{run['name']}: greedy held-out answers with a reflection phrase: "
              f"{fmt_rate(ev[0]['reflection_frac'], ev[0]['n'])} at step {ev[0]['step']} -> "
              f"{fmt_rate(ev[-1]['reflection_frac'], ev[-1]['n'])} at step {ev[-1]['step']}")


# %% [markdown]
# ## 8. The same problems, before and after
#
# Numbers hide what the text looks like. For each run, a few held-out problems with the base
# model's greedy answer (step 0) and the trained model's (last evaluation), matched by problem
# (`aha_utils.analysis.before_after`). Problems whose score changed are shown first, then the
# others in their original order; nothing else is picked. Reflection phrases are marked
# `[[like this]]`, and a line repeated k times in a row is printed once with `[x k]`.

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
    print(f"=== {run['name']}: step {pairs[0]['before_step']} vs step {pairs[0]['after_step']}\n")
    for p in pairs:
        print(f"--- {describe(p['problem'])}")
        print(f"  BEFORE ({score(p['before'])}):\n{show(p['before']['completion'])}")
        print(f"  AFTER  ({score(p['after'])}):\n{show(p['after']['completion'])}\n")


# %% [markdown]
# ## 9. What emerged, and what did not
#
# The verdicts below are computed, with their rules stated, so they say exactly what the data
# supports and no more:
# - **start** and **end** are the first and last `WINDOW` (10%) of logged steps, at least one step each;
# - a **length** changed if the end's mean differs from the start's by more than `MIN_REL_CHANGE`;
#   it is flagged as capped when more than half of the end's completions hit `max_new_tokens`;
# - an **accuracy**, **format rate** or **reflection fraction** changed if the 95% Wilson
#   intervals at the two ends do not overlap (reflection: first vs last step with kept completions);
# - the **oat-zero check** asks whether length grew while reflection did not;
# - the **signal** check comes first, because it decides whether the others mean anything. GRPO
#   learns only from groups whose samples earn *different* rewards: when the G samples of every
#   prompt score alike (all wrong, or all the same right answer), every advantage is 0 and the
#   step's gradient is exactly 0 (`grad_norm == 0` in `metrics.jsonl`). A run in which at least
#   `STALL_FRACTION` of the last `WINDOW` of steps have a zero gradient is *stalled*, and if its
#   reward there is 0 it has *collapsed*: it no longer writes anything the reward can see, and
#   keywords in its text are noise, not reflection.

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
    print(f"=== {name}")
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
        v["length"] = rel_change(t0, t1)
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
# ## 10. Where a run stalls
#
# The verdicts say *whether* a run stalled; the log says *when* and *how*. For each run: the
# first `STALL_RUN` steps in a row with a zero gradient (no group with reward spread), and
# the steps just before it, with the gradient norm (before clipping) and the entropy of
# the sampled tokens. A collapse that follows large gradient norms and rising entropy is the policy
# being pushed off a cliff; a stall at a constant non-zero reward is a policy that has found one
# answer that every sample gives.

# %%
for run in runs:
    m = run["metrics"]
    if not m:
        continue
    # The first stretch of STALL_RUN consecutive steps with a zero gradient: the signal is gone.
    flat = [r["grad_norm"] == 0 for r in m]
    k = next((i for i in range(len(m) - STALL_RUN + 1) if all(flat[i:i + STALL_RUN])), None)
    print(f"=== {run['name']}")
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
# ## Key takeaways
#
# - An "aha moment" is a claim about behaviour; here it is split into numbers that can be
#   checked: reward, held-out accuracy and format (with Wilson intervals), response length, and
#   the fraction of completions with reflection phrases. The cell above states, per run, which of
#   them changed beyond the stated rules.
# - Accuracy on a few hundred problems is noisy: report the interval, and call a change real only
#   when the intervals separate. At 0 correct out of 128, the upper bound is still 2.9%.
# - Length and reflection words are proxies. Length is capped by `max_new_tokens` and inflated by
#   loops; a reflection word can be superficial. oat-zero's reference point: length can grow
#   without reflection growing with it. Read the before/after completions next to the curves.
# - The committed runs (Gemma 3 270M base, full fine-tuning, lr 1e-5, 16 prompts x 8, one H100)
#   show the two failure modes that DESIGN.md's peers report for small models, not an aha moment.
#   Both learned the *format* within a few steps. On GSM8K the policy then "guesses and stops": a
#   bare number in answer tags, every sample of a prompt the same, so the gradient is 0 from step 6
#   on (section 10). On Countdown the format held greedily at step 25, then large gradients
#   (steps 36-39) pushed the policy into text with no answer tag; with every reward 0 it never came
#   back. Its "reflection words" are fragments of that text, which is why the signal check comes
#   before the keyword verdicts.
# - Everything here is computed from files a run writes (`aha_utils.analysis` reads them), so
#   your own run (`AHA_RUNS_DIR=/path/to/runs`) gets the same analysis.
