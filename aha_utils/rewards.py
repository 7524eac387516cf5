"""Verifiable rewards for Countdown and GSM8K, built from small terms.

The reward is the only teacher in R1-Zero-style RL, so each rule here is explicit and tested. A
completion is the text the model generated after the prompt (the base prompt ends in `<think>`,
so it reads `reasoning </think> <answer> ... </answer>`); the prompt is never scored.

The final answer (`extract_answer`), TinyZero's rule made precise:
1. It is the content of the LAST `<answer>` tag in the completion (earlier blocks are drafts).
2. That tag must be closed by `</answer>`; an unclosed final tag means no answer (0).
3. No `</think>` or `</reasoning>` may follow it: an answer that the model then closes its
   reasoning after was written inside the reasoning, not given as the final answer.
4. Its content, stripped, must not be empty. Text after `</answer>` is ignored: base models
   ramble on after answering and the sampler may not stop there.

Terms (each a float, logged per completion by `batch_rewards`):
- `format_soft`: 1 if there is a final answer by the rules above, else 0.
- `format_strict`: 1 if the completion is exactly `[<think>] reasoning </think> <answer> X
  </answer>` (whitespace aside; non-empty reasoning and X; no other tags; nothing after).
- `correct`: 1 if the final answer is right. Countdown: an equation over the given numbers,
  each exactly once, equal to the target, checked by `aha_utils.arith` with exact fractions
  (no `eval`). GSM8K: exactly one number, equal to the reference (`$1,000.00` = `1000`).
- `integer_answer` (GSM8K only, Tiny-R1): the answer is a bare integer. For Countdown it is always
  0: an integer alone there is the target written alone, a hack, not a format to reward.
- `steps_true`: 1 if the reasoning writes at least one equation, every one holds
  (`aha_utils.steps`, exact fractions; a slip corrected at once, "12 * 4 = 46. No: 12 * 4 =
  48.", is not held against it) and, for Countdown, one of them reaches the target. No equation
  at all is 0, not 1: the cheapest way to write no false step is to write no step, which is the
  guessing that issue 30 is about; and "1 + 1 = 2" before a guess is true but not working, hence
  the target. (GSM8K: truth only; its solutions do not always end on the answer's number.)
- `xml_count` (willccbb): 0.125 for each of the four tags written once (the opening reasoning
  tag may instead be absent before a closing one: the base prompt wrote it), minus 0.001 per
  character after the final `</answer>`, the penalty capped at 0.5, so it lies in [-0.5, 0.5].

Schemes turn terms into the reward (`SCHEMES`); the default is TinyZero's:
- `tinyzero`: 1.0 correct, else 0.1 if `format_soft`, else 0.0.
- `simplerl` (SimpleRL-Zoo): +1 correct, else -0.5 if `format_soft`, else -1.
- `tiny_r1` (willccbb's GRPO demo, used by Tiny-R1): 2.0 correct + 0.5 integer_answer
  + 0.5 format_strict + 0.5 format_soft + xml_count, in [-0.5, 4.0]. (willccbb's soft format
  also asks for reasoning tags; ours counts only the answer, like the other schemes.)
- `faithful`: 1.0 correct with every written step true, 0.5 correct otherwise, 0.1 well-formed
  but wrong, else 0. Full credit only for right answers with true working; a right answer with
  false working still beats a wrong one, so early in RL (when most right answers of the warm
  start have false steps) being right keeps its signal while GRPO's group baseline favours the
  faithful ones.
- `no_guess`: 1.0 correct, else 0.0. A well-formed wrong guess earns no more than an honest
  search that ran out of tokens (issue 30: TinyZero's 0.1 made GRPO prefer guessing).
- `faithful_no_guess`: `faithful` with a wrong answer worth 0, as `no_guess`.
Use the `no_guess` schemes from a warm start: they give no format signal to a zero arm.

GSM8K answers: exactly one number (`_answer_number`). A list ("18, 19") is several numbers, not
an answer; a number followed by words or a comma ("19, which is the total", "19 apples") is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from aha_utils.arith import ExpressionError, evaluate, parse_number
from aha_utils.steps import Equation, reasoning_text, steps_true, written_equations  # noqa: F401 (re-exported)

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
REASONING_CLOSES = ("</think>", "</reasoning>")
TERMS = ("format_soft", "format_strict", "correct", "integer_answer", "xml_count", "steps_true")
TASKS = ("countdown", "gsm8k")
XML_PENALTY_CAP = 0.5  # uncapped, 10k characters of trailing junk would cost 10, more than a right answer earns
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def extract_answer(completion: str) -> str | None:
    """The final answer's text (stripped), or None when there is none (rules in the module doc)."""
    start = completion.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    end = completion.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    if any(tag in completion[end:] for tag in REASONING_CLOSES):
        return None
    answer = completion[start + len(ANSWER_OPEN) : end].strip()
    return answer or None


def format_strict(completion: str, reasoning_tag: str = "think") -> bool:
    """True for exactly `[<tag>] reasoning </tag> <answer> X </answer>` with nothing else around.

    The opening tag is optional because the base prompt already wrote it.
    """
    opening, closing = f"<{reasoning_tag}>", f"</{reasoning_tag}>"
    text = completion.strip()
    if text.startswith(opening):
        text = text[len(opening) :]
    reasoning, found, rest = text.partition(closing)
    rest = rest.strip()
    if not found or not reasoning.strip() or not (rest.startswith(ANSWER_OPEN) and rest.endswith(ANSWER_CLOSE)):
        return False
    body = rest[len(ANSWER_OPEN) : -len(ANSWER_CLOSE)]
    tags = (opening, closing, ANSWER_OPEN, ANSWER_CLOSE)
    return bool(body.strip()) and not any(tag in reasoning or tag in body for tag in tags)


def xml_count(completion: str, reasoning_tag: str = "think") -> float:
    """willccbb's tag-count term: 0.125 per tag written once, minus trailing text (capped)."""
    opening, closing = f"<{reasoning_tag}>", f"</{reasoning_tag}>"
    once = [completion.count(tag) == 1 for tag in (opening, closing, ANSWER_OPEN, ANSWER_CLOSE)]
    once[0] = once[0] or (completion.count(opening) == 0 and once[1])  # the base prompt opened it
    score = 0.125 * sum(once)
    end = completion.rfind(ANSWER_CLOSE)
    if end >= 0:
        trailing = len(completion[end + len(ANSWER_CLOSE) :].strip())
        score -= min(XML_PENALTY_CAP, 0.001 * trailing)
    return score


def _check_problem(nums: list[int], target: int) -> None:
    if not all(type(x) is int for x in nums) or type(target) is not int:
        raise ValueError(f"nums must be a list of ints and target an int, got {nums!r} and {target!r}")


def countdown_correct(answer: str, nums: list[int], target: int) -> bool:
    """True if `answer` is an equation using each of `nums` exactly once that equals `target`."""
    _check_problem(nums, target)
    try:
        result = evaluate(answer)
    except ExpressionError:
        return False
    return sorted(result.numbers) == sorted(nums) and result.value == target


def _reference_number(reference: str):
    gold = parse_number(reference)
    if gold is None:
        raise ValueError(f"reference answer must be one number, like load_gsm8k's 'answer', got {reference!r}")
    return gold


# `arith`'s number, except that a comma after a number (not starting a thousands group) ends it
# instead of hiding it: arith skips "18," so "18, 19" read as the one number 19 (issue 33).
_ANSWER_NUMBER = re.compile(
    r"(?<![\w.])(?<!\d,)([-\u2212]?)\$?((?:\d{1,3}(?:,\d{3}){1,6}|\d{1,21})(?:\.\d{1,12})?)(?!\w|\.\d|,\d)",
    re.ASCII)
MAX_ANSWER_CHARS = 200


def _answer_number(text: str) -> Fraction | None:
    """The single number of a GSM8K answer, or None (none, several, or text too long)."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    found = _ANSWER_NUMBER.findall(text)
    if len(found) != 1:
        return None
    sign, digits = found[0]
    value = Fraction(digits.replace(",", ""))
    return -value if sign else value


def gsm8k_correct(answer: str, reference: str) -> bool:
    """True if `answer` holds exactly one number and it equals `reference` (`"1,000"` = `"1000"`)."""
    gold = _reference_number(reference)
    value = _answer_number(answer)
    return value is not None and value == gold


def reward_terms(task: str, completion: str, problem: Mapping, *, reasoning_tag: str = "think") -> dict[str, float]:
    """Every term for one completion; `problem` is a `make_problems` / `load_gsm8k` dict."""
    answer = extract_answer(completion)
    # A malformed problem is a bug upstream: fail loudly even when the completion has no answer.
    if task == "countdown":
        _check_problem(problem["nums"], problem["target"])
        correct = answer is not None and countdown_correct(answer, problem["nums"], problem["target"])
        integer = False
    elif task == "gsm8k":
        _reference_number(problem["answer"])
        correct = answer is not None and gsm8k_correct(answer, problem["answer"])
        integer = answer is not None and _INTEGER.fullmatch(answer) is not None
    else:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return {
        "format_soft": float(answer is not None),
        "format_strict": float(format_strict(completion, reasoning_tag)),
        "correct": float(correct),
        "integer_answer": float(integer),
        "xml_count": xml_count(completion, reasoning_tag),
        "steps_true": float(steps_true(completion, problem["target"] if task == "countdown" else None)),
    }


@dataclass(frozen=True)
class TieredScheme:
    """One value for a correct answer, one for a well-formed wrong one, one for the rest."""

    correct: float
    well_formed: float
    malformed: float

    def __call__(self, terms: Mapping[str, float]) -> float:
        if terms["correct"]:
            return self.correct
        return self.well_formed if terms["format_soft"] else self.malformed

    @property
    def bounds(self) -> tuple[float, float]:
        return min(self.correct, self.well_formed, self.malformed), max(self.correct, self.well_formed, self.malformed)


@dataclass(frozen=True)
class WeightedScheme:
    """A weighted sum of terms."""

    weights: Mapping[str, float]

    def __call__(self, terms: Mapping[str, float]) -> float:
        return sum(w * terms[name] for name, w in self.weights.items())

    @property
    def bounds(self) -> tuple[float, float]:
        low = -XML_PENALTY_CAP * self.weights.get("xml_count", 0.0)
        high = sum(w * (0.5 if name == "xml_count" else 1.0) for name, w in self.weights.items())
        return low, high


@dataclass(frozen=True)
class FaithfulScheme:
    """Tiers by the answer and, for a correct one, by whether the written steps hold."""

    faithful: float     # correct, and every written equation holds
    unfaithful: float   # correct, but a step is false or none is written
    wrong: float        # a well-formed wrong answer
    malformed: float    # no final answer

    def __call__(self, terms: Mapping[str, float]) -> float:
        if terms["correct"]:
            return self.faithful if terms["steps_true"] else self.unfaithful
        return self.wrong if terms["format_soft"] else self.malformed

    @property
    def bounds(self) -> tuple[float, float]:
        values = (self.faithful, self.unfaithful, self.wrong, self.malformed)
        return min(values), max(values)


Scheme = Callable[[Mapping[str, float]], float]
SCHEMES: dict[str, Scheme] = {
    "tinyzero": TieredScheme(correct=1.0, well_formed=0.1, malformed=0.0),
    "simplerl": TieredScheme(correct=1.0, well_formed=-0.5, malformed=-1.0),
    "tiny_r1": WeightedScheme(
        {"correct": 2.0, "integer_answer": 0.5, "format_strict": 0.5, "format_soft": 0.5, "xml_count": 1.0}
    ),
    "faithful": FaithfulScheme(faithful=1.0, unfaithful=0.5, wrong=0.1, malformed=0.0),
    "no_guess": TieredScheme(correct=1.0, well_formed=0.0, malformed=0.0),
    "faithful_no_guess": FaithfulScheme(faithful=1.0, unfaithful=0.5, wrong=0.0, malformed=0.0),
}


def get_scheme(scheme: str) -> Scheme:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    return SCHEMES[scheme]


def countdown_reward(completion: str, nums: list[int], target: int, *, scheme: str = "tinyzero", reasoning_tag: str = "think") -> float:
    """Countdown reward: with the default scheme 1.0 correct, 0.1 well-formed but wrong, 0.0 otherwise."""
    terms = reward_terms("countdown", completion, {"nums": nums, "target": target}, reasoning_tag=reasoning_tag)
    return get_scheme(scheme)(terms)


def gsm8k_reward(completion: str, answer: str, *, scheme: str = "tinyzero", reasoning_tag: str = "think") -> float:
    """GSM8K reward: with the default scheme 1.0 correct, 0.1 well-formed but wrong, 0.0 otherwise."""
    terms = reward_terms("gsm8k", completion, {"answer": answer}, reasoning_tag=reasoning_tag)
    return get_scheme(scheme)(terms)


def batch_rewards(
    task: str, completions: list[str], problems: list[Mapping], *, scheme: str = "tinyzero", reasoning_tag: str = "think"
) -> dict[str, list[float]]:
    """`{"reward": [...], <term>: [...]}` for a batch, one value per completion, for logging.

    `problems` has one entry per completion, or one per prompt when each prompt was sampled
    `len(completions) // len(problems)` times with its samples adjacent (as `generate` returns).
    """
    score = get_scheme(scheme)
    if not problems or len(completions) % len(problems):
        raise ValueError(
            f"{len(completions)} completions for {len(problems)} problems: pass one problem per completion "
            "or per prompt (the samples of one prompt adjacent)"
        )
    repeat = len(completions) // len(problems)
    out: dict[str, list[float]] = {name: [] for name in ("reward", *TERMS)}
    for i, completion in enumerate(completions):
        terms = reward_terms(task, completion, problems[i // repeat], reasoning_tag=reasoning_tag)
        out["reward"].append(score(terms))
        for name in TERMS:
            out[name].append(terms[name])
    return out
