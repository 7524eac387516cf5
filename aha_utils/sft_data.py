"""What the supervised phase trains on: one (prompt, completion) per problem, written out.

`countdown_sft_example` and `gsm8k_sft_example` write one example; `sft_example(task, ...)`
picks between them; `gsm8k_sft_rows` is the GSM8K training-set filter. `aha_utils.sft` trains
on the examples. Pure Python (no JAX): the tokenizer is anything with `encode(text, add_bos)`.

Design decisions:
- The completion is what the reward wants and nothing more. Base and few_shot templates (the
  prompt ends in `<think>`): ` REASONING </think>\\n<answer> ANSWER </answer>`, the few-shot
  shots' layout; chat: `<think>\\nREASONING\\n</think>\\n<answer>\\nANSWER\\n</answer>`, the
  system instruction's. Every example scores `correct` and `format_strict` (tested for
  Countdown; for GSM8K, external data, also checked as each example is written).
- No example teaches a reflection phrase (`aha_utils.analysis.REFLECTION_PHRASES`: "wait",
  "again", "however", ...): those are what the analysis counts as emergent behaviour. Only the
  completion matters; the prompt (the question) is never a target.
- Countdown, `style="direct"` (the default): the reasoning names each intermediate result of
  the solver's expression in evaluation order ("44 + 19 = 63. 63 - 35 = 28."), in a few
  phrasings picked by a seeded RNG. `style="search"`: a real search that misses, says by how
  much, backs up and hits (`aha_utils.data.search_traces`, issue 30); `countdown_sft_examples`
  writes a seeded mix of the two. Neither style uses a reflection phrase.
- GSM8K: the reasoning is the release's own worked solution (`load_gsm8k`'s `solution`), the
  answer its canonical `answer`. The `<<48/2=24>>` annotations are removed: they are the
  release's calculator protocol (a tool call whose result follows), not prose, and a model that
  learns them writes them with no calculator behind. The solution's lines become one paragraph,
  as Countdown's reasoning and the few-shot shots are: runs of whitespace become one space and a
  line that does not end in punctuation gets a period ("... = 240" + "When he ..." reads
  "... = 240. When he ..."). `seed` picks nothing: the words are the release's.
- GSM8K rows the examples skip (`gsm8k_sft_rows`), measured on the release's train split (7,473
  rows) with the Gemma 3 tokenizer and the base template:
  - 42 solutions use a reflection phrase ("again" in 16, "wait" in 14, "however" in 13);
    `gsm8k_sft_example` raises ValueError on them, the filter skips them.
  - the other 7,431 completions are 32 to 352 tokens: median 90, p90 155, p95 179, p99 223
    (chat: 6 tokens more). 29 are longer than the GPU preset's 256 new tokens (35 in chat) and
    dropped: SFT must not teach an answer the sampler would cut off. The limit is the run's
    sampling budget (`max_new_tokens`), so at the CPU preset's 128 it drops 1,468, a fifth:
    SFT on GSM8K is meant for the GPU preset.
"""

from __future__ import annotations

import random
import re

from aha_utils.analysis import has_reflection
from aha_utils.arith import expression_steps
from aha_utils.data.countdown import solve
from aha_utils.data.prompts import make_prompt
from aha_utils.data.search_traces import layout, write_search
from aha_utils.rewards import reward_terms

TASKS = ("countdown", "gsm8k")
STYLES = ("direct", "search")

# ----------------------------------------------------------------------------------------------
# Countdown
# ----------------------------------------------------------------------------------------------
OPENERS = ("", "We need {target} from {nums}.", "Target {target}, numbers {nums}.",
           "The numbers are {nums} and the target is {target}.")
STEPS = ("{a} {op} {b} = {r}.", "{a} {op} {b} is {r}.", "{a} {op} {b} gives {r}.")
CLOSERS = ("That is the target.", "That makes {target}.", "So we reach {target}.",
           "Each number is used once.", "Done.")
def _layout(prompt: str, reasoning: str, answer: str, template: str) -> tuple[str, str]:
    return prompt, layout(reasoning, answer, template)


def countdown_sft_example(problem: dict, *, template: str = "base", seed: int = 0,
                          style: str = "direct", **search_options) -> tuple[str, str]:
    """(prompt, completion) for one Countdown problem. `style="direct"` (the default, today's
    warm start): the completion reasons through the solver's expression (`problem["solution"]`,
    else `countdown.solve`), `seed` picking phrasings. `style="search"`: a verified search trace
    of `aha_utils.data.search_traces.write_search`, which `search_options` go to (`max_failed`,
    `dead_ends`, `explore`, `breadth`, `slip_rate`, `max_tokens`, `count_tokens`: pass the run's
    `max_new_tokens` and the tokenizer's `lambda t: len(tok.encode(t, add_bos=False))`)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if style == "search":
        trace = write_search(problem, template=template, seed=seed, **search_options)
        return make_prompt("countdown", problem, template=template), trace.completion
    if search_options:
        raise ValueError(f"{sorted(search_options)} apply only to style='search'")
    nums, target = problem["nums"], problem["target"]
    expr = problem.get("solution") or solve(nums, target)
    if expr is None:
        raise ValueError(f"countdown problem {nums} -> {target} has no solution to write out")
    steps: list = []
    value = expression_steps(expr, steps)
    if value != target:
        raise ValueError(f"solution {expr!r} equals {value}, not the target {target}")
    rng = random.Random(f"sft/{seed}/{sorted(nums)}/{target}")
    fmt = dict(nums=", ".join(map(str, nums)), target=target)
    say = rng.choice(STEPS)
    lines = [rng.choice(OPENERS).format(**fmt)]
    lines += [say.format(a=a, op=op, b=b, r=r) for a, op, b, r in steps]
    lines.append(rng.choice(CLOSERS).format(**fmt))
    reasoning = " ".join(line for line in lines if line)
    return _layout(make_prompt("countdown", problem, template=template), reasoning, expr,
                   template)


def search_styles(n: int, search_fraction: float, *, seed: int = 0) -> list[str]:
    """`n` styles, exactly `round(search_fraction * n)` of them "search" at positions drawn by
    `seed`, the rest "direct": the same mix for the same arguments, whatever the problems."""
    if not 0.0 <= search_fraction <= 1.0:
        raise ValueError(f"search_fraction must lie in [0, 1], got {search_fraction}")
    picked = set(random.Random(f"sft-mix/{seed}/{n}").sample(range(n), round(search_fraction * n)))
    return ["search" if i in picked else "direct" for i in range(n)]


def countdown_sft_examples(problems: list[dict], *, template: str = "base", seed: int = 0,
                           search_fraction: float = 0.0, **search_options) -> list[tuple[str, str]]:
    """(prompt, completion) for each problem, a `search_fraction` share written as search traces
    (`search_styles`), the rest direct. 0.0 is today's warm start, 1.0 all search; issue 30's mix
    arm uses ~0.1-0.2 (RL must then find that checking pays). Deterministic in all arguments."""
    styles = search_styles(len(problems), search_fraction, seed=seed)
    return [countdown_sft_example(q, template=template, seed=seed, style=style,
                                  **(search_options if style == "search" else {}))
            for q, style in zip(problems, styles)]


# ----------------------------------------------------------------------------------------------
# GSM8K
# ----------------------------------------------------------------------------------------------
_ANNOTATION = re.compile(r"<<[^<>]*>>")     # `<<48/2=24>>`: the release's calculator calls
_SENTENCE_END = (".", "!", "?", ":", ";", ",")


def gsm8k_reasoning(solution: str) -> str:
    """A GSM8K worked solution as one paragraph of prose (module doc): annotations removed,
    lines joined, a period after a line that does not end in punctuation."""
    lines = [" ".join(_ANNOTATION.sub("", line).split()) for line in solution.splitlines()]
    lines = [line if line.endswith(_SENTENCE_END) else line + "." for line in lines if line]
    return " ".join(lines)


def gsm8k_sft_example(problem: dict, *, template: str = "base", seed: int = 0
                      ) -> tuple[str, str]:
    """(prompt, completion) for one `load_gsm8k` row: its worked solution as the reasoning, its
    canonical `answer` as the answer. ValueError if the solution uses a reflection phrase or the
    completion would not score correct and strictly formatted. `seed` is unused (module doc)."""
    del seed
    reasoning = gsm8k_reasoning(problem.get("solution", ""))
    if not reasoning:
        raise ValueError(f"GSM8K row {problem['question'][:60]!r}... has no worked solution to "
                         "train on: load it with aha_utils.data.gsm8k.load_gsm8k")
    if has_reflection(reasoning):
        raise ValueError(f"the solution {reasoning[:80]!r}... uses a reflection phrase, which SFT "
                         "must not teach; filter the rows with gsm8k_sft_rows")
    prompt, completion = _layout(make_prompt("gsm8k", problem, template=template), reasoning,
                                 problem["answer"], template)
    terms = reward_terms("gsm8k", completion, problem)
    if terms["correct"] != 1.0 or terms["format_strict"] != 1.0:
        raise ValueError(f"the completion written for answer {problem['answer']!r} does not score "
                         f"correct and strictly formatted ({terms}): {completion[-120:]!r}")
    return prompt, completion


def gsm8k_sft_rows(problems: list[dict], tokenizer, *, max_completion_tokens: int,
                   template: str = "base") -> tuple[list[dict], dict[str, int]]:
    """The rows of `problems` that SFT trains on, in order, and how many were skipped:
    `{"reflection": ..., "too_long": ...}` (a completion over `max_completion_tokens` tokens)."""
    if max_completion_tokens < 1:
        raise ValueError(f"max_completion_tokens={max_completion_tokens} must be >= 1")
    kept, skipped = [], {"reflection": 0, "too_long": 0}
    for q in problems:
        if has_reflection(gsm8k_reasoning(q["solution"])):
            skipped["reflection"] += 1
            continue
        completion = gsm8k_sft_example(q, template=template)[1]
        if len(tokenizer.encode(completion, add_bos=False)) > max_completion_tokens:
            skipped["too_long"] += 1
            continue
        kept.append(q)
    return kept, skipped


# ----------------------------------------------------------------------------------------------
# Either task
# ----------------------------------------------------------------------------------------------
def sft_example(task: str, problem: dict, *, template: str = "base", seed: int = 0,
                **countdown_options) -> tuple[str, str]:
    """(prompt, completion) for a problem dict of `task` ("countdown" or "gsm8k");
    `countdown_options` (`style=...` and the search knobs) go to `countdown_sft_example`."""
    if task == "countdown":
        return countdown_sft_example(problem, template=template, seed=seed, **countdown_options)
    if countdown_options:
        raise ValueError(f"{sorted(countdown_options)} apply only to the countdown task")
    if task == "gsm8k":
        return gsm8k_sft_example(problem, template=template, seed=seed)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
