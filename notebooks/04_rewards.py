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
# **Hardware:** a CPU is enough (no accelerator needed). The outputs below come from a shared
# **2-core CPU**, in seconds.
#
# In R1-Zero-style RL nobody shows the model a good answer. It samples, a program scores each
# sample, and GRPO pushes up what scored above its group's average. So the reward function *is*
# the teacher: if it can be fooled, the model learns to fool it; if it crashes, training stops;
# if it runs the model's text as code, the model controls your machine. This notebook writes the
# reward out, attacks it, and then makes it read the working as well as the answer. Three
# exercises (with solutions) close section 6.

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
import matplotlib.pyplot as plt
import numpy as np

from aha_utils.rewards import batch_rewards, countdown_reward, gsm8k_reward, reward_terms
from aha_utils.steps import reasoning_text, written_equations

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
# alone is exactly the "target written alone" hack. Three more schemes, which also read the
# working, are the subject of the next section.

# %% [markdown]
# ## 6. Rewarding the working, and not rewarding a guess
#
# TinyZero's reward looks at the final answer only. Two things follow, and both showed up when
# Gemma 3 270M was trained with it (notebook 06):
#
# - **Right answer, wrong working** is paid in full. After a warm start and GRPO, the model
#   reached correct answers through false written arithmetic ("85 - 77 is -2"), and nothing in
#   the reward told it otherwise.
# - **A wrong guess beats an unfinished search.** A completion that writes any well-formed answer
#   gets 0.1; one that is still searching when it runs out of tokens gets 0. When no sample of a
#   group is right, GRPO pushes the guesses up and the searches down: the model learns to stop
#   thinking and guess, while harder problems (Countdown with four numbers) need the search.
#
# The library reads the working with `aha_utils.steps`: every equation the reasoning writes
# ("44 + 19 = 63", "63 + 35 is 98", chains like "2 + 3 = 5 = 5"), checked with exact fractions.
# The term `steps_true` is 1 when at least one equation is written, every one holds (a slip
# corrected at once, "44 + 19 = 62. No: 44 + 19 = 63.", is forgiven) and, for Countdown, one of
# them reaches the target. Three schemes use it:
#
# | scheme | correct, true steps | correct, other steps | well-formed, wrong | no answer |
# |---|---|---|---|---|
# | `tinyzero` | 1.0 | 1.0 | 0.1 | 0 |
# | `faithful` | 1.0 | 0.5 | 0.1 | 0 |
# | `no_guess` | 1.0 | 1.0 | 0 | 0 |
# | `faithful_no_guess` | 1.0 | 0.5 | 0 | 0 |
#
# A right answer with false working still beats a wrong one (0.5 > 0.1), so being right keeps
# its signal while the group baseline favours true working. The `no_guess` schemes give no
# format signal at all, so they belong after a warm start, once the model writes answers in
# the right format. Four completions for `nums = [44, 19, 35]`, `target = 98`:

# %%
EXAMPLES = {
    "right answer, true steps": "44 + 19 = 63. 63 + 35 = 98. </think>\n<answer> 44 + 19 + 35 </answer>",
    "right answer, false steps": "44 + 19 = 65. 65 + 35 = 98. </think>\n<answer> 44 + 19 + 35 </answer>",
    "wrong guess": "Maybe this works. </think>\n<answer> 44 + 35 - 19 </answer>",
    "unfinished search": ("44 + 35 = 79, too small. 44 * 19 = 836, too big. 35 - 19 = 16, "
                          "44 + 16 = 60. Try 44 - 19 = 25, 25 + 35"),   # out of tokens here
}
NEW_SCHEMES = ("tinyzero", "faithful", "no_guess", "faithful_no_guess")
scheme_table = {name: [countdown_reward(text, NUMS, TARGET, scheme=s) for s in NEW_SCHEMES]
                for name, text in EXAMPLES.items()}
print(f"{'completion':26} {'steps_true':>10} " + " ".join(f"{s:>17}" for s in NEW_SCHEMES))
for name, text in EXAMPLES.items():
    steps = reward_terms("countdown", text, problem)["steps_true"]
    print(f"{name:26} {steps:10.0f} " + " ".join(f"{r:17.1f}" for r in scheme_table[name]))
search = written_equations(reasoning_text(EXAMPLES["unfinished search"]))
print(f"the unfinished search writes {len(search)} equations, {sum(e.holds for e in search)} true, "
      f"{sum(e.right_value == TARGET for e in search)} reaching {TARGET}")

# %%
fig, ax = plt.subplots(figsize=(9, 4.2))
width = 0.2
for j, name in enumerate(EXAMPLES):
    bars = ax.bar(np.arange(len(NEW_SCHEMES)) + (j - 1.5) * width, scheme_table[name], width,
                  label=name)
    ax.bar_label(bars, fmt="%.1f", fontsize=9)
ax.set_xticks(np.arange(len(NEW_SCHEMES)), NEW_SCHEMES, fontsize=11)
ax.set(ylabel="reward", ylim=(0, 1.45),
       title="four completions under four schemes (nums 44 19 35, target 98)")
ax.legend(fontsize=10, ncol=2, loc="upper center")
fig.tight_layout()
plt.show()

# %% [markdown]
# Read across the rows: only `faithful` and `faithful_no_guess` tell the two right answers
# apart, and only `no_guess` and `faithful_no_guess` stop paying the guess more than the
# search. The search's true equations earn it nothing: without an answer, steps are not scored.

# %% [markdown]
# ### Exercise 1: a reward that also checks the written steps
# Write `my_steps_true(completion, target)`: take the reasoning (the text before `</think>`),
# find every equation of the form `a op b = c` with a regular expression (integers, one operator
# of `+ - * /`), evaluate each left side with `evaluate`, and return True when at least one
# equation is written, all of them hold, and one of them equals the target. Then write
# `my_faithful_reward` (1.0 correct with true steps, 0.5 correct otherwise, 0.1 well-formed but
# wrong, 0 without an answer). Check: on the four completions above it gives the `faithful`
# column of the table.

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
import re

EQUATION = re.compile(r"(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)")


def my_steps_true(completion: str, target: int) -> bool:
    reasoning = completion.split("</think>")[0]
    equations = EQUATION.findall(reasoning)
    values = []
    for a, op, b, c in equations:
        try:
            values.append((evaluate(f"{a} {op} {b}").value, int(c)))
        except ExpressionError:                        # e.g. a division by zero
            return False
    return bool(values) and all(v == c for v, c in values) and any(c == target for _, c in values)


def my_faithful_reward(completion: str, nums: list[int], target: int) -> float:
    base = my_countdown_reward(completion, nums, target)       # 1.0 / 0.1 / 0 from section 1
    if base == 1.0 and not my_steps_true(completion, target):
        return 0.5
    return base


for name, text in EXAMPLES.items():
    assert my_faithful_reward(text, NUMS, TARGET) == countdown_reward(text, NUMS, TARGET, scheme="faithful")
print("the four completions: same as the library's `faithful`")

# %% [markdown]
# #### Solution, continued: where the two readers differ
# The library's reader handles more ways of writing a step:

# %% jupyter={"source_hidden": true}
# Solution (continued)
ANSWER = " </think>\n<answer> 44 + 19 + 35 </answer>"
harder = {
    "steps with 'is'": "44 + 19 is 63. 63 + 35 is 98." + ANSWER,
    "a slip caught": "44 + 19 = 62. No: 44 + 19 = 63. 63 + 35 = 98." + ANSWER,
    "a run-on chain": "44 + 19 = 63 + 35 = 98" + ANSWER,
    "three numbers at once": "44 + 19 + 35 = 98" + ANSWER,
}
for name, text in harder.items():
    print(f"{name:22} mine {my_faithful_reward(text, NUMS, TARGET):.1f}   library "
          f"{countdown_reward(text, NUMS, TARGET, scheme='faithful'):.1f}   {text[:45]!r}")

# %% [markdown]
# The regular expression finds no step written with "is" (0.5 for a faithful answer), punishes
# a slip that was corrected, and in "44 + 19 + 35 = 98" reads only "19 + 35 = 98", which is
# false. On the run-on chain both give 0.5, for different reasons: the regular expression reads
# only its first link, 44 + 19 = 63, which does not reach 98; the library checks every link,
# and 63 is not 98.

# %% [markdown]
# ### Exercise 2: hack the steps check, then patch it
# Suppose `my_steps_true` did not ask for an equation that reaches the target. Find a completion
# that gets the full 1.0 from that weaker `faithful` reward while writing no working for its
# answer at all. Then confirm that the target condition (yours and the library's) gives it
# only the 0.5 of a right answer without working.

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
def weak_steps_true(completion: str) -> bool:                  # no target condition
    reasoning = completion.split("</think>")[0]
    found = EQUATION.findall(reasoning)
    return bool(found) and all(evaluate(f"{a} {op} {b}").value == int(c) for a, op, b, c in found)


hack = "1 + 1 = 2. I'll guess." + ANSWER       # a true step that computes nothing useful
weak = 1.0 if my_countdown_reward(hack, NUMS, TARGET) == 1.0 and weak_steps_true(hack) else None
patched = my_faithful_reward(hack, NUMS, TARGET)
library = countdown_reward(hack, NUMS, TARGET, scheme="faithful")
print(f"weak check {weak}, patched {patched}, library {library}")
assert (weak, patched, library) == (1.0, 0.5, 0.5)

# %% [markdown]
# ### Exercise 3: which way does GRPO push?
# GRPO's advantage of sample $i$ in a group is $(r_i - \bar r) / \mathrm{std}(r)$. Take a group
# of four samples for one problem, none right: two `wrong guess`es and two `unfinished search`es
# (the completions of the table). Compute the advantages under `tinyzero` and under `no_guess`
# (by hand, then with `aha_utils.grpo.group_advantages`). Which samples does each scheme make
# more likely?

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
from aha_utils.grpo import group_advantages

group = [EXAMPLES["wrong guess"]] * 2 + [EXAMPLES["unfinished search"]] * 2
for scheme in ("tinyzero", "no_guess"):
    r = np.array([countdown_reward(text, NUMS, TARGET, scheme=scheme) for text in group])
    by_hand = (r - r.mean()) / (r.std(ddof=1) + 1e-4)
    library = np.asarray(group_advantages(r, group_size=4))
    assert np.allclose(by_hand, library, atol=1e-5)
    print(f"{scheme:9} rewards {r.tolist()} -> advantages " + " ".join(f"{a:+.2f}" for a in library))

# %% [markdown]
# Under `tinyzero` the guesses get a positive advantage and the searches a negative one: each
# such group teaches the model to stop searching and guess. Under `no_guess` all four rewards
# are equal, so every advantage is 0 and nothing is pushed until some sample is right.

# %% [markdown]
# ## 7. Fast on the worst inputs
#
# The reward runs on every sample of every step, on text we do not control. Each input is
# bounded before any work (200 characters and 16 nested parentheses per equation, 9 digits per
# number, no exponent operator), so even the worst inputs cost a fraction of a millisecond.

# %%
import statistics
import time

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
# - A reward that reads only the answer pays for false working and pays a wrong guess more than
#   an unfinished search. `faithful` checks the written steps (`steps_true`); `no_guess` gives a
#   wrong answer no more than no answer, so a group with no right answer pushes nothing.
# - "Well-formed" is defined precisely: the last `<answer>` tag, closed, not inside the reasoning,
#   not empty. Every hack we tried (reused or glued numbers, the bare target, code, giant inputs)
#   scores no more than an honest wrong answer.
# - Never `eval` model output: a 60-line parser with exact fractions is safer, exact and fast.
# - The library's reward equals the dozen lines written here, and property tests (`tests/`)
#   check that arbitrary strings never raise, stay under 10 ms, and score a value of the scheme.
