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
# # 01 · Data: tasks you can check, and how to ask
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/01_data.ipynb)
# [![Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/01_data.ipynb)
#
# **Hardware:** a CPU is enough (no accelerator needed). The outputs below come from a shared
# 2-core CPU, where the whole notebook runs in a few minutes.
#
# DeepSeek-R1-Zero learned to reason from one signal: whether its final answer was right. That
# only works on tasks whose answers a program can check exactly. This notebook builds the two
# tasks of the course and the prompts that pose them:
#
# 1. **Countdown** (TinyZero's task): reach a target from a few numbers with `+ - * /`. Generated
#    locally, every problem provably solvable, no download.
# 2. **GSM8K**: grade-school word problems whose answer is one number.
# 3. **Prompts**: the R1-Zero template for base models, Gemma's chat turn for `-it` models, and
#    a few-shot variant, with their lengths in real Gemma tokens.

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

SEED = 0  # problems are a pure function of the seed: rerunning gives the same data
N_PROBLEMS = 200 if AHA_QUICK else 2000  # per size: enough for smooth histograms
N_TEST = 100 if AHA_QUICK else 512  # a held-out set the size of a quick evaluation
NUMBER_RANGE = (1, 99)  # TinyZero's numbers are one or two digits
TARGET_RANGE = (10, 100)  # below 10 most targets are a trivial difference
N_TOKEN_SAMPLES = 100 if AHA_QUICK else 1319  # prompts per template for length statistics
LOAD_FROM_HUB = False  # True when online: TinyZero's own Countdown set and GSM8K from the Hub
# Exercises: random number draws per count of numbers (5 numbers take ~0.1 s a draw to solve)
EXERCISE_DRAWS = {3: 500, 4: 100, 5: 20} if AHA_QUICK else {3: 2000, 4: 400, 5: 100}
HARDNESS_DRAWS = 1000 if AHA_QUICK else 5000  # 3-number draws for the per-target hardness

# %% [markdown]
# ## 1. Countdown
#
# A problem is a list of numbers and a target, e.g. `[44, 19, 35]` and `98`. The answer is an
# expression that uses **each number exactly once** with `+ - * /` and parentheses:
# `44 + 19 + 35`. It is the ideal first RL task: an answer is checked exactly in microseconds,
# yet finding one needs search, the behaviour we hope to see emerge ("try this... no... try that").
#
# **Which problems are solvable?** Let $V(S)$ be the set of values an expression over the
# multiset $S$ can take. A single number makes only itself; otherwise the last operation splits
# $S$ into two non-empty parts $A \cup B$:
#
# $$V(S) = \bigcup_{A \cup B = S} \{\, a + b,\ a - b,\ b - a,\ a \times b,\ a / b,\ b / a \;:\; a \in V(A),\ b \in V(B) \,\}$$
#
# (divisions by zero left out). Computing $V$ for subsets from small to large is a short dynamic
# programme, exact with fractions, so `8 / (3 - 8 / 3) = 24` is found. The solver remembers how
# each value was made, so it returns an expression too.

# %%
from aha_utils.data.countdown import make_problems, problem_split, solvable_targets, solve

print(solve([44, 19, 35], 98))
print(solve([3, 3, 8, 8], 24))  # needs a fraction on the way
print(solve([1, 1, 1], 100))  # None: not every pair of numbers and target works

# %% [markdown]
# `make_problems` draws numbers uniformly from `NUMBER_RANGE`, asks the solver which targets in
# `TARGET_RANGE` they can reach, and picks one of those uniformly. Every problem is therefore
# solvable and carries a reference `solution` (handy for tests and an SFT warm-start).
#
# Train and test must never share a problem. Instead of cutting one list in two, a problem's
# split is a **hash of the problem itself** (sorted numbers and target): about 10% of all
# possible problems are test problems, whatever the seed or size, so no run can train on them.

# %%
problems = {k: make_problems(N_PROBLEMS, num_numbers=k, seed=SEED, number_range=NUMBER_RANGE,
                             target_range=TARGET_RANGE) for k in (3, 4)}
test_problems = {k: make_problems(N_TEST, num_numbers=k, seed=SEED, split="test", number_range=NUMBER_RANGE,
                                  target_range=TARGET_RANGE) for k in (3, 4)}
for p in problems[3][:3] + problems[4][:3]:
    print(p)

keys = lambda ps: {(tuple(sorted(p["nums"])), p["target"]) for p in ps}  # noqa: E731
for k in (3, 4):
    assert not keys(problems[k]) & keys(test_problems[k])
    assert all(problem_split(p["nums"], p["target"]) == "test" for p in test_problems[k])
print("train and test are disjoint")

# %% [markdown]
# How hard are random draws? Most random pairs of numbers and target are **not** solvable, which
# is why we ask the solver for the reachable targets rather than guessing and checking. More
# numbers reach more targets; the figure shows what the generated targets and numbers look like.

# %%
import random

import matplotlib.pyplot as plt

rng = random.Random(SEED)
for k in (3, 4):
    draws = [[rng.randint(*NUMBER_RANGE) for _ in range(k)] for _ in range(50 if AHA_QUICK else 300)]
    reachable = [len(solvable_targets(nums, *TARGET_RANGE)) for nums in draws]
    span = TARGET_RANGE[1] - TARGET_RANGE[0] + 1
    print(f"{k} numbers: a random target is reachable {sum(reachable) / len(draws) / span:.0%} of the time; "
          f"{sum(r == 0 for r in reachable) / len(draws):.0%} of number draws reach no target at all")

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for k in (3, 4):
    axes[0].hist([p["target"] for p in problems[k]], bins=30, alpha=0.6, label=f"{k} numbers")
    axes[1].hist([x for p in problems[k] for x in p["nums"]], bins=30, alpha=0.6, label=f"{k} numbers")
axes[0].set(title="targets", xlabel="target")
axes[1].set(title="numbers", xlabel="number")
axes[0].legend()
fig.tight_layout()

# %% [markdown]
# The knobs are `num_numbers` (3 or 4 in the course), `number_range` and `target_range`. With 3
# numbers the answer is usually `a + b - c`-like; with 4, solutions often need a division or
# parentheses, which is where longer reasoning pays off. For example, small numbers and a
# narrow target range:

# %%
for p in make_problems(3, num_numbers=4, number_range=(1, 9), target_range=(20, 30), seed=SEED):
    print(p)

# %% [markdown]
# Readers who are online can also use TinyZero's own data set, `Jiayi-Pan/Countdown-Tasks-3to4`
# (490k problems with 3 or 4 numbers), with TinyZero's split (the first 327,680 rows train, the
# next 1,024 test), so results compare with theirs.

# %%
from aha_utils.data.countdown import load_countdown_tasks

if LOAD_FROM_HUB:
    hub_test = load_countdown_tasks("test", num_numbers=3)
    print(len(hub_test), hub_test[:3])
else:
    print("LOAD_FROM_HUB is False: using locally generated problems only")

# %% [markdown]
# ## 2. GSM8K
#
# 8.5k grade-school maths problems (7,473 train, 1,319 test). Each reference answer is a worked
# solution ending in `#### N`; the number `N` is the answer a reward compares with. The original
# release (MIT-licensed, 1.6 MB gzipped) ships with the course, so `load_gsm8k` works offline;
# `source="hub"` reads the same rows from the Hugging Face Hub instead. It returns the question,
# `N` with thousands separators removed, and the worked solution.

# %%
from aha_utils.data.gsm8k import load_gsm8k

gsm8k_source = "hub" if LOAD_FROM_HUB else "bundled"  # bundled: the copy in aha_utils/data/
gsm8k = {split: load_gsm8k(split, source=gsm8k_source) for split in ("train", "test")}
print({split: len(rows) for split, rows in gsm8k.items()}, "from the", gsm8k_source, "copy")
example = gsm8k["test"][0]
print(example["question"], "\n---\n", example["solution"], "\n---\nanswer:", example["answer"])

# %%
answers = [float(r["answer"]) for r in gsm8k["train"]]
print(f"answers: {sum(a == int(a) for a in answers) / len(answers):.1%} integers, "
      f"{sum(a < 0 for a in answers)} negative, median {sorted(answers)[len(answers) // 2]:g}, max {max(answers):g}")

# %% [markdown]
# ## 3. Prompts
#
# **Base models** (R1-Zero's setting) get TinyZero's template: a plain-text conversation whose
# last line opens the reasoning with `<think>`. The model continues from there, so its completion
# is `reasoning </think> <answer> ... </answer>`, the shape the reward checks (notebook 04).

# %%
from aha_utils.data.prompts import countdown_prompt, gsm8k_prompt, make_prompt, prompt_token_stats

print(countdown_prompt([44, 19, 35], 98))

# %% [markdown]
# **Instruction-tuned models** (`-it`) expect Gemma's chat turns. Gemma has no system role, so the
# format instruction goes at the top of the user turn. Tiny-R1's variant names the reasoning
# block `<reasoning>`.

# %%
print(gsm8k_prompt(example["question"], template="chat", reasoning_tag="reasoning"))

# %% [markdown]
# **Few-shot** prompts show a small base model two worked examples in the exact format first.
# They cost tokens on every sample, which the statistics below quantify.

# %%
print(countdown_prompt([44, 19, 35], 98, template="few_shot"))

# %% [markdown]
# ### Prompt lengths in Gemma tokens
#
# Prompt length sets the memory and time of every rollout, so we measure it with the real Gemma 3
# tokenizer (rebuilt from the offline GGUF file; BOS included, as the model sees it).

# %%
from aha_utils.tokenizer import gguf_tokenizer

tokenizer = gguf_tokenizer()
samples = {
    "countdown": (problems[3] + problems[4])[:N_TOKEN_SAMPLES],
    "gsm8k": gsm8k["test"][:N_TOKEN_SAMPLES],
}
stats = {}
print(f"{'task':10} {'template':9} {'n':>5} {'min':>5} {'mean':>7} {'p95':>5} {'max':>5}")
for task, rows in samples.items():
    for template in ("base", "chat", "few_shot"):
        s = prompt_token_stats([make_prompt(task, r, template=template) for r in rows], tokenizer)
        stats[task, template] = s
        print(f"{task:10} {template:9} {s['n']:5d} {s['min']:5d} {s['mean']:7.1f} {s['p95']:5d} {s['max']:5d}")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for template in ("base", "chat", "few_shot"):
    lengths = [len(tokenizer.encode(make_prompt("gsm8k", r, template=template))) for r in samples["gsm8k"]]
    ax.hist(lengths, bins=30, alpha=0.6, label=template)
ax.set(title="GSM8K prompt length", xlabel="Gemma tokens (with BOS)", ylabel="prompts")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Dataset sizes

# %%
print(f"Countdown generated here: {N_PROBLEMS} train and {N_TEST} test problems for each of 3 and 4 numbers "
      "(any number more on demand; ~10% of all problems are reserved for test)")
print(f"GSM8K: {len(gsm8k['train'])} train, {len(gsm8k['test'])} test")
print("Countdown-Tasks-3to4 (Hub): 327,680 train and 1,024 test rows in TinyZero's split")

# %% [markdown]
# ## Exercises
#
# Each exercise is a short task with a result you can check; a solution follows it (the cell is
# collapsed: try first, then expand it).
#
# ### Exercise 1: solvability with five numbers
# The figure in section 1 used 3 and 4 numbers. Draw random numbers from `NUMBER_RANGE` with 3, 4
# and 5 numbers (`EXERCISE_DRAWS[k]` draws each) and estimate, with `solvable_targets`, the share
# of (draw, target) pairs in `TARGET_RANGE` that have a solution. **Check:** the share grows with
# every added number; does a random target become more likely reachable than not with five?

# %% [markdown]
# ### Solution 1

# %% jupyter={"source_hidden": true}
# Solution
rng = random.Random(SEED + 1)
span = TARGET_RANGE[1] - TARGET_RANGE[0] + 1
solvable_share = {}
for k, n_draws in EXERCISE_DRAWS.items():
    draws = [[rng.randint(*NUMBER_RANGE) for _ in range(k)] for _ in range(n_draws)]
    solvable_share[k] = sum(len(solvable_targets(d, *TARGET_RANGE)) for d in draws) / (n_draws * span)
    print(f"{k} numbers ({n_draws} draws): {solvable_share[k]:.1%} of random targets are reachable")
assert solvable_share[3] < solvable_share[4] < solvable_share[5] and solvable_share[5] > 0.5

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar([str(k) for k in solvable_share], [100 * v for v in solvable_share.values()])
ax.set(title="Random Countdown problems that have a solution", xlabel="numbers in the problem",
       ylabel="% of (draw, target) pairs", ylim=(0, 100))
fig.tight_layout()

# %% [markdown]
# Each added number multiplies the expressions available (a subset split gives six operations
# per pair of values), so reachable targets grow fast: with five numbers most targets in 10-100
# can be made, and a problem stops being a search for *the* expression and becomes a choice among
# many. That is one reason the course keeps to 3 and 4 numbers.
#
# ### Exercise 2: which targets are hardest?
# For 3 numbers, count how many of `HARDNESS_DRAWS` random draws can reach each target in
# `TARGET_RANGE`. Print the five hardest and five easiest targets and plot the share against the
# target. **Check:** compare the mean share of the targets 10-30 with that of 80-100.

# %% [markdown]
# ### Solution 2

# %% jupyter={"source_hidden": true}
# Solution
from collections import Counter

rng = random.Random(SEED + 2)
reach_counts = Counter()
for _ in range(HARDNESS_DRAWS):
    reach_counts.update(solvable_targets([rng.randint(*NUMBER_RANGE) for _ in range(3)], *TARGET_RANGE).keys())
targets = list(range(TARGET_RANGE[0], TARGET_RANGE[1] + 1))
share = {t: reach_counts[t] / HARDNESS_DRAWS for t in targets}
by_share = sorted(targets, key=share.get)
print("hardest:", ", ".join(f"{t} ({share[t]:.1%})" for t in by_share[:5]))
print("easiest:", ", ".join(f"{t} ({share[t]:.1%})" for t in by_share[-5:]))
small = sum(share[t] for t in range(10, 31)) / 21
large = sum(share[t] for t in range(80, 101)) / 21
print(f"targets 10-30 are reached by {small:.1%} of draws, 80-100 by {large:.1%} ({small / large:.2f}x)")

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(targets, [100 * share[t] for t in targets], ".-")
ax.set(title=f"How many random 3-number draws reach each target ({HARDNESS_DRAWS} draws)",
       xlabel="target", ylabel="% of draws")
fig.tight_layout()

# %% [markdown]
# Small targets are easier: a difference of two numbers, or a sum and a difference, lands in
# 10-30 from many draws, while a large target needs the numbers to add up to it or a product to
# land near it. Since `make_problems` picks uniformly among a draw's *reachable* targets, this
# tilts the generated targets toward small values too (compare the target histogram in
# section 1).
#
# ### Exercise 3: a GSM8K answer canonicaliser
# A reward must compare a model's answer with the reference as numbers: `"$1,080"`, `"1080"`
# and `"1080 dollars"` are the same answer. Write `canonical(text)` that returns the single
# number in `text` as an exact `Fraction` (removing `$`, thousands commas and words around it),
# or `None` when there is no number or more than one. **Check:** it passes the test cases below,
# and every GSM8K train answer `a` gives `canonical(a) == Fraction(a)`.

# %% [markdown]
# ### Solution 3

# %% jupyter={"source_hidden": true}
# Solution
import re
from fractions import Fraction

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def canonical(text: str) -> Fraction | None:
    found = NUMBER.findall(text)
    if len(found) != 1:
        return None
    digits = found[0].replace("$", "").replace(",", "")
    return Fraction(digits)


cases = {"18": 18, "$18": 18, "1,080": 1080, "$1,080.00": 1080, "1080 dollars": 1080,
         "-3": -3, "0.5": Fraction(1, 2), "The answer is 42.": 42, "no number": None, "3 or 4": None}
for text, want in cases.items():
    got = canonical(text)
    assert got == want, (text, got, want)
print(f"{len(cases)} hand-written cases pass")
assert all(canonical(r["answer"]) == Fraction(r["answer"]) for r in gsm8k["train"])
print(f"all {len(gsm8k['train'])} GSM8K train answers round-trip")

# The reward in notebook 04 (aha_utils.rewards.gsm8k_correct) does this job, more strictly:
from aha_utils.rewards import gsm8k_correct

for text in ("$1,080.00", "1080 dollars", "3 or 4"):
    print(f"{text!r:14} canonical={canonical(text)!s:5} gsm8k_correct(.., '1080')={gsm8k_correct(text, '1080')}")

# %% [markdown]
# ## Key takeaways
#
# - RL with verifiable rewards needs answers a program can check: Countdown (exact arithmetic)
#   and GSM8K (one number) are both checked exactly, no judge model.
# - Every Countdown problem here is solvable, proved by an exhaustive solver that also returns a
#   solution; random numbers and targets mostly are **not**, so guessing-and-checking would waste
#   most draws.
# - Train and test are split by a hash of the problem, not by position: disjoint by construction.
# - The base template ends in `<think>`: the model's completion starts mid-reasoning and must close
#   it and answer in `<answer>` tags. Few-shot examples teach the format but cost tokens on every
#   rollout: see the table above.
# - More numbers make many more targets reachable, and small targets are easier to reach than
#   large ones (exercises 1 and 2): the size of a problem and its target both set its difficulty.
# - A GSM8K answer is compared as a number, after removing `$`, thousands commas and words.
