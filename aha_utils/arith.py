"""Exact arithmetic on untrusted text: Countdown equations and written numbers.

The reward runs on whatever the model wrote, so this module is a small parser of its own, never
`eval`: TinyZero's reward calls Python's `eval` on model output, which runs code
(`__import__('os')`) and can hang on `9**9**9`. Here the grammar has no names, no calls, no
exponent operator, and everything is bounded before any work is done:

    expression := term (('+' | '-') term)*
    term       := factor (('*' | '/') factor)*
    factor     := INTEGER | '(' expression ')'

Design decisions, each a rule of the Countdown game as TinyZero scores it:

- Only binary operators. There is no unary minus (the game combines the given numbers; `-a`
  is not one of them), so `-3 + 5` is rejected.
- Integer literals in ASCII digits only, without leading zeros (`07` is not the number 7 written
  once, and `str.isdigit` would accept `²` or Arabic-Indic digits), at most `MAX_DIGITS` each.
- Values are `fractions.Fraction`, so `(1 + 2) / 3` is exactly 1 and `7 / 3 * 3` is exactly 7:
  no float tolerance to game. Intermediate fractions and negatives are allowed (TinyZero's `eval`
  allows them too), only a division by zero is invalid.
- At most `MAX_CHARS` characters and `MAX_DEPTH` nested parentheses. With bounded literals and a
  bounded length, every value has a bounded number of digits, so each call is microseconds.

`parse_number` reads one written number (`$1,000.00`, `-3`, `25%`) for GSM8K answers.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

MAX_CHARS = 200  # a 4-number Countdown answer is ~25 characters; 200 leaves room for spacing
MAX_DEPTH = 16  # nesting a real answer never needs; bounds recursion and work
MAX_DIGITS = 9  # Countdown numbers have 1-3 digits; 9 keeps every product small

_DIGITS = frozenset("0123456789")
_OPERATORS = frozenset("+-*/()")
_SPACE = frozenset(" \t\n\r")


class ExpressionError(ValueError):
    """The text is not a valid Countdown expression (the message says why)."""


class Evaluation(NamedTuple):
    value: Fraction  # the exact value of the expression
    numbers: tuple[int, ...]  # the integer literals, in the order written


def tokenize(text: str) -> list[str]:
    """Split `text` into integer literals and the operators `+ - * / ( )`.

    Raises `ExpressionError` on any other character, a literal with a leading zero or more than
    `MAX_DIGITS` digits, or a text longer than `MAX_CHARS`.
    """
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
        elif ch in _OPERATORS:
            tokens.append(ch)
            i += 1
        elif ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            literal = text[i:j]
            if len(literal) > MAX_DIGITS:
                raise ExpressionError(f"number {literal[:12]}... has more than {MAX_DIGITS} digits")
            if len(literal) > 1 and literal[0] == "0":
                raise ExpressionError(f"number {literal!r} has a leading zero")
            tokens.append(literal)
            i = j
        else:
            raise ExpressionError(f"character {ch!r} is not allowed (only digits, + - * / ( ))")
    return tokens


class _Parser:
    """Recursive descent over the token list; `depth` counts open parentheses."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expression(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term(depth)
            value = value + right if op == "+" else value - right
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.factor(depth)
            if op == "*":
                value = value * right
            elif right == 0:
                raise ExpressionError("division by zero")
            else:
                value = value / right
        return value

    def factor(self, depth: int) -> Fraction:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends where a number or '(' was expected")
        if token == "(":
            if depth >= MAX_DEPTH:
                raise ExpressionError(f"more than {MAX_DEPTH} nested parentheses")
            self.take()
            value = self.expression(depth + 1)
            if self.peek() != ")":
                raise ExpressionError("unbalanced parentheses: a '(' is never closed")
            self.take()
            return value
        if token[0] in _DIGITS:
            self.take()
            self.numbers.append(int(token))
            return Fraction(int(token))
        raise ExpressionError(f"unexpected {token!r} where a number or '(' was expected")


def evaluate(text: str) -> Evaluation:
    """Evaluate a Countdown expression exactly; return its value and the literals it used.

    >>> evaluate("(1 + 2) / 3")
    Evaluation(value=Fraction(1, 1), numbers=(1, 2, 3))

    Raises `ExpressionError` (a `ValueError`) for anything outside the grammar above.
    """
    tokens = tokenize(text)
    if not tokens:
        raise ExpressionError("empty expression")
    parser = _Parser(tokens)
    value = parser.expression(depth=0)
    if parser.pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.pos]!r} after a complete expression")
    return Evaluation(value, tuple(parser.numbers))


# One number as a person writes it: optional sign and `$`, thousands separators in groups of
# three, an optional decimal part. Bounded repetitions keep the regex linear and the Fraction
# small; anything longer is simply not a number we accept.
_NUMBER = re.compile(
    r"(?<![\w.,])([-\u2212]?)\$?((?:\d{1,3}(?:,\d{3}){1,6}|\d{1,21})(?:\.\d{1,12})?)(?![\w,]|\.\d)",
    re.ASCII,  # `\d` would otherwise match any Unicode digit, which Fraction() then accepts
)
MAX_NUMBER_TEXT = 200  # characters; a GSM8K answer is a few words at most


def find_numbers(text: str) -> list[Fraction]:
    """Every number written in `text` (see `_NUMBER`), as exact fractions, in order."""
    numbers = []
    for match in _NUMBER.finditer(text[: MAX_NUMBER_TEXT + 1]):
        sign, digits = match.groups()
        value = Fraction(digits.replace(",", ""))
        numbers.append(-value if sign else value)
    return numbers


def parse_number(text: str) -> Fraction | None:
    """The single number written in `text` (`$1,000.00`, `1000 dollars`, `-3`, `25%`), or None.

    None when `text` holds no number, more than one (`18 or 19` is a hedge, not an answer), or
    is longer than `MAX_NUMBER_TEXT` characters. Words around the number (units) are ignored.
    """
    if len(text) > MAX_NUMBER_TEXT:
        return None
    numbers = find_numbers(text)
    return numbers[0] if len(numbers) == 1 else None


# ----------------------------------------------------------------------------------------------
# A solver expression as written steps
# ----------------------------------------------------------------------------------------------
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a / b}


def _parse(tokens: list[str]):
    """An expression string's tree: an int, or (op, left, right), with the usual precedence."""
    def level(ops, sub):
        node = sub()
        while tokens and tokens[0] in ops:
            node = (tokens.pop(0), node, sub())
        return node

    def factor():
        tok = tokens.pop(0)
        if tok != "(":
            return int(tok)
        node = level("+-", lambda: level("*/", factor))
        tokens.pop(0)   # ")"
        return node
    return level("+-", lambda: level("*/", factor))


def _tree_steps(node, out: list) -> Fraction:
    """Append (a, op, b, result) for every operation of `node` in evaluation order."""
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = _tree_steps(left, out), _tree_steps(right, out)
    out.append((a, op, b, _OPS[op](a, b)))
    return out[-1][3]


def expression_steps(expr: str, out: list) -> Fraction:
    """The value of a well-formed integer expression `expr` (the solver's), appending `(a, op, b,
    result)` to `out` for every operation in evaluation order: the steps a written solution
    shows, one equation each."""
    return _tree_steps(_parse(tokenize(expr)), out)
