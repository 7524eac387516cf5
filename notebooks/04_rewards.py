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
# # 04 · Rewards: the only teacher
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/04_rewards.ipynb)
# [![Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/04_rewards.ipynb)
#
# **Hardware:** a CPU is enough (no accelerator needed). Seconds on two cores.
#
# In R1-Zero-style RL nobody shows the model a good answer. It samples, a program scores each
# sample, and GRPO pushes up what scored above its group's average. So the reward function *is*
# the teacher: if it can be fooled, the model learns to fool it; if it crashes, training stops;
# if it runs the model's text as code, the model controls your machine. This notebook writes the
# reward out, then attacks it.

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

SEED = 0  # the generated problems and perturbations are a pure function of the seed
N_AGREEMENT = 300 if AHA_QUICK else 3000  # completions on which the cell's reward must equal the library's
TIMING_REPEATS = 20 if AHA_QUICK else 200  # calls per adversarial input; the worst one is reported

# %% [markdown]
# ## 1. The reward, written out
#
# The completion is what the model wrote **after** the prompt, which ended in `<think>`. A
# well-formed one reads `reasoning </think>\n<answer> 44 + 19 + 35 </answer>`. TinyZero's reward:
#
# $$r = \begin{cases} 1.0 & \text{the final answer is correct} \\ 0.1 & \text{there is a final answer, but it is wrong} \\ 0 & \text{there is no final answer} \end{cases}$$
#
# The small 0.1 matters at the start: a base model almost never solves a problem, so the only
# signal that separates good samples from bad is whether they are *well-formed*. Once the format
# is learned, only correctness separates samples.
#
# Everything hinges on two definitions:
#
# - **The final answer** is the content of the *last* `<answer>` tag, which must be closed by
#   `</answer>`, must not be followed by `</think>` (then it was a draft inside the reasoning),
#   and must not be empty. Text after `</answer>` is ignored (base models keep talking).
# - **Correct** (Countdown) means: the answer is an expression in `+ - * / ( )` over integers,
#   the integers used are exactly the given numbers (as a multiset), and its exact value equals
#   the target. We parse it ourselves with fractions, never `eval`: TinyZero's reward calls
#   Python's `eval` on model output.
#
# Here it is in a dozen lines. Only the arithmetic parser is imported (`aha_utils.arith.evaluate`:
# a tokenizer plus recursive descent, bounded in length, depth and digits).

# %%
from aha_utils.arith import ExpressionError, evaluate


def final_answer(completion: str) -> str | None:
    start = completion.rfind("<answer>")
    end = completion.find("</answer>", start) if start >= 0 else -1
    if end < 0 or "</think>" in completion[end:] or "</reasoning>" in completion[end:]:
        return None
    return completion[start + len("<answer>"):end].strip() or None


def my_countdown_reward(completion: str, nums: list[int], target: int) -> float:
    answer = final_answer(completion)
    if answer is None:
        return 0.0
    try:
        value, used = evaluate(answer)
    except ExpressionError:  # not arithmetic over integers: well-formed but wrong
        return 0.1
    return 1.0 if sorted(used) == sorted(nums) and value == target else 0.1


# %% [markdown]
# Toy calls. `evaluate` returns the exact value and the integers it read:

# %%
print(evaluate("(44 + 19) + 35"), evaluate("7 / 3 * 3"))
print(my_countdown_reward("63 + 35 = 98 </think>\n<answer> 44 + 19 + 35 </answer>", [44, 19, 35], 98))
print(my_countdown_reward("hmm </think>\n<answer> 98 </answer>", [44, 19, 35], 98))

# %% [markdown]
# ## 2. Trying to fool it
#
# A policy under RL pressure finds any gap. Each row below is a completion someone (or some
# model) might write for `nums = [44, 19, 35]`, `target = 98`.

# %%
from aha_utils.rewards import batch_rewards, countdown_reward, gsm8k_reward, reward_terms

NUMS, TARGET = [44, 19, 35], 98
THINK = "44 + 19 = 63, 63 + 35 = 98. "
attempts = {
    "correct": THINK + "</think>\n<answer> 44 + 19 + 35 </answer>",
    "correct, keeps talking after": THINK + "</think>\n<answer> (44 + 35) + 19 </answer>\nUser: thanks!",
    "wrong answer": "</think>\n<answer> 44 + 19 - 35 </answer>",
    "number used twice": "</think>\n<answer> 44 + 44 + 19 - 35 + 26 - 26 </answer>",
    "number left unused": "</think>\n<answer> 44 + 19 + 35 - 0 </answer>",
    "glued digits (4419)": "</think>\n<answer> 4419 / 35 - 28 </answer>",
    "target written alone": "</think>\n<answer> 98 </answer>",
    "equation with '= 98'": "</think>\n<answer> 44 + 19 + 35 = 98 </answer>",
    "unary minus": "</think>\n<answer> -(-44) + 19 + 35 </answer>",
    "__import__('os') injection": "</think>\n<answer> __import__('os').system('rm -rf ~') </answer>",
    "huge exponent 9**9**9": "</think>\n<answer> 9**9**9 </answer>",
    "10,000-digit number": "</think>\n<answer> " + "9" * 10_000 + " </answer>",
    "nested parentheses bomb": "</think>\n<answer> " + "(" * 5_000 + "44 + 19 + 35" + ")" * 5_000 + " </answer>",
    "division by zero": "</think>\n<answer> 44 + 19 + 35 + 1 / (35 - 35) </answer>",
    "answer only in the thinking": "<answer> 44 + 19 + 35 </answer> let me double-check... </think>",
    "no answer tag": THINK + "</think> 44 + 19 + 35",
    "unclosed answer tag": THINK + "</think>\n<answer> 44 + 19 + 35",
    "closed draft, unclosed final": "<answer> 44 + 19 + 35 </answer> no wait </think>\n<answer> 44 +",
    "empty answer": "</think>\n<answer> </answer>",
}
problem = {"nums": NUMS, "target": TARGET}
print(f"{'completion':32} {'tinyzero':>8} {'simplerl':>8} {'tiny_r1':>7}   soft strict correct")
for name, completion in attempts.items():
    scores = [countdown_reward(completion, NUMS, TARGET, scheme=s) for s in ("tinyzero", "simplerl", "tiny_r1")]
    t = reward_terms("countdown", completion, problem)
    assert scores[0] == my_countdown_reward(completion, NUMS, TARGET)
    print(f"{name:32} {scores[0]:8.1f} {scores[1]:8.1f} {scores[2]:7.3f}   "
          f"{t['format_soft']:4.0f} {t['format_strict']:6.0f} {t['correct']:7.0f}")

# %% [markdown]
# Reading the table:
#
# - Only real solutions score 1.0. Reused, unused or glued numbers and the bare target are
#   well-formed but wrong: 0.1, no more than any other wrong answer, so there is nothing to gain.
# - Code, exponents, giant numbers and nesting bombs are not in the grammar: rejected in
#   microseconds, before any arithmetic. Nothing is ever executed.
# - An answer that is not final (inside the reasoning, unclosed, empty) is no answer: 0.
# - `strict` wants exactly `reasoning </think> <answer> X </answer>` and nothing after. It is a
#   term some schemes add (Tiny-R1); TinyZero's reward uses only the soft rule.

# %% [markdown]
# ## 3. The cell's reward equals the library's
#
# The training loop uses `aha_utils.rewards.countdown_reward`. We check it agrees with the dozen
# lines above on many completions built from generated problems: their own solutions, and the
# same with a number changed, dropped, duplicated, or the tags damaged.

# %%
import random

from aha_utils.data.countdown import make_problems

rng = random.Random(SEED)


def perturb(problem: dict) -> str:
    answer = problem["solution"]
    kind = rng.randrange(6)
    if kind == 1:
        answer = answer.replace(str(problem["nums"][0]), str(problem["nums"][0] + 1), 1)
    elif kind == 2:
        answer = f"{answer} + {problem['nums'][-1]}"
    elif kind == 3:
        answer = answer.replace(" ", "")
    text = f"thinking... </think>\n<answer> {answer} </answer>"
    if kind == 4:
        text = text[: rng.randrange(len(text))]  # cut anywhere: unclosed tags, half numbers
    elif kind == 5:
        text = text.replace("</think>", "", 1) + " </think>"
    return text


generated = make_problems(N_AGREEMENT // 2, num_numbers=3, seed=SEED) + make_problems(N_AGREEMENT // 2, num_numbers=4, seed=SEED)
completions = [perturb(p) for p in generated]
library = batch_rewards("countdown", completions, generated)
mine = [my_countdown_reward(c, p["nums"], p["target"]) for c, p in zip(completions, generated)]
assert mine == library["reward"]
print(f"{len(mine)} completions agree; rewards seen:",
      {v: library["reward"].count(v) for v in sorted(set(library["reward"]))})

# %% [markdown]
# `batch_rewards` also returns each term per completion, the columns the training loop logs:

# %%
breakdown = batch_rewards("countdown", list(attempts.values())[:4], [problem])
for key, values in breakdown.items():
    print(f"{key:15}", values)

# %% [markdown]
# ## 4. GSM8K: one number
#
# The GSM8K reward has the same three levels. *Correct* means the final answer contains exactly
# one number, and it equals the reference: `$`, thousands separators, a `.00` and unit words
# are ignored, but a hedge with two numbers is not an answer.

# %%
rows = ["1000", "$1,000.00", "1,000", "1000 dollars", "The answer is 1000.", "1000 or 2000",
        "10000", "1e3", "one thousand", "999.99"]
for written in rows:
    completion = f"... </think>\n<answer> {written} </answer>"
    print(f"{written:22} {gsm8k_reward(completion, '1000'):.1f}")
print(f"{'(no answer tag)':22} {gsm8k_reward('the answer is 1000', '1000'):.1f}")

# %% [markdown]
# ## 5. Schemes
#
# The same terms, weighed differently (`scheme=` in every reward function):
#
# | scheme | correct | well-formed, wrong | no answer | extra terms |
# |---|---|---|---|---|
# | `tinyzero` (default) | 1.0 | 0.1 | 0.0 | |
# | `simplerl` | +1 | -0.5 | -1 | |
# | `tiny_r1` (willccbb) | +2.0 | | | +0.5 strict format, +0.5 soft format, +0.5 integer answer (GSM8K), tag count in [-0.5, 0.5] |
#
# GRPO standardises rewards within each group of samples, so only the *ordering and ratios*
# inside a group matter: TinyZero's 0.1 makes format a tenth of correctness, SimpleRL's
# -0.5 / -1 makes it half. For Countdown the integer-answer term is always 0, since an integer
# alone is exactly the "target written alone" hack.

# %% [markdown]
# ## 6. Fast on the worst inputs
#
# The reward runs on every sample of every step, on text we do not control. Each input is
# bounded before any work (200 characters and 16 nested parentheses per equation, 9 digits per
# number, no exponent operator), so even the worst inputs cost a fraction of a millisecond.

# %%
import statistics
import time

import matplotlib.pyplot as plt

worst = {name: attempts[name] for name in ("10,000-digit number", "nested parentheses bomb", "huge exponent 9**9**9")}
worst["10k characters, no tags"] = "x" * 10_000
worst["2,000 answer tags"] = "<answer>" * 2_000
worst["largest valid product"] = "</think><answer>" + "*".join(["999999999"] * 20) + "</answer>"
timings = {}
for name, completion in worst.items():
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        countdown_reward(completion, NUMS, TARGET)
        times.append(time.perf_counter() - start)
    # the median: single calls also catch the operating system's scheduling noise (a few ms here)
    timings[name] = statistics.median(times) * 1e3
    print(f"{name:28} median {timings[name]:.3f} ms")

fig, ax = plt.subplots(figsize=(6, 2.6))
ax.barh(list(timings), list(timings.values()))
ax.axvline(10, color="red", linestyle="--", label="10 ms budget")
ax.set(xscale="log", xlabel="median time per call (ms)", title="reward on adversarial inputs")
ax.legend()
fig.tight_layout()

# %% [markdown]
# ## Key takeaways
#
# - TinyZero's reward: 1.0 correct, 0.1 well-formed but wrong, 0 with no final answer. The 0.1
#   is the early signal that teaches the format; correctness is the real race.
# - "Well-formed" is defined precisely: the last `<answer>` tag, closed, not inside the reasoning,
#   not empty. Every hack we tried (reused or glued numbers, the bare target, code, giant inputs)
#   scores no more than an honest wrong answer.
# - Never `eval` model output: a 60-line parser with exact fractions is safer, exact and fast.
# - The library's reward equals the dozen lines written here, and property tests (`tests/`)
#   check that arbitrary strings never raise, stay under 10 ms, and score a value of the scheme.
