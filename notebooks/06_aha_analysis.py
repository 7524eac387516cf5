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
# # 06 · The aha, made real: does RL teach a small model to check itself?
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/06_aha_analysis.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/06_aha_analysis.ipynb)
#
# **Hardware:** the outputs below come from a 2-core CPU, in seconds: this notebook only reads the
# files that training runs wrote (no model is loaded). The runs themselves were trained on one
# NVIDIA H100 80GB HBM3 (each run's `summary.json` says so, and section 2 prints it).
#
# DeepSeek-R1-Zero's report describes an "aha moment": during RL with nothing but a correctness
# reward, the model started to stop, re-check and try again. Replications (oat-zero, SimpleRL-Zoo)
# warn that small base models rarely do, and that words like "wait" can appear without any
# re-checking behind them. RL amplifies what a model already does at some rate (Gandhi et al.
# 2025, *Cognitive behaviors that enable self-improving reasoners*), so the runs read here give
# Gemma 3 270M something to amplify first.
#
# Four **arms**, each a short supervised warm start (SFT, 300 steps) and then 10 minutes of GRPO
# on Countdown with 3 numbers, all four trained side by side on one GPU:
# - **direct**: SFT on solutions that go straight to the answer, GRPO with TinyZero's reward;
# - **mix15**: SFT where 15% of the solutions are *search traces* (try, compute, compare with the
#   target, back up, try again) and 85% direct; GRPO with a reward where a wrong guess scores 0;
# - **search**: SFT on search traces only, the same GRPO;
# - **search + faithful**: the same SFT; GRPO whose full credit needs a right answer *and* true
#   written steps.
#
# Then two checks of that story (sections 7-8), trained together on one GPU with 7 minutes of
# GRPO each: the mix arm again in three seeds, and the direct and search arms on Countdown with 4
# numbers; and on Countdown-4 two more search arms, 10 minutes each, that differ only in how much
# of the search their traces show (section 8.1).
#
# The question: after RL, does the model check its own work more often, and does that checking
# make it right?

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
print("repo root:", os.path.relpath(ROOT))  # relative: no machine's path in the outputs

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI runs every notebook in quick mode

RUNS_DIR = Path(os.environ.get("AHA_RUNS_DIR", ROOT / "notebooks" / "runs"))  # the committed runs
ARMS = {"aha_c3_direct": "direct", "aha_c3_mix15": "mix15",  # run folder -> short label
        "aha_c3_search": "search", "aha_c3_search_faithful": "search + faithful"}
AHA_ARM = "aha_c3_mix15"  # the arm where RL must discover checking (85% of its SFT never checks)
SEEDS = ["aha_c3_mix15_seed0", "aha_c3_mix15_seed1", "aha_c3_mix15_seed2"]  # AHA_ARM again, 3 seeds
C4_ARMS = {"aha_c4_direct": "direct", "aha_c4_search": "search, 7 min",  # Countdown-4, beside SEEDS
           "aha_c4_search_long": "search, 10 min", "aha_c4_search_all": "whole search, 10 min"}  # then 8.1
N_EXAMPLES = 2 if AHA_QUICK else 3  # before/after completions printed in section 4
MAX_CHARS = 700  # a printed completion is cut after this many characters
SMOOTH = 5  # moving-average window (steps) for the per-step curves of sampled completions
ALPHA = 0.05  # significance level of the paired tests

# %%
import json
import math
import re
import textwrap

import matplotlib.pyplot as plt
import numpy as np

from aha_utils.analysis import (aha_metrics, find_runs, has_reflection, load_run, mcnemar,
                                paired_correct, search_profile, wilson_interval)
from aha_utils.steps import reasoning_text, scan

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11})

# %% [markdown]
# ## 1. What an aha is, and how we measure it
#
# Counting "wait" or "let me check" is a proxy that a ritual can fake: a model can learn to write
# the words, or a fixed number of failed attempts, without them changing what it does next. So the
# analysis reads the arithmetic. `analysis.search_profile(completion, target)` finds:
# - a **failed check**: an equation that is *true* ("65 - 35 = 30"), whose value is not the target,
#   followed by words that compare it with the target and find it different ("not 53", "too high");
#   a false equation or a "miss" claimed for a value that does hit the target is not a check;
# - **attempts**: the runs of equations between failed checks;
# - **self-correction**: a failed check followed by a *different* attempt (not the same steps again);
# - a **false step**: a written equation that does not hold (and is not corrected at once).
#
# Over $n$ held-out completions, with $s_i$ = "completion $i$ self-corrects" and $c_i$ = "it ends
# correct", the headline is the share that self-correct *and* end right, and the false-step rate
# is taken among the correct ones:
#
# $$\text{self\_correction} = \frac{1}{n}\sum_i s_i c_i, \qquad
# \text{false\_step\_rate} = \frac{\#\{i : c_i \text{ and a false step}\}}{\#\{i : c_i\}}.$$
#
# Beside them, the histogram of attempts: a searched problem takes as many attempts as it needs,
# so it spreads; a ritual (always two misses, then the answer) shows as a spike. Four hand-made
# texts, target 53 from 65, 35 and 47:

# %%
TOY = {
    "search": "65 - 35 = 30. 30 + 47 = 77, not 53. 77 is 24 too many. Back up. "
              "65 - 47 = 18. 18 + 35 = 53. That hits 53. </think> <answer> 65 - 47 + 35 </answer>",
    "ritual": "Wait, let me check. 65 - 35 = 30. 30 + 47 = 77, not 53. Back up. 65 - 35 = 30. "
              "30 + 47 = 77, not 53. </think> <answer> 65 - 35 + 47 </answer>",
    "fake check": "65 - 35 = 31, not 53. Back up. 65 - 47 = 18. 18 + 35 = 53. </think> "
                  "<answer> 65 - 47 + 35 </answer>",
    "guess": "65 + 35 is 53. </think> <answer> 65 - 47 + 35 </answer>",
}
print(f"{'text':12} {'reflection words':>16} {'attempts':>9} {'failed checks':>14} {'self-corrects':>14} {'false step':>11}")
for name, text in TOY.items():
    p = search_profile(text, target=53)
    print(f"{name:12} {str(has_reflection(text)):>16} {p['attempts']:>9} {p['failed_checks']:>14} "
          f"{str(p['self_corrects']):>14} {str(p['false_step']):>11}")

# %% [markdown]
# The ritual has the reflection words and two failed checks, yet it does not self-correct: it
# writes the same attempt again. The fake check's "not 53" follows a false equation (65 - 35 is
# 30), so it is no check at all. The guess reaches a right answer through a false step: right
# answer, wrong working.
#
# ## 2. The hero figure: four arms, before and after RL
#
# Each run evaluated its model greedily on the same 1,024 held-out problems at GRPO step 0 (the
# SFT model: *before*) and every 20 steps, the last evaluation being *after*. Every number below is
# recomputed from the committed completions (`completions/eval_XXXXX.jsonl.gz`) and checked
# against the run's `summary.json`. The base model's accuracy, before any SFT, comes from the SFT
# folder's own evaluation. Each accuracy $\hat p = k/n$ carries a 95% Wilson interval, the $p$ that
# a score test does not reject, $|\hat p - p| \le z\sqrt{p(1-p)/n}$ with $z = 1.96$: unlike
# $\hat p \pm z\sqrt{\hat p(1-\hat p)/n}$ it stays honest at 0 of $n$ (`analysis.wilson_interval`).

# %%
runs = {name: load_run(RUNS_DIR / name) for name in ARMS}
sft = {name: load_run(RUNS_DIR / r["summary"]["config"]["init_from"]) for name, r in runs.items()}


def evals(run: dict) -> tuple[list[dict], list[dict]]:
    """The held-out greedy completions at the first (before) and the last (after) evaluation."""
    ev = run["eval_completions"]
    return ev[min(ev)], ev[max(ev)]


def acc(rows: list[dict]) -> tuple[float, float, float]:
    k, n = sum(bool(r["correct"]) for r in rows), len(rows)
    return (k / n, *wilson_interval(k, n))


aha, acc_ = {}, {}
for name, run in runs.items():
    before, after = evals(run)
    aha[name] = (aha_metrics(before), aha_metrics(after))
    acc_[name] = (acc(before), acc(after))
    for side, rows in zip(("before", "after"), (before, after)):
        assert abs(acc(rows)[0] - run["summary"]["eval"][side]["accuracy"]) < 1e-9, (name, side)
base_eval = sft[AHA_ARM]["summary"]["eval"]["before"]
base = (base_eval["accuracy"], *wilson_interval(round(base_eval["accuracy"] * base_eval["n"]), base_eval["n"]))
hardware = {r["summary"]["hardware"] for r in runs.values()}
short_hw = lambda h: re.sub(r"^\d+ x |\s*\(gpu\)$", "", h)  # "1 x NVIDIA H100 80GB HBM3 (gpu)" -> "NVIDIA H100 80GB HBM3"
gpu = short_hw(hardware.pop()) if len(hardware) == 1 else "several GPUs"

print(f"{'arm':18} {'SFT data':14} {'GRPO reward':18} {'steps':>5} {'min':>5}  "
      f"{'held-out accuracy, before -> after (95% CI)':46} best on validation")
for name, run in runs.items():
    s, c = run["summary"], run["summary"]["config"]
    (a0, l0, h0), (a1, l1, h1) = acc_[name]
    frac = sft[name]["summary"]["config"].get("search_fraction")
    best = s["eval"]["best"]
    print(f"{ARMS[name]:18} {f'{frac:.0%} search':14} {c['reward_scheme']:18} {s['steps_done']:5d} "
          f"{s['wall_minutes']:5.1f}  {a0:5.1%} [{l0:.1%}, {h0:.1%}] -> {a1:5.1%} [{l1:.1%}, {h1:.1%}]   "
          f"step {best['step']} (test {best['accuracy']:.1%})")
print(f"\nbase model, no SFT: {base[0]:.1%} [{base[1]:.1%}, {base[2]:.1%}] (n={base_eval['n']}); "
      f"held-out n={len(evals(runs[AHA_ARM])[0])} per evaluation; trained on {gpu}")

# %%
fig, ax = plt.subplots(figsize=(9, 4.5))
x = np.arange(len(runs))
for j, (side, color) in enumerate((("before RL (after SFT)", "0.65"), ("after 10 min of GRPO", "C0"))):
    vals = np.array([acc_[name][j] for name in runs])
    ax.bar(x + (j - 0.5) * 0.38, vals[:, 0], 0.38, color=color, label=side,
           yerr=[vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]], capsize=4)
    for xi, v, hi in zip(x, vals[:, 0], vals[:, 2]):
        ax.text(xi + (j - 0.5) * 0.38, hi + 0.02, f"{v:.1%}", ha="center", fontsize=9)
ax.axhline(base[0], color="k", ls="--", lw=1.5, label=f"base model, no SFT ({base[0]:.0%})")
ax.set_xticks(x, [ARMS[n] for n in runs])
ax.set_ylim(0, 1)
ax.set_ylabel("held-out accuracy (greedy, 95% Wilson CI)")
ax.set_title(f"Gemma 3 270M on Countdown-3: four arms trained side by side on one {gpu}")
ax.legend(loc="upper left", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# The search-trained model is the most accurate straight out of SFT, and the 85%-direct mix
# starts a few points above the direct arm. The next sections ask *why* the mix arm moved: did RL make it search?
#
# ## 3. The self-correction curve over RL
#
# Every GRPO step logs `self_correction_any` (share of that step's 128 sampled completions, at
# temperature 1, that self-correct) in `metrics.jsonl`; every held-out evaluation logs
# `self_correction` (greedy, self-corrects *and* ends right) in `eval.jsonl`. The thin lines are
# per step, the thick ones a moving average over `SMOOTH` steps.

# %%
def smooth(v: np.ndarray, k: int = SMOOTH) -> np.ndarray:
    return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) >= k else v


fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, (name, run) in enumerate(runs.items()):
    steps = np.array([m["step"] for m in run["metrics"]])
    sc = np.array([m["self_correction_any"] for m in run["metrics"]])
    left.plot(steps, sc, color=f"C{i}", lw=0.6, alpha=0.4)
    left.plot(steps[SMOOTH - 1:] if len(sc) >= SMOOTH else steps, smooth(sc), color=f"C{i}", lw=2, label=ARMS[name])
    right.plot([e["step"] for e in run["evals"]], [e["self_correction"] for e in run["evals"]], "o-",
               color=f"C{i}", label=ARMS[name])
left.set(xlabel="GRPO step", ylabel="share of sampled completions", title="self-corrects (sampled, T = 1)")
right.set(xlabel="GRPO step", ylabel="share of held-out completions",
          title="self-corrects and ends right (greedy, held out)")
for a in (left, right):
    a.set_ylim(0, 1)
    a.legend(fontsize=9)
fig.suptitle(f"Self-correction during RL (one {gpu}, four runs side by side)")
plt.tight_layout()
plt.show()

m = {r["step"]: r for r in runs[AHA_ARM]["metrics"]}
first = min(m)
print(f"{ARMS[AHA_ARM]}: sampled completions that self-correct: {m[first]['self_correction_any']:.0%} at step {first}, "
      + ", ".join(f"{m[s]['self_correction_any']:.0%} at step {s}" for s in (10, 20, max(m)) if s in m))
for name in runs:
    b, a = aha[name]
    print(f"{ARMS[name]:18} held out: self-corrects and ends right {b['self_correction']:5.1%} -> {a['self_correction']:5.1%}; "
          f"self-corrects at all {b['self_correction_any']:5.1%} -> {a['self_correction_any']:5.1%}; "
          f"attempts (mean) {b['attempts_mean']:.1f} -> {a['attempts_mean']:.1f}")

# %% [markdown]
# In the mix arm the share of checking completions climbs within the first tens of steps, from
# the minority its SFT data showed: nothing in the reward names checking, but completions that
# check and try again end right more often than those that guess, so GRPO raises them. That is
# the aha, measured on the arithmetic. The direct arm never checks, before or after. The search
# arms checked from the start, and RL made them check less, not more. Is the mix arm's checking a
# search or a ritual? The attempts histogram:

# %%
hb, ha = (aha[AHA_ARM][j]["attempts_hist"] for j in (0, 1))
ks = np.arange(0, max([*hb, *ha]) + 1)
fig, ax = plt.subplots(figsize=(9, 3.5))
for j, (h, label, color) in enumerate(((hb, "before RL", "0.6"), (ha, "after RL", "C1"))):
    n = sum(h.values())
    ax.bar(ks + (j - 0.5) * 0.4, [h.get(k, 0) / n for k in ks], 0.4, color=color, label=label)
ax.set(xlabel="attempts in a completion", ylabel="share of held-out completions", xticks=ks,
       title=f"{ARMS[AHA_ARM]}: how many attempts a completion makes (n={sum(hb.values())} each)")
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# After RL the attempts spread over many values rather than a spike: the number of tries depends
# on the problem. The tail is the other side of it: some completions search until the 512-token
# budget ends, without an answer. A completion *loops* when it writes the same attempt twice,
# word for word (the search traces separate attempts with "Back up.").

# %%
def loops(completion: str) -> bool:
    parts = [p.strip() for p in reasoning_text(completion).split("Back up.") if p.strip()]
    return len(parts) != len(set(parts))


for name in runs:
    for side, rows in zip(("before", "after"), evals(runs[name])):
        no_tag = [r for r in rows if not r["format_soft"]]
        print(f"{ARMS[name]:18} {side:6}: answer tag present {1 - len(no_tag) / len(rows):6.1%}; "
              f"no answer {len(no_tag) / len(rows):5.1%}, of which loop {sum(map(loops, (r['completion'] for r in no_tag))) / max(len(no_tag), 1):5.1%}")

# %% [markdown]
# ## 4. The same problem, before and after
#
# We pick, by computing, held-out problems where the mix arm's SFT model answered wrong without
# any self-correction and the trained model self-corrects and ends right, preferring those whose
# written steps are all true.

# %%
before, after = evals(runs[AHA_ARM])
after_by = {json.dumps(r["problem"], sort_keys=True): r for r in after}
found = []
for b in before:
    a = after_by.get(json.dumps(b["problem"], sort_keys=True))
    t = b["problem"]["target"]
    if a and not b["correct"] and not search_profile(b["completion"], t)["self_corrects"] \
            and a["correct"] and search_profile(a["completion"], t)["self_corrects"]:
        found.append((search_profile(a["completion"], t)["false_step"], b, a))
found.sort(key=lambda f: f[0])  # all-true working first (stable: problem order otherwise)
print(f"{len(found)} of {len(before)} held-out problems turned from a wrong guess into a self-corrected right answer; "
      f"{sum(not f[0] for f in found)} of them with every written step true.\n")


def show(label: str, text: str) -> None:
    text = " ".join(text.split())
    text = text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " [...]"
    print(textwrap.fill(text, 100, initial_indent=f"{label:8}", subsequent_indent=" " * 8))


for false_step, b, a in found[:N_EXAMPLES]:
    q = b["problem"]
    print(f"numbers {q['nums']}, target {q['target']}")
    show("before:", b["completion"])
    show("after:", a["completion"])
    print()

# %% [markdown]
# Before, the model wrote one attempt and declared it the target, often with a false step to get
# there. After, it computes, sees the miss, says by how much, backs up and tries a different
# combination. Read the after texts closely: the comment on the miss ("26 is 28 too few") is not
# always right even when the equations are; `search_profile` checks the equations, not that prose.
#
# ## 5. Paired tests
#
# Every evaluation used the same 1,024 problems, so two evaluations are compared problem by
# problem. McNemar's exact test looks only at the discordant problems: $b$ = right only in B,
# $a$ = right only in A. If A and B were equally good, each discordant problem would fall either
# way with probability 1/2, so $\min(a, b)$ follows $\text{Binomial}(a + b, 1/2)$ and
#
# $$p = \min\Big(1,\; 2\sum_{i=0}^{\min(a,b)} \binom{a+b}{i} 2^{-(a+b)}\Big).$$

# %%
ROWS = {f"{ARMS[n]} {side}": rows for n in runs for side, rows in zip(("before", "after"), evals(runs[n]))}
PAIRS = [(f"{ARMS[n]} before", f"{ARMS[n]} after") for n in runs] + [
    ("direct before", "search before"), ("direct after", "mix15 after"),
    ("mix15 after", "search after"), ("search after", "search + faithful after")]
tests = {}
print(f"{'A':24} {'B':24} {'acc A':>6} {'acc B':>6} {'A only':>6} {'B only':>6} {'B - A':>7} {'p':>9}")
for A, B in PAIRS:
    a, b = paired_correct(ROWS[A], ROWS[B])
    t = tests[A, B] = mcnemar(a, b)
    verdict = "" if t["p_value"] < ALPHA else "  (no difference at 5%)"
    print(f"{A:24} {B:24} {np.mean(a):6.1%} {np.mean(b):6.1%} {t['a_only']:6d} {t['b_only']:6d} "
          f"{t['diff']:+7.1%} {t['p_value']:9.1e}{verdict}")

# %% [markdown]
# ## 6. Right answer, wrong working: the faithful reward
#
# An outcome reward checks only the final expression, so RL is free to make the written working
# false as long as the answer holds. The false-step rate (section 1) is measured among correct
# held-out answers. The faithful reward (`faithful_no_guess`) gives full credit only to a right
# answer whose written steps all hold, half to a right answer with a false step, nothing to a
# wrong one.

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for j, (side, color) in enumerate((("before RL", "0.65"), ("after RL", "C3"))):
    vals = []
    for name in runs:
        m_ = aha[name][j]
        k = round(m_["false_step_rate"] * m_["n_correct"])
        vals.append((m_["false_step_rate"], *wilson_interval(k, m_["n_correct"])))
    vals = np.array(vals)
    ax.bar(x + (j - 0.5) * 0.38, vals[:, 0], 0.38, color=color, label=side,
           yerr=[vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]], capsize=4)
    for xi, v, hi in zip(x, vals[:, 0], vals[:, 2]):
        ax.text(xi + (j - 0.5) * 0.38, hi + 0.02, f"{v:.1%}", ha="center", fontsize=9)
ax.set_xticks(x, [ARMS[n] for n in runs])
ax.set_ylim(0, 1)
ax.set_ylabel("correct answers with a false step")
ax.set_title(f"False-step rate among correct held-out answers (95% CI; trained on one {gpu})")
ax.legend(fontsize=9)
plt.tight_layout()
plt.show()
for name in runs:
    (b, a) = aha[name]
    print(f"{ARMS[name]:18} false-step rate {b['false_step_rate']:5.1%} (of {b['n_correct']} correct) -> "
          f"{a['false_step_rate']:5.1%} (of {a['n_correct']} correct)")
direct_after = evals(runs["aha_c3_direct"])[1]
wrong_work = next(r for r in direct_after if r["correct"] and search_profile(r["completion"], r["problem"]["target"])["false_step"])
print("\nThe direct arm after RL, an answer marked correct:")
show("after:", wrong_work["completion"])

# %% [markdown]
# Under the outcome reward the direct arm's correct answers came with false working far more often
# after RL than before: RL found that a right expression scores whatever the steps say. With the
# same search SFT, the faithful reward kept the working truer than the plain reward did.
#
# ## 7. Is it the seed? The headline arm three times
#
# One run is one draw: of the SFT data and its order, of GRPO's problems and samples. So the mix
# arm was run again with seeds 0, 1 and 2, all three side by side on one GPU (with the two
# Countdown-4 arms of section 8 and notebook 05 beside them), 7 minutes of GRPO each: about half
# the steps of the first run, which had 10 minutes and fewer neighbours. The seed also draws the
# test set (a fresh 1,024 held-out problems per seed, of the same split; seed 0's are the first
# run's), so each seed's before and after are paired, and the seeds are compared by their gains.

# %%
seed_runs = {name: load_run(RUNS_DIR / name) for name in SEEDS}
print(f"{'run':20} {'steps':>5} {'min':>4}  {'accuracy, before -> after (95% CI)':40} {'McNemar p':>9}  "
      f"{'self-corrects, ends right':>25}  {'sampled: self-corrects, step 1 -> last 10':>40}")
gains, sc_after = [], []
for name, run in {AHA_ARM: runs[AHA_ARM], **seed_runs}.items():
    before, after = evals(run)
    (a0, l0, h0), (a1, l1, h1) = acc(before), acc(after)
    t_ = mcnemar(*paired_correct(before, after))
    m0, m1 = aha_metrics(before), aha_metrics(after)
    ms = run["metrics"]
    late = np.mean([r["self_correction_any"] for r in ms[-10:]])
    print(f"{name:20} {run['summary']['steps_done']:5d} {run['summary']['wall_minutes']:4.1f}  "
          f"{a0:5.1%} [{l0:.1%}, {h0:.1%}] -> {a1:5.1%} [{l1:.1%}, {h1:.1%}] {t_['p_value']:9.0e}  "
          f"{m0['self_correction']:11.1%} -> {m1['self_correction']:5.1%}         "
          f"{ms[0]['self_correction_any']:5.0%} -> {late:4.0%}")
    if name in seed_runs:
        gains.append(a1 - a0)
        sc_after.append(m1["self_correction"])
seed_hw = {short_hw(r["summary"]["hardware"]) for r in seed_runs.values()}
print(f"\nover the three seeds ({', '.join(sorted(seed_hw))}): accuracy gain {np.mean(gains):+.1%} "
      f"(sd {np.std(gains, ddof=1):.1%}, each seed {', '.join(f'{g:+.1%}' for g in gains)}); "
      f"self-corrects and ends right after RL {np.mean(sc_after):.1%} (each {', '.join(f'{s:.1%}' for s in sc_after)})")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, (name, run) in enumerate({AHA_ARM: runs[AHA_ARM], **seed_runs}.items()):
    style = dict(color="k", ls="--", marker="o") if name == AHA_ARM else dict(color=f"C{i}", marker="o")
    label = f"{name} ({run['summary']['wall_minutes']:.0f} min)"
    left.plot([e["step"] for e in run["evals"]], [e["accuracy"] for e in run["evals"]], label=label, **style)
    right.plot([e["step"] for e in run["evals"]], [e["self_correction"] for e in run["evals"]], label=label, **style)
left.set(xlabel="GRPO step", ylabel="held-out accuracy (greedy)", title="accuracy", ylim=(0, 1))
right.set(xlabel="GRPO step", ylabel="share of held-out completions", ylim=(0, 0.5),
          title="self-corrects and ends right")
left.legend(fontsize=8)
fig.suptitle(f"The mix arm, three seeds side by side on one {', '.join(sorted(seed_hw))} (dashed: the first run)")
plt.tight_layout()
plt.show()

# %% [markdown]
# All three seeds gain on their own test problems (McNemar p from 7e-3 to 7e-24), by 5 to 19
# points; the first run, with twice the steps, gained 25. Step for step they track it (at step 40
# all four stand at 49-52%), so its larger gain is its extra steps. The seeds differ most *before* RL: the
# SFT phase is itself a draw, and seed 2's warm start came out checking on far more problems
# than the others (28% of its held-out completions self-correct at all, against 1-6%). It started
# highest and gained least; RL made it check more often (28% to 39% of completions) but not more
# often to a right end. Where SFT left checking rare (seeds 0 and 1, and the first run), RL
# raised "self-corrects and ends right" from 0-3% to 11-18%: the aha repeats, and how much of it
# RL has to discover depends on what the warm start happened to teach.
#
# ## 8. Countdown-4: four numbers
#
# With four numbers there are many more ways to combine them and the search is longer. Two arms
# ran beside the seeds, 7 minutes of GRPO each: SFT on direct solutions, then GRPO with
# TinyZero's reward at 512 tokens; and SFT on search traces (capped at 512 tokens), then GRPO
# with `no_guess` and 1,024 tokens, so that a search the model has started has room to end. Two
# more search arms followed, side by side on one GPU with 10 minutes of GRPO each, the same in
# everything but the traces their SFT read (section 8.1). All used seed 0 and so the same 1,024
# test problems, which makes every comparison between them paired too.

# %%
c4 = {name: load_run(RUNS_DIR / name) for name in C4_ARMS}
c4_rows = {}
print(f"{'arm':22} {'tokens':>6} {'steps':>5} {'min':>5}  {'accuracy, after SFT -> after GRPO (95% CI)':44} "
      f"{'p':>6}  {'answered':>13}  {'right among answered':>20}")
for name, run in c4.items():
    before, after = evals(run)   # after SFT, after GRPO
    c4_rows[name] = (before, after)
    (a0, l0, h0), (a1, l1, h1) = acc(before), acc(after)
    t_ = mcnemar(*paired_correct(before, after))
    c, s = run["summary"]["config"], run["summary"]
    answered = [np.mean([r["format_soft"] for r in rows]) for rows in (before, after)]
    right = [np.mean([r["correct"] for r in rows if r["format_soft"]]) for rows in (before, after)]
    print(f"{C4_ARMS[name]:22} {c['max_new_tokens']:6d} {s['steps_done']:5d} {s['wall_minutes']:5.1f}  "
          f"{a0:5.1%} [{l0:.1%}, {h0:.1%}] -> {a1:5.1%} [{l1:.1%}, {h1:.1%}]  {t_['p_value']:6.0e}  "
          f"{answered[0]:5.0%} -> {answered[1]:4.0%}  {right[0]:10.0%} -> {right[1]:4.0%}")
print()
for a, b, side in (("aha_c4_direct", "aha_c4_search", 1), ("aha_c4_search_long", "aha_c4_search_all", 0),
                   ("aha_c4_search_long", "aha_c4_search_all", 1), ("aha_c4_direct", "aha_c4_search_all", 1)):
    t_ = mcnemar(*paired_correct(c4_rows[a][side], c4_rows[b][side]))
    print(f"{('after SFT' if side == 0 else 'after GRPO') + ',':11} {C4_ARMS[b]} vs {C4_ARMS[a]}: {t_['diff']:+.1%} "
          f"({t_['b_only']} right only with the first, {t_['a_only']} only with the second), p = {t_['p_value']:.0e}")
for side, rows in zip(("after SFT", "after GRPO"), c4_rows["aha_c4_search"]):
    tries = [search_profile(r["completion"], r["problem"]["target"])["attempts"] for r in rows if not r["format_soft"]]
    no_tag = [r for r in rows if not r["format_soft"]]
    print(f"7-min search arm {side}: the {len(tries)} completions without an answer made {np.median(tries):.0f} "
          f"attempts (median); {sum(loops(r['completion']) for r in no_tag)} of them repeat one word for word")

# %% [markdown]
# Search traces again beat direct solutions by a wide margin, and GRPO does nothing for the
# direct arm. The first search arm is not yet the Countdown-3 story. Its completions rarely end:
# with 1,024 tokens, after SFT, it reaches an answer on about half of the problems, and is right
# on under half of those. It does not loop: it keeps trying new combinations (a search that never
# answers has made 16-17 of them), because four numbers allow many more. Its 7 minutes of GRPO,
# beside five other runs, were only seven steps, and what they did is telling: under `no_guess` a
# wrong answer scores the same 0 as no answer, so RL first pruned the wrong answers (fewer
# answers, more of them right), and nothing in the reward asks a long search to end.
#
# ### 8.1 Whole searches or a jump to the hit
#
# Those traces show at most a few of the search's dead ends (a cap drawn from 1 to 4), so when
# the search needed more, the trace goes from the last miss shown straight to the hit: on a third
# of Countdown-4 problems the right combination comes out of nowhere (below, "94 - 89 = 5" right
# after the first miss). A model cannot learn to
# *find* such a hit, only to guess it. `write_search(..., dead_ends="all")` writes every dead end
# the search made instead (the same search, dropped from the end only to fit a 1,024-token cap,
# which 2% of traces need). Here is one problem both ways:

# %%
from aha_utils.data.countdown import make_problems
from aha_utils.data.search_traces import write_search

problems_demo = make_problems(200, num_numbers=4, seed=1)
i_demo = next(i for i, q in enumerate(problems_demo)   # a short example where "drawn" jumps
              if (d := write_search(q, seed=i)).dropped >= 2 and d.failed <= 1
              and write_search(q, seed=i, dead_ends="all", max_tokens=1024).failed <= 4)
for style in ("drawn", "all"):
    t = write_search(problems_demo[i_demo], seed=i_demo, dead_ends=style, max_tokens=1024)
    print(f'dead_ends="{style}": {t.failed} dead ends written, {t.dropped} left out')
    show("", t.reasoning)

# %% [markdown]
# The two arms of this comparison differ only there: `aha_c4_search_long` reads the first kind
# (capped at 512 tokens, as before), `aha_c4_search_all` the second (capped at 1,024); both then
# get 10 minutes of GRPO with `no_guess` and 1,024 tokens. Every 25 steps the test set was
# evaluated; the figure splits accuracy into the share of problems answered and the share of
# answers that are right.

# %%
C4_SEARCH = ["aha_c4_search", "aha_c4_search_long", "aha_c4_search_all"]
c4_hw = sorted({short_hw(c4[n]["summary"]["hardware"]) for n in C4_SEARCH})
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for i, name in enumerate(C4_SEARCH):
    ev = c4[name]["eval_completions"]
    steps = sorted(ev)
    answered = [np.mean([r["format_soft"] for r in ev[s]]) for s in steps]
    right = [np.mean([r["correct"] for r in ev[s] if r["format_soft"]]) for s in steps]
    accuracy = [np.mean([r["correct"] for r in ev[s]]) for s in steps]
    for ax, y in zip(axes, (accuracy, answered, right)):
        ax.plot(steps, y, marker="o", color=f"C{i}", label=C4_ARMS[name])
for ax, title in zip(axes, ("held-out accuracy", "answered (an answer tag within 1,024 tokens)",
                            "right, among the answered")):
    ax.set(xlabel="GRPO step", title=title, ylim=(0, 1))
axes[0].axhline(0.30, color="0.6", ls=":", lw=1)
axes[0].legend(fontsize=8)
fig.suptitle(f"Countdown-4, search arms (held-out greedy, n = 1,024; {', '.join(c4_hw)})")
plt.tight_layout()
plt.show()

# %%
for name in ("aha_c4_search_long", "aha_c4_search_all"):
    ev = c4[name]["eval_completions"]
    counts = [int(sum(r["format_soft"] for r in ev[s])) for s in sorted(ev)]
    print(f"{C4_ARMS[name]:22} answered at each evaluation: {' -> '.join(map(str, counts))} of {len(ev[0])}; "
          f"best on validation: step {c4[name]['summary']['eval']['best']['step']} of {c4[name]['summary']['steps_done']}")
right_all = [r for r in c4_rows["aha_c4_search_all"][1] if r["correct"]]


def false_in_last_attempt(r: dict) -> bool:
    """A false equation (not corrected at once) after the last back-up: in the attempt that answers."""
    text = reasoning_text(r["completion"])
    cut = max(text.rfind(w) for w in ("Back up", "Try another pair", "Start over"))
    return any(not e.holds and not e.corrected and e.start > cut for e in scan(text)[0])


m_all = aha_metrics(c4_rows["aha_c4_search_all"][1])
print(f"whole searches after GRPO: false-step rate {m_all['false_step_rate']:.0%} among right answers, but only "
      f"{sum(map(false_in_last_attempt, right_all))} of {len(right_all)} have a false step in the attempt that answers")

# %% [markdown]
# After SFT alone the two kinds of trace are as good as each other (the paired test above finds
# no difference). Under RL they part. Both arms first do what the 7-minute arm did: within 25
# steps they stop giving about 40% of their answers, the wrong ones mostly, and the share of right
# answers among the rest jumps. Then the whole-search arm starts answering more often again, and
# is right on more of what it answers (over 90% at the end); the other arm's answers recover less,
# it is right on fewer of them, and its accuracy rises by 3 points. After GRPO the whole-search arm leads by about 6 points on the same
# problems, and at 31% it passes the 30% this course set for Countdown-4, with its best
# checkpoint on validation being its last (one seed; the interval still reaches below 30%).
#
# Our reading: when every hit in the traces follows from the search written before it, the
# model's right answers come from its own search, so RL can reinforce the search; when a third of
# the hits come out of nowhere, a right answer is as often a lucky jump, and there is less to
# reinforce. Its false steps sit in the dead ends, not in the attempt that gives the answer. The
# bottleneck is now finishing: two thirds of the problems still get no answer within 1,024
# tokens.
#
# ## 9. What did not work
#
# Computed, not recalled:

# %%
s0, s1 = (acc_["aha_c3_search"][j][0] for j in (0, 1))
t = tests["search before", "search after"]
best_step = runs["aha_c3_search"]["summary"]["eval"]["best"]["step"]
print(f"- RL on the all-search SFT: {s0:.1%} -> {s1:.1%} (McNemar p = {t['p_value']:.0e}); "
      f"the best checkpoint on validation is step {best_step}" + (" (the SFT model itself)." if best_step == 0 else "."))
mb, ma = evals(runs[AHA_ARM])
no_tag = [r for r in ma if not r["format_soft"]]
print(f"- {ARMS[AHA_ARM]} after RL: {len(no_tag) / len(ma):.1%} of held-out completions end without an answer "
      f"(before: {sum(not r['format_soft'] for r in mb) / len(mb):.1%}); {sum(loops(r['completion']) for r in no_tag)} "
      f"of those {len(no_tag)} repeat an attempt word for word.")
print(f"- seeds: the four arms of sections 2-6 ran once each; the mix arm again in three seeds "
      f"(section 7), with gains of {', '.join(f'{g:+.1%}' for g in gains)} after 7 minutes of GRPO.")
print(f"- hardware: the {len(runs)} arms of sections 2-6 ran at the same time on one {gpu}, "
      f"{min(r['summary']['wall_minutes'] for r in runs.values()):.1f}-{max(r['summary']['wall_minutes'] for r in runs.values()):.1f} "
      f"min of GRPO each, so each got {min(r['summary']['steps_done'] for r in runs.values())}-"
      f"{max(r['summary']['steps_done'] for r in runs.values())} steps; sections 7-8's five runs shared one too, "
      f"and section 8.1's two another.")
sft4 = {n: load_run(RUNS_DIR / n)["summary"]["eval"]["after"] for n in ("sft_c4_direct", "sft_c4_search")}
print("- Countdown-4 after SFT only (512 tokens, n = 1,024): " + "; ".join(
    f"{n} {e['accuracy']:.1%} (answer tag on {e['format_rate']:.0%})" for n, e in sft4.items()))
for name in ("aha_c4_search", "aha_c4_search_long"):
    rows = c4_rows[name][1]
    print(f"- Countdown-4, {C4_ARMS[name]} (up to 4 dead ends shown) after GRPO: {acc(rows)[0]:.1%}, short of 30%; "
          f"it answers on {np.mean([r['format_soft'] for r in rows]):.0%} of the problems within "
          f"{c4[name]['summary']['config']['max_new_tokens']} tokens ({c4[name]['summary']['steps_done']} GRPO steps).")
rows = c4_rows["aha_c4_search_all"][1]
print(f"- Countdown-4, {C4_ARMS['aha_c4_search_all']}: {acc(rows)[0]:.1%} in one seed, but "
      f"{1 - np.mean([r['format_soft'] for r in rows]):.0%} of the problems still get no answer within 1,024 tokens; "
      f"no reward here asks a long search to end.")

# %% [markdown]
# ## 10. Appendix: the earlier runs
#
# Before the search traces, fourteen GRPO runs tried the zero arm (RL from the base model, plain or
# few-shot prompt), direct warm starts at 256 new tokens, and GSM8K. One table and one figure;
# "change" is McNemar's paired test between the first and the last evaluation (same 512 problems).

# %%
earlier = [load_run(p) for p in find_runs(RUNS_DIR)]
earlier = [r for r in earlier if r["name"] not in ARMS and r["summary"] and r["summary"].get("phase") != "sft"
           and r["summary"]["config"].get("max_new_tokens") < 512]
earlier.sort(key=lambda r: (r["summary"]["task"], r["summary"]["config"].get("num_numbers", 0), r["name"]))


def task_of(r: dict) -> str:
    c = r["summary"]["config"]
    return f"countdown-{c['num_numbers']}" if c["task"] == "countdown" else c["task"]


hw = {r["summary"]["hardware"] for r in earlier}
print(f"{len(earlier)} earlier runs, trained on {', '.join(sorted(map(short_hw, hw)))}; last columns: share of the last evaluation's\n"
      f"completions that self-correct at all, and the false-step rate among correct ones (Countdown only)\n\n"
      f"{'run':30} {'task':12} {'start':16} {'lr':>6} {'steps':>5}  {'accuracy before -> after (95% CI, n)':44} "
      f"{'change':17} {'self-corr.':>10} {'false-step':>10}")
table = []
for r in earlier:
    s, c = r["summary"], r["summary"]["config"]
    (e0, e1) = s["eval"]["before"], s["eval"]["after"]
    i0, i1 = (wilson_interval(round(e["accuracy"] * e["n"]), e["n"]) for e in (e0, e1))
    t_ = mcnemar(*paired_correct(r["eval_completions"][0], r["eval_completions"][max(r["eval_completions"])]))
    change = ("no change" if t_["p_value"] >= ALPHA else "rose" if t_["diff"] > 0 else "fell") + f" p={t_['p_value']:.0e}"
    start = "SFT warm start" if c.get("init_from") else f"zero, {c['template']}"
    table.append((r["name"], task_of(r), e0["accuracy"], e1["accuracy"], i0, i1))
    last = r["eval_completions"][max(r["eval_completions"])] if r["eval_completions"] else []
    m_ = aha_metrics(last) if last and c["task"] == "countdown" else None
    fs = m_ and m_["false_step_rate"]
    extra = (f"{m_['self_correction_any']:10.1%} " if m_ else f"{'-':>10} ") + (f"{fs:10.1%}" if fs is not None else f"{'-':>10}")
    print(f"{r['name']:30} {task_of(r):12} {start:16} {c['learning_rate']:6.0e} {r['metrics'][-1]['step']:5d}  "
          f"{e0['accuracy']:5.1%} [{i0[0]:.1%}, {i0[1]:.1%}] -> {e1['accuracy']:5.1%} [{i1[0]:.1%}, {i1[1]:.1%}] n={e1['n']:<4} "
          f"{change:17} {extra}")

# %%
fig, ax = plt.subplots(figsize=(9, 0.32 * len(table) + 1.2))
for y, (name, task, a0, a1, i0, i1) in enumerate(table):
    ax.plot([a0, a1], [y, y], color="0.7", zorder=1)
    ax.errorbar(a0, y, xerr=[[a0 - i0[0]], [i0[1] - a0]], fmt="o", color="0.5", capsize=2)
    ax.errorbar(a1, y, xerr=[[a1 - i1[0]], [i1[1] - a1]], fmt="o", color="C0", capsize=2)
ax.set_yticks(range(len(table)), [t[0] for t in table], fontsize=9)
ax.invert_yaxis()
ax.set_xlabel("held-out accuracy (grey: before GRPO, blue: after; 95% CI)")
ax.set_title(f"The earlier runs (256 new tokens; {', '.join(sorted(map(short_hw, hw)))})")
plt.tight_layout()
plt.show()

# %% [markdown]
# What they showed: from the base model, GRPO learns the answer format in a few steps and then
# guesses (nearly nothing right, so nothing to reinforce); a direct warm start raises Countdown-3
# but with false working and no checking; on Countdown-4 and GSM8K no GRPO run raised held-out
# accuracy (the table says which fell). That is why the four arms above give the model a search
# to amplify.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1: a paired test of your choice
# Pick two evaluations from `ROWS` (for example `"direct after"` and `"search + faithful after"`),
# pair them with `paired_correct`, and compute McNemar's p-value yourself from the discordant counts
# with `math.comb`. Check it equals `mcnemar(...)["p_value"]`, and say whether the difference is
# significant at 5%.

# %% [markdown]
# #### Solution 1

# %% jupyter={"source_hidden": true}
# Solution
a, b = paired_correct(ROWS["direct after"], ROWS["search + faithful after"])
a_only = sum(x and not y for x, y in zip(a, b))
b_only = sum(y and not x for x, y in zip(a, b))
nd, k = a_only + b_only, min(a_only, b_only)
p = min(1.0, 2 * sum(math.comb(nd, i) for i in range(k + 1)) / 2**nd)
assert math.isclose(p, mcnemar(a, b)["p_value"], rel_tol=1e-9, abs_tol=1e-300)
print(f"discordant: A only {a_only}, B only {b_only}; p = {p:.2e}: "
      f"{'significant' if p < ALPHA else 'not significant'} at 5%")

# %% [markdown]
# ### Exercise 2: find a ritual
# A ritual writes failed checks that do not change the attempt. Among the mix arm's held-out
# completions after RL, find those with at least one failed check that do *not* self-correct;
# print how many there are and the first one (cut to 400 characters).

# %% [markdown]
# #### Solution 2

# %% jupyter={"source_hidden": true}
# Solution
rituals = [r for r in evals(runs[AHA_ARM])[1]
           if (p := search_profile(r["completion"], r["problem"]["target"]))["failed_checks"] >= 1
           and not p["self_corrects"]]
print(f"{len(rituals)} of {len(evals(runs[AHA_ARM])[1])} completions check, miss and write the same attempt again")
if rituals:
    show("ritual:", rituals[0]["completion"][:400])

# %% [markdown]
# ### Exercise 3: the false-step rate by hand
# Take the first five *correct* held-out completions of the direct arm after RL. For each, list the
# equations of its reasoning with `scan(reasoning_text(completion))[0]` (each has `.left`,
# `.right`, `.holds`, `.corrected`), decide whether it has a false step, and compute the share.
# Check it against `aha_metrics(five)["false_step_rate"]`.

# %% [markdown]
# #### Solution 3

# %% jupyter={"source_hidden": true}
# Solution
five = [r for r in evals(runs["aha_c3_direct"])[1] if r["correct"]][:5]
flags = []
for r in five:
    eqs = scan(reasoning_text(r["completion"]))[0]
    flags.append(any(not e.holds and not e.corrected for e in eqs))
    print(" | ".join(f"{e.left} = {e.right} {'ok' if e.holds else 'FALSE'}" for e in eqs))
print(f"false-step rate by hand: {sum(flags)}/5 = {np.mean(flags):.0%}; aha_metrics: {aha_metrics(five)['false_step_rate']:.0%}")
assert np.mean(flags) == aha_metrics(five)["false_step_rate"]

# %% [markdown]
# ## Key takeaways
#
# - Measure the aha on what is written, not on words: a check is a true value compared with the
#   target and found wrong, and it counts only when a *different* attempt follows. Rituals and
#   fake checks then fall out by construction, and the attempts histogram shows which is which.
# - RL amplifies what SFT makes possible. With no search in the warm start there is nothing to
#   amplify; with a minority of search traces, RL can discover that checking pays.
# - An outcome reward judges outcomes: the working behind a right answer can get worse under RL,
#   and a reward that reads the steps can hold it in place.
# - Compare arms on the same problems with a paired test, keep the best checkpoint on validation,
#   not on test, run the headline again with other seeds, and say what did not work.
# - A harder task moves the bottleneck: on Countdown-4 the search-trained model is right on most
#   problems it finishes, and finishes under half of them.
# - What the traces hide matters to RL more than to SFT: traces that show the whole search, so that
#   no hit comes out of nowhere, were no better after SFT but about 6 points better after GRPO.
#
# The numbers behind these, from the files:

# %%
for name in runs:
    (a0, *_), (a1, *_) = acc_[name]
    b, a = aha[name]
    t = tests[f"{ARMS[name]} before", f"{ARMS[name]} after"]
    moved = "no change at 5%" if t["p_value"] >= ALPHA else ("rose" if a1 > a0 else "fell")
    print(f"- {ARMS[name]}: accuracy {a0:.1%} -> {a1:.1%} ({moved}, p = {t['p_value']:.0e}); self-corrects and ends right "
          f"{b['self_correction']:.1%} -> {a['self_correction']:.1%}; false-step rate {b['false_step_rate']:.1%} -> {a['false_step_rate']:.1%}")
ev = runs[AHA_ARM]["metrics"]
print(f"- the aha ({ARMS[AHA_ARM]}): sampled completions that self-correct {ev[0]['self_correction_any']:.0%} at step "
      f"{ev[0]['step']} -> {np.mean([e['self_correction_any'] for e in ev[-10:]]):.0%} over the last 10 steps")
print(f"- the mix arm in three seeds: accuracy gain {np.mean(gains):+.1%} (sd {np.std(gains, ddof=1):.1%}); self-corrects "
      f"and ends right after RL {np.mean(sc_after):.1%} on average")
t_ = mcnemar(*paired_correct(c4_rows["aha_c4_search_long"][1], c4_rows["aha_c4_search_all"][1]))
t0 = mcnemar(*paired_correct(c4_rows["aha_c4_search_long"][0], c4_rows["aha_c4_search_all"][0]))
print(f"- Countdown-4, whole searches vs up to 4 dead ends: after SFT {t0['diff']:+.1%} (p = {t0['p_value']:.2f}), after GRPO "
      f"{t_['diff']:+.1%} (p = {t_['p_value']:.0e}); whole searches end at {acc(c4_rows['aha_c4_search_all'][1])[0]:.1%}")
