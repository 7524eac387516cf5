"""The exact-fraction parser: grammar, exactness, bounds, and that no input can hang or escape it."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aha_utils.arith import MAX_CHARS, MAX_DEPTH, MAX_DIGITS, ExpressionError, evaluate, parse_number
from tests.conftest import best_seconds


@pytest.mark.parametrize(
    "text, value, numbers",
    [
        ("1 + 2 * 3", 7, (1, 2, 3)),
        ("(1 + 2) * 3", 9, (1, 2, 3)),
        ("8 - 3 - 2", 3, (8, 3, 2)),  # left-associative
        ("8 / 4 / 2", 1, (8, 4, 2)),
        ("7 / 3 * 3", 7, (7, 3, 3)),  # exact: no float rounding to hide behind
        ("(1 + 2) / 3", 1, (1, 2, 3)),
        ("1 / 3", Fraction(1, 3), (1, 3)),
        ("2 - 5", -3, (2, 5)),
        ("  ((44)) +19\n+ 35\t", 98, (44, 19, 35)),
        ("0", 0, (0,)),
    ],
)
def test_evaluates_exactly(text, value, numbers):
    result = evaluate(text)
    assert result.value == value and isinstance(result.value, Fraction)
    assert result.numbers == numbers


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", "-3 + 5", "+3", "2 ** 3", "2 ^ 3", "07 + 1", "2.5 * 2", "1e3", "1 2", "(1 + 2", "1 + 2)",
        "()", "1 +", "* 2", "1 / (2 - 2)", "1 / 0", "x + 1", "__import__('os')", "1 + 2 = 3", "3 × 4",
        "3 ÷ 4", "\u0661 + 2", "2\u00b2", "\uff11 + 1", "1_000", "0x10", "1,000",
        "1" * (MAX_DIGITS + 1), "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "1+" * MAX_CHARS + "1",
    ],
)
def test_rejects_with_expression_error(text):
    with pytest.raises(ExpressionError):
        evaluate(text)


def test_bounds_are_inclusive():
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH).value == 1
    assert evaluate("9" * MAX_DIGITS).value == 10**MAX_DIGITS - 1


def test_expression_error_is_a_value_error():
    assert issubclass(ExpressionError, ValueError)


# Random expression trees, evaluated independently of the parser.
leaves = st.integers(0, 10**MAX_DIGITS - 1).map(lambda n: (str(n), Fraction(n), (n,)))


def _node(children):
    def build(t):
        op, (ls, lv, ln), (rs, rv, rn) = t
        if op == "/" and rv == 0:
            return (f"({ls} + {rs})", lv + rv, ln + rn)
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
        return (f"({ls} {op} {rs})", value, ln + rn)

    return st.tuples(st.sampled_from("+-*/"), children, children).map(build)


trees = st.recursive(leaves, _node, max_leaves=6).filter(lambda t: len(t[0]) <= MAX_CHARS)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_matches_an_independent_evaluation(tree):
    text, value, numbers = tree
    result = evaluate(text)
    assert result.value == value
    assert result.numbers == numbers


def _both(text):
    try:
        evaluate(text)
    except ExpressionError:
        pass
    parse_number(text)  # never raises: returns None for anything but one number


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet="0123456789+-*/() ", max_size=300))
def test_arbitrary_text_only_raises_expression_error_and_is_fast(text):
    assert best_seconds(lambda: _both(text)) < 0.01


ADVERSARIAL = [
    "9**9**9",
    "9" * 10_000,
    "(" * 10_000 + "1" + ")" * 10_000,
    "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH,
    "*".join(["999999999"] * 20),  # the biggest product that fits in MAX_CHARS
    "/".join(["999999998", "999999999"] * 10),
    "1+" * 5_000 + "1",
    "__import__('os').system('echo pwned')",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_inputs_are_fast(text):
    assert best_seconds(lambda: _both(text)) < 0.01


@pytest.mark.parametrize(
    "text, value",
    [
        ("1000", 1000), ("1,000", 1000), ("$1,000.00", 1000), ("1000 dollars", 1000), ("-3", -3),
        ("25%", 25), ("The answer is $18.", 18), ("0.5", Fraction(1, 2)), ("1,234,567", 1234567),
        ("\u22127", -7),
    ],
)
def test_parse_number_reads_one_written_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text", ["", "no number", "18 or 19", "5 - 3", "1e3", "12abc", "1,2", "\u0661\u0662", "1" * 30, "x " * 200 + "7"]
)
def test_parse_number_refuses_anything_but_one_number(text):
    assert parse_number(text) is None
