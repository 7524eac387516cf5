"""The equations a completion's reasoning writes, read and checked exactly (pure text, no eval).

Issue 30: after RL the model wrote "40 - 38 is 18. 18 + 19 is 37. That makes 134." and then a
right answer. The faithful-steps reward (`rewards.steps_true`) and the analysis of self-correction
(`analysis.self_correction`) both need to know what was written and whether it holds.

What counts as an equation (decisions, each tested in tests/test_steps.py):
- A chain of arithmetic expressions joined by `=` or the words `is`, `equals`, `gives`, `makes`,
  with no other word or punctuation between them: "65 - 35 = 30", "65 - 35 is 30", "2 + 3 = 5 = 5"
  (two links, both checked), "(30 + 47) * 2 = 154". At least one expression of the chain has an
  operator: "77 is 24 too many" or "53 = 53" compute nothing and are not equations.
- Operators `+ - * /` and the unicode ones `× ÷ − – ⋅ ·`, and `x`/`X` between two numbers; a
  minus at the start or after an operator is a sign ("-16 + 20 = 4", "41 - -11 = 52"). Numbers
  are ASCII digits, decimals allowed ("7 / 2 = 3.5"); a fraction written with no spaces is one
  number, as a reader takes it: "60 / 3/4 = 80" is 60 / (3/4), which is how the direct SFT
  traces write fractions ("36 / 48 gives 3/4. 60 / 3/4 gives 80."). A number glued to a word ("step1", "12abc") is not a number, so "abc12 + 3 = 15" is not
  read as 12 + 3.
- A chain is checked strictly: every link must hold, so the run-on "44 + 19 = 63 + 35 = 98"
  (63 is not 98) is false. Values are exact fractions through `aha_utils.arith`; a side that
  cannot be evaluated (division by zero, a number of more than 9 digits, unbalanced parentheses
  after trimming) makes its link false: an unreadable step is not a verified one.
- A false link followed at once by "No" and a link with the same left side that holds ("12 * 4 =
  46. No: 12 * 4 = 48.") is `corrected`: a slip caught, which a faithful reward should not punish.
- Only the reasoning is read (`reasoning_text`): after `<think>`/`<reasoning>` if written, up to
  `</think>`/`</reasoning>` or the first `<answer>`. The answer is an expression, not a step.
- Bounded work: at most `MAX_STEPS_CHARS` characters are read and `MAX_EQUATIONS` links kept; a
  longer reasoning is `overflow` (the reward then gives no step credit).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from fractions import Fraction

from aha_utils.arith import ExpressionError, evaluate

MAX_STEPS_CHARS = 8_000   # ~2,500 tokens: past any max_new_tokens the course uses
MAX_EQUATIONS = 256
_OPENS, _CLOSES = ("<think>", "<reasoning>"), ("</think>", "</reasoning>", "<answer>")
_UNICODE_OPS = str.maketrans({"\u00d7": "*", "\u2715": "*", "\u22c5": "*", "\u00b7": "*", "\u2219": "*",
                              "\u00f7": "/", "\u2215": "/", "\u2212": "-", "\u2013": "-", "\uff1d": "="})
# NUM (not glued to a word; "12x4" is a product) | operator, parenthesis or an x between numbers
# | relation | anything else (a break). Lookarounds are fixed-width, so matching is linear.
_TOKEN = re.compile(
    r"(\d+(?:\.\d+|/\d+)?)(?!(?![xX][ \t]*\d)\w)"
    r"|([-+*/()]|(?<=\d)[xX](?=[ \t]*\d)|(?<=\d[ \t])[xX](?=[ \t]*\d))"
    r"|(=+|\b(?:is|equals|gives|makes)\b)|(\w+|\S)", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class Equation:
    left: str                   # the expressions as normalised text ("65 - 35")
    right: str
    left_value: Fraction | None  # None: could not be evaluated
    right_value: Fraction | None
    holds: bool
    corrected: bool = False     # a false link fixed by the next one ("No: ...")
    start: int = 0              # character span of the link in the text scanned
    end: int = 0


def reasoning_text(completion: str) -> str:
    """The part of a completion whose equations are its steps (module doc)."""
    opens = [i + len(tag) for tag in _OPENS if (i := completion.find(tag)) >= 0]
    start = min(opens) if opens else 0
    ends = [i for i in (completion.find(tag, start) for tag in _CLOSES) if i >= 0]
    return completion[start:min(ends) if ends else len(completion)]


MAX_SEGMENT_TOKENS = 64   # a step has a handful; arith refuses more than 200 characters anyway


def _value(tokens: list[str]) -> Fraction | None:
    if len(tokens) > MAX_SEGMENT_TOKENS:
        return None
    # Trim what a sentence leaves at the edges: a stray operator, an unmatched parenthesis.
    while tokens and tokens[-1] in "+-*/(":
        tokens = tokens[:-1]
    while tokens and tokens[0] in "+*/)":
        tokens = tokens[1:]
    while tokens and tokens[0] == "(" and tokens.count("(") > tokens.count(")"):
        tokens = tokens[1:]
    while tokens and tokens[-1] == ")" and tokens.count(")") > tokens.count("("):
        tokens = tokens[:-1]
    if not tokens:
        return None
    parts: list[str] = []
    for i, t in enumerate(tokens):
        if t[0].isdigit() and "." in t:   # a decimal as an exact fraction arith reads
            whole, frac = t.split(".")
            t = f"({int(whole + frac)} / {10 ** len(frac)})"
        elif t[0].isdigit() and "/" in t:  # "3/4" with no spaces is one number, a fraction
            t = f"({t.replace('/', ' / ')})"
        parts.append(t)
    # A sign ("-16 + 20", "41 - -11") as (0 - x) around the number it signs: arith has no unary
    # minus, since a Countdown answer needs none, but the steps of one may write negatives.
    signed: list[str] = []
    i = 0
    while i < len(parts):
        if (parts[i] == "-" and i + 1 < len(parts) and parts[i + 1] not in "+-*/()"
                and (not signed or signed[-1] in "+-*/(")):
            signed.append(f"(0 - {parts[i + 1]})")
            i += 2
        else:
            signed.append(parts[i])
            i += 1
    parts = signed
    try:
        return evaluate(" ".join(parts)).value
    except (ExpressionError, ValueError):
        return None


def _has_operator(tokens: list[str]) -> bool:
    """Whether the expression computes something (a fraction "5/0" is a division)."""
    return any(t in "+-*/" for t in tokens[1:]) or any(t[0].isdigit() and "/" in t for t in tokens)


def scan(text: str) -> tuple[list[Equation], bool]:
    """(equations written in `text`, overflow); see the module doc. `text` is reasoning only."""
    overflow = len(text) > MAX_STEPS_CHARS
    text = text[:MAX_STEPS_CHARS].translate(_UNICODE_OPS)   # one character each: spans stay
    out: list[Equation] = []
    between: list[str] = []       # the words since the last chain, to spot "No:"
    chain: list[list[str]] = [[]]
    spans: list[list[int]] = [[]]  # [start, end] of each segment of the chain

    def close_chain():
        segments, where = list(chain), list(spans)
        while segments and not segments[0]:
            segments.pop(0), where.pop(0)
        while segments and not segments[-1]:
            segments.pop(), where.pop()
        if len(segments) >= 2 and all(segments) and any(_has_operator(s) for s in segments):
            values = [_value(s) for s in segments]
            words = [w.lower() for w in between if w.isalnum()]
            for k in range(len(segments) - 1):
                a, b = values[k], values[k + 1]
                eq = Equation(" ".join(segments[k]), " ".join(segments[k + 1]), a, b,
                              a is not None and b is not None and a == b,
                              start=where[k][0], end=where[k + 1][1])
                prev = out[-1] if out else None
                if (k == 0 and words == ["no"] and prev is not None and not prev.holds
                        and eq.holds and prev.left == eq.left):
                    out[-1] = dataclasses.replace(prev, corrected=True)
                out.append(eq)
            between.clear()
        chain[:], spans[:] = [[]], [[]]

    for m in _TOKEN.finditer(text):
        num, op, rel, other = m.groups()
        if other is not None:
            if any(chain):
                close_chain()
            between.append(other)
        elif rel is not None:
            if chain[-1]:             # "==" or "= =" add no empty expression
                chain.append([])
                spans.append([])
        else:
            if num and chain[-1] and chain[-1][-1] not in "+-*/(":
                close_chain()         # two numbers with no operator between: a new expression
            chain[-1].append(num or ("*" if op in "xX" else op))
            spans[-1][:] = [spans[-1][0] if spans[-1] else m.start(), m.end()]
        if len(out) > MAX_EQUATIONS:
            return out[:MAX_EQUATIONS], True
    close_chain()
    return out[:MAX_EQUATIONS], overflow or len(out) > MAX_EQUATIONS


def written_equations(text: str) -> list[Equation]:
    """Every equation `text` writes, in order (pass reasoning: see `reasoning_text`)."""
    return scan(text)[0]


def steps_true(completion: str, goal: int | Fraction | None = None) -> bool:
    """True iff the completion's reasoning writes at least one equation and each one holds (a
    slip corrected at once aside), within the bounds of the module doc. With `goal` (Countdown's
    target), one of them must also reach it: true steps that lead nowhere ("1 + 1 = 2", then a
    guessed answer) are not the working of the answer."""
    equations, overflow = scan(reasoning_text(completion))
    if not equations or overflow or not all(e.holds or e.corrected for e in equations):
        return False
    return goal is None or any(e.holds and e.right_value == goal for e in equations)


def has_false_step(completion: str) -> bool:
    """True iff the reasoning writes an equation that does not hold and is not corrected."""
    equations, _ = scan(reasoning_text(completion))
    return any(not e.holds and not e.corrected for e in equations)
