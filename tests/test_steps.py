"""The equations a completion writes (`aha_utils.steps`): what is read as a step, what holds, and
that nothing a model writes can fool, crash or stall the reader."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aha_utils.steps import MAX_EQUATIONS, MAX_STEPS_CHARS, has_false_step, reasoning_text, scan, steps_true, written_equations
from tests.conftest import best_seconds


def links(text):
    return [(e.left, e.right, e.holds) for e in written_equations(text)]


@pytest.mark.parametrize("text, expected", [
    ("65 - 35 = 30, and 30 + 47 = 77, not 53.", [("65 - 35", "30", True), ("30 + 47", "77", True)]),
    ("40 - 38 is 18. 18 + 19 is 37. That makes 134.", [("40 - 38", "18", False), ("18 + 19", "37", True)]),
    ("2 + 3 = 5 = 5", [("2 + 3", "5", True), ("5", "5", True)]),
    ("2 + 3 = 5 = 6", [("2 + 3", "5", True), ("5", "6", False)]),
    ("44 + 19 = 63 + 35 = 98", [("44 + 19", "63 + 35", False), ("63 + 35", "98", True)]),  # strict chain
    ("12 × 4 = 48", [("12 * 4", "48", True)]),
    ("12x4 = 48 and 12 X 4 = 49", [("12 * 4", "48", True), ("12 * 4", "49", False)]),
    ("96 ÷ 2 = 48; 50 − 2 = 48; 50 – 3 = 47; 6 ⋅ 8 = 48", [("96 / 2", "48", True), ("50 - 2", "48", True),
                                                         ("50 - 3", "47", True), ("6 * 8", "48", True)]),
    ("65 - 35 is 30", [("65 - 35", "30", True)]),
    ("7 * 3 equals 21, 7 * 3 gives 22", [("7 * 3", "21", True), ("7 * 3", "22", False)]),
    ("(30 + 47) * 2 = 154", [("( 30 + 47 ) * 2", "154", True)]),
    ("so (30 + 47 = 77)", [("( 30 + 47", "77 )", True)]),            # trimmed, not an error
    ("19 - 35 = -16, -16 + 20 = 4, 41 - -11 = 52", [("19 - 35", "- 16", True), ("- 16 + 20", "4", True),
                                                   ("41 - - 11", "52", True)]),
    ("7 / 2 = 3.5", [("7 / 2", "3.5", True)]),
    ("36 / 48 gives 3/4. 60 / 3/4 gives 80.", [("36 / 48", "3/4", True), ("60 / 3/4", "80", True)]),
    ("5 / 0 = 0", [("5 / 0", "0", False)]),                       # division by zero: false
    ("5/0 = 1", [("5/0", "1", False)]),
    ("9999999999 + 1 = 10000000000", [("9999999999 + 1", "10000000000", False)]),  # unreadable: false
    ("1 + 1 == 2", [("1 + 1", "2", True)]),
    # not equations: no operator, numbers glued to words, unicode digits, prose
    ("77 is 24 too many, 53 = 53", []),
    ("abc12 + 3 = 15", []),
    ("12abc + 3 = 15", []),
    ("\u0661 + 2 = 3", []),
    ("The target is 53.", []),
    ("30 + 47 is too big", []),
])
def test_what_is_read_and_whether_it_holds(text, expected):
    assert links(text) == expected


def test_values_are_exact():
    (e,) = written_equations("1 / 3 + 1 / 3 = 0.666666666")
    assert e.left_value == Fraction(2, 3) and not e.holds
    (e,) = written_equations("7 / 3 * 3 = 7")
    assert e.holds


def test_a_slip_corrected_at_once_is_not_held_against_the_steps():
    text = "12 * 4 = 46. No: 12 * 4 = 48. 48 + 5 = 53."
    eqs = written_equations(text)
    assert [(e.holds, e.corrected) for e in eqs] == [(False, True), (True, False), (True, False)]
    assert steps_true(text + " </think> <answer> 12 * 4 + 5 </answer>")
    # not a correction: a different step, another word between, or a "correction" that is false
    for text in ("12 * 4 = 46. No: 12 * 5 = 60.", "12 * 4 = 46. No way: 12 * 4 = 48.",
                 "12 * 4 = 46. No: 12 * 4 = 47.", "12 * 4 = 46. 12 * 4 = 48."):
        assert has_false_step(text), text


def test_only_the_reasoning_is_read():
    assert reasoning_text("<think> 1+1=2 </think><answer> 3 </answer>") == " 1+1=2 "
    assert reasoning_text(" 1 + 1 = 2 </think>\n<answer> 1 + 1 = 3 </answer>") == " 1 + 1 = 2 "
    assert reasoning_text("1 + 1 = 2 <answer> 1 + 1 = 3 </answer>") == "1 + 1 = 2 "
    assert reasoning_text("<reasoning>\n2 * 2 = 4\n</reasoning>") == "\n2 * 2 = 4\n"
    # a false equation after </think> (in the answer or rambling on) is not a step
    assert steps_true(" 2 + 2 = 4 </think>\n<answer> 2 + 2 </answer> and 2 + 2 = 5")
    assert not steps_true(" 2 + 2 = 5 </think>\n<answer> 2 + 2 </answer>")


def test_steps_true_with_a_goal_needs_a_step_that_reaches_it():
    assert steps_true("44 + 19 = 63, 63 + 35 = 98", goal=98)
    assert not steps_true("44 + 19 = 63", goal=98)
    assert not steps_true("44 + 19 = 98. No: 44 + 19 = 63", goal=98)   # the slip does not reach it
    assert steps_true("44 + 19 = 63", goal=None)


def test_steps_true_needs_a_step_and_bounded_text():
    assert not steps_true(" I just know. </think>\n<answer> 44 + 19 + 35 </answer>")   # no step: 0
    assert not steps_true("")
    assert steps_true("1 + 1 = 2 " + "x" * (MAX_STEPS_CHARS - 20))
    assert not steps_true("1 + 1 = 2 " + "x" * MAX_STEPS_CHARS)                      # too long: 0
    many = "1 + 1 = 2. " * (MAX_EQUATIONS + 1)
    equations, overflow = scan(many)
    assert overflow and len(equations) == MAX_EQUATIONS and not steps_true(many)


ADVERSARIAL = ["1+" * 5000 + "1 = 2", "=" * 10_000, "1 = " * 3000, "(" * 5000 + "1 + 1 = 2",
               "9" * 10_000 + " + 1 = 1", "1 is " * 2500, "12x" * 3000, "- " * 5000 + "1 = 1",
               "1/" * 5000, ("3 + 4 = 7. No: " * 800)]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_worst_inputs_are_fast(text):
    assert best_seconds(lambda: steps_true(text)) < 0.05


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["1", "23", " ", "+", "-", "*", "/", "x", "×", "=", "is", "(", ")", ".",
                                 "No:", "</think>", "<answer>", "0", "9" * 12, "a", "\u2212"])
                | st.text(max_size=3), max_size=60).map("".join))
def test_any_text_reads_without_raising(text):
    for e in written_equations(text):
        assert e.holds == (e.left_value is not None and e.left_value == e.right_value)
    assert isinstance(steps_true(text), bool)
