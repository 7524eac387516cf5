"""Rewards: the scoring table, the schemes, the batch breakdown, and that no input can fool,
crash, stall or run code in them."""

import ast
import builtins
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aha_utils.arith
import aha_utils.rewards
from aha_utils.rewards import (
    SCHEMES,
    TERMS,
    batch_rewards,
    countdown_reward,
    extract_answer,
    format_strict,
    gsm8k_reward,
    reward_terms,
)
from tests.conftest import best_seconds

NUMS, TARGET = [44, 19, 35], 98


def answer(text, thinking="44 + 19 = 63, 63 + 35 = 98."):
    return f"{thinking} </think>\n<answer> {text} </answer>"


COUNTDOWN_CASES = [
    ("correct", answer("44 + 19 + 35"), 1.0),
    ("correct, other order and spacing", answer("(35+19)+44"), 1.0),
    ("correct, then the model rambles on", answer("44 + 19 + 35") + "\nUser: next question", 1.0),
    ("earlier draft, correct final block", "<answer> 44 </answer> no... </think>\n" + answer("44+19+35", ""), 1.0),
    ("wrong value", answer("44 + 19 - 35"), 0.1),
    ("number used twice", answer("44 + 44 + 19 - 35 + 26 - 26"), 0.1),
    ("number left unused", answer("44 + 19"), 0.1),
    ("glued digits", answer("4419 - 35 * 125"), 0.1),
    ("target written alone", answer("98"), 0.1),
    ("equation with = target", answer("44 + 19 + 35 = 98"), 0.1),
    ("python injection", answer("__import__('os').system('echo pwned')"), 0.1),
    ("exponent", answer("44 ** 1 + 19 + 35"), 0.1),
    ("unary minus", answer("-(-44) + 19 + 35"), 0.1),
    ("division by zero", answer("44 + 19 + 35 + 0 / (35 - 35)"), 0.1),
    ("huge number", answer("9" * 5000), 0.1),
    ("nesting bomb", answer("(" * 5000 + "44 + 19 + 35" + ")" * 5000), 0.1),
    ("answer tag missing", "44 + 19 + 35 = 98 </think> 44 + 19 + 35", 0.0),
    ("final answer tag unclosed", "</think>\n<answer> 44 + 19 + 35", 0.0),
    ("unclosed after a closed draft", "<answer> 44+19+35 </answer> </think> <answer> 44 + 19", 0.0),
    ("answer only inside the thinking", "<answer> 44 + 19 + 35 </answer> wait, let me check </think>", 0.0),
    ("empty answer", answer(""), 0.0),
    ("wrong tag case", "</think> <Answer> 44 + 19 + 35 </Answer>", 0.0),
    ("empty completion", "", 0.0),
]


@pytest.mark.parametrize("name, completion, expected", COUNTDOWN_CASES, ids=[c[0] for c in COUNTDOWN_CASES])
def test_countdown_scoring_table(name, completion, expected):
    assert countdown_reward(completion, NUMS, TARGET) == expected


def test_exact_arithmetic_and_duplicates():
    assert countdown_reward(answer("(1 + 2) / 3"), [1, 2, 3], 1) == 1.0
    assert countdown_reward(answer("7 / 3 * 3"), [7, 3, 3], 7) == 1.0  # duplicates counted as a multiset
    assert countdown_reward(answer("7 / 3 * 3"), [7, 3, 4], 7) == 0.1
    assert countdown_reward(answer("1 / 3 + 1 / 3"), [1, 3, 1, 3], 1) == 0.1  # 2/3, not 1: no float slack


@pytest.mark.parametrize(
    "written, reference, expected",
    [
        ("$1,000.00", "1000", 1.0), ("1000", "1000", 1.0), ("1,000", "1000", 1.0), ("1000 dollars", "1000", 1.0),
        ("1000", "1,000", 1.0), ("1000.0", "1000", 1.0), ("-3", "-3", 1.0), ("The answer is 18.", "18", 1.0),
        ("10000", "1000", 0.1), ("1000 or 2000", "1000", 0.1), ("1e3", "1000", 0.1), ("1,00", "100", 0.1),
        ("3", "-3", 0.1), ("one thousand", "1000", 0.1), ("9" * 5000, "1000", 0.1),
    ],
)
def test_gsm8k_number_matching(written, reference, expected):
    assert gsm8k_reward(answer(written), reference) == expected


def test_gsm8k_missing_or_unclosed_tag_scores_zero_and_bad_reference_raises():
    assert gsm8k_reward("so it is 18 </think> 18", "18") == 0.0
    assert gsm8k_reward("</think> <answer> 18", "18") == 0.0
    for completion in (answer("18"), "no answer at all"):
        with pytest.raises(ValueError, match="reference"):
            gsm8k_reward(completion, "eighteen")


def test_countdown_problem_must_be_integers():
    for completion in (answer("1 + 2"), "no answer at all"):
        with pytest.raises(ValueError, match="ints"):
            countdown_reward(completion, ["1", "2"], 3)


def test_extract_answer_and_strict_format():
    assert extract_answer("a <answer> 1 </answer> b <answer> 2 </answer> c") == "2"
    assert extract_answer("<answer>1</answer><answer>2") is None
    assert format_strict(answer("44 + 19 + 35"))
    assert format_strict("<reasoning>\nhm\n</reasoning>\n<answer>\n7\n</answer>\n", "reasoning")
    assert format_strict("<think> hm </think> <answer> 7 </answer>")  # a chat model opens its own tag
    for not_strict in [
        answer("7") + " trailing", " </think> <answer> 7 </answer>", "hm </think> x <answer> 7 </answer>",
        "hm </think> <answer> 7 </answer> </answer>", "<answer> 6 </answer> hm </think> <answer> 7 </answer>",
        "hm </think> </think> <answer> 7 </answer>", "hm </think> <answer> </answer>",
    ]:
        assert not format_strict(not_strict), not_strict


def test_schemes():
    good, wrong, bad = answer("44 + 19 + 35"), answer("44"), "no tags"
    assert [countdown_reward(c, NUMS, TARGET, scheme="simplerl") for c in (good, wrong, bad)] == [1.0, -0.5, -1.0]
    r1 = [countdown_reward(c, NUMS, TARGET, scheme="tiny_r1") for c in (good, wrong, bad)]
    assert r1 == [2.0 + 0.5 + 0.5 + 0.5, 0.5 + 0.5 + 0.5, 0.0]  # correct + strict + soft + 4 tags
    tiny = "<reasoning>\n36 - 10\n</reasoning>\n<answer>\n26\n</answer>\n"
    assert gsm8k_reward(tiny, "26", scheme="tiny_r1", reasoning_tag="reasoning") == 2.0 + 0.5 + 0.5 + 0.5 + 0.5
    assert reward_terms("countdown", answer("98"), {"nums": NUMS, "target": TARGET})["integer_answer"] == 0.0
    with pytest.raises(ValueError, match="scheme"):
        countdown_reward(good, NUMS, TARGET, scheme="r1")


def test_batch_rewards_breakdown_matches_single_calls():
    completions = [case[1] for case in COUNTDOWN_CASES]
    out = batch_rewards("countdown", completions, [{"nums": NUMS, "target": TARGET}])
    assert set(out) == {"reward", *TERMS} and all(len(v) == len(completions) for v in out.values())
    assert out["reward"] == [countdown_reward(c, NUMS, TARGET) for c in completions]
    # one problem per prompt, samples of a prompt adjacent
    problems = [{"answer": "1"}, {"answer": "2"}]
    out = batch_rewards("gsm8k", [answer("1"), answer("2"), answer("2"), answer("2")], problems)
    assert out["reward"] == [1.0, 0.1, 1.0, 1.0] and out["correct"] == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="per prompt"):
        batch_rewards("gsm8k", ["a"] * 3, problems)
    with pytest.raises(ValueError, match="task"):
        batch_rewards("math", ["a"], [{}])


# --- property tests: any string, and a grammar of near-miss completions -----------------------

FRAGMENTS = [
    "<answer>", "</answer>", "<think>", "</think>", "<reasoning>", "</reasoning>", "<answer", "answer>", "</",
    "44", "19", "35", "98", "4419", "1,000", "$", "(", ")", "+", "-", "*", "/", "**", "=", " ", "\n", "0",
    "__import__('os')", "9" * 50, "(" * 40, "1e308", "\u0661", "-1",
]
near_misses = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join)
completions = st.text(max_size=500) | near_misses


def _check_bounds(scheme, value):
    if scheme in ("tinyzero", "simplerl"):
        assert value in {SCHEMES[scheme].correct, SCHEMES[scheme].well_formed, SCHEMES[scheme].malformed}
    else:
        low, high = SCHEMES[scheme].bounds
        assert low <= value <= high


@settings(max_examples=400, deadline=None)
@given(completions, st.sampled_from(sorted(SCHEMES)))
def test_any_completion_scores_a_scheme_value_fast_without_raising(completion, scheme):
    for call in (
        lambda: countdown_reward(completion, NUMS, TARGET, scheme=scheme),
        lambda: gsm8k_reward(completion, "1000", scheme=scheme),
    ):
        _check_bounds(scheme, call())
        assert best_seconds(call) < 0.01


ADVERSARIAL = [
    "x" * 10_000,
    "<answer>" * 2_000,
    "</answer>" * 1_000 + "<answer>",
    "<answer>" + "(" * 10_000 + "</answer>",
    "<answer>" + "9" * 10_000 + "</answer>",
    "<answer>" + "9**9**9" + "</answer>",
    "<answer>" + "1+" * 5_000 + "1</answer>",
    "<answer>" + "1," * 5_000 + "</answer>",
    "<answer>" + " 1" * 5_000 + "</answer>",
    "</think>" * 1_000 + "<answer>" + "*".join(["999999999"] * 20) + "</answer>",
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_worst_inputs_take_under_10ms(completion, scheme):
    assert best_seconds(lambda: countdown_reward(completion, NUMS, TARGET, scheme=scheme)) < 0.01
    assert best_seconds(lambda: gsm8k_reward(completion, "1000", scheme=scheme)) < 0.01


# --- no completion can run code ---------------------------------------------------------------

def test_reward_modules_never_call_eval_exec_compile_or_sympify():
    for module in (aha_utils.rewards, aha_utils.arith):
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, module.__name__
            if isinstance(node, (ast.Name, ast.Attribute)):
                assert getattr(node, "id", getattr(node, "attr", "")) not in {"sympify", "literal_eval"}


def test_injections_run_nothing(monkeypatch, tmp_path):
    canary = tmp_path / "pwned"
    payloads = [
        f"__import__('pathlib').Path({str(canary)!r}).touch()",
        f"open({str(canary)!r}, 'w')",
        "exec('import os')", "eval('1')", "[x for x in ().__class__.__base__.__subclasses__()]",
        "lambda: 0", "1 if True else 2", "97; import os",
    ]

    def forbidden(*args, **kwargs):
        raise AssertionError("a reward tried to run code")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, forbidden)
    results = [(countdown_reward(answer(p), NUMS, TARGET), gsm8k_reward(answer(p), "98")) for p in payloads]
    monkeypatch.undo()
    assert all(r == (0.1, 0.1) for r in results)
    assert not canary.exists()


# --- issue 33: a list of numbers is not a GSM8K answer; a number with words after it is -----

@pytest.mark.parametrize("written, expected", [
    ("18, 19", 0.1), ("17, 18, 19", 0.1), ("19, 18", 0.1), ("19,19", 0.1), ("18 , 19", 0.1),
    ("19, which is the total", 1.0), ("19 apples", 1.0), ("19.", 1.0), ("19, apples.", 1.0),
    ("$19", 1.0), ("19,", 1.0),
])
def test_gsm8k_lists_are_not_answers_but_a_number_with_words_is(written, expected):
    assert gsm8k_reward(answer(written), "19") == expected


def test_gsm8k_thousands_separators_still_read():
    assert gsm8k_reward(answer("1,234"), "1234") == 1.0
    assert gsm8k_reward(answer("1,234, which is the total"), "1234") == 1.0
    assert gsm8k_reward(answer("1,234, 1,235"), "1234") == 0.1
    assert gsm8k_reward(answer("1,2345"), "12345") == 0.1


# --- faithful steps and schemes where a wrong guess does not beat an honest search -----------

HONEST = " 44 + 19 = 63, 63 + 35 = 98. </think>\n<answer> 44 + 19 + 35 </answer>"
FALSE_STEPS = " 44 + 19 = 61, 61 + 35 = 98. </think>\n<answer> 44 + 19 + 35 </answer>"
NO_STEPS = " I see it. </think>\n<answer> 44 + 19 + 35 </answer>"
GUESS = " 44 + 19 = 63. </think>\n<answer> 44 + 19 - 35 </answer>"
UNFINISHED = " 44 + 19 = 63, 63 - 35 = 28, not 98. 28 is 70 too few. Back up. 44 * 35 = 1540"


def test_steps_true_term():
    terms = lambda c: reward_terms("countdown", c, {"nums": NUMS, "target": TARGET})
    assert [terms(c)["steps_true"] for c in (HONEST, FALSE_STEPS, NO_STEPS, GUESS, UNFINISHED)] == [1, 0, 0, 0, 0]
    # true steps that never reach the target are not the working of the answer
    assert terms(" 1 + 1 = 2. </think>\n<answer> 44 + 19 + 35 </answer>")["steps_true"] == 0.0
    assert reward_terms("gsm8k", " 3 * 12 = 36, 36 - 10 = 26. </think>\n<answer> 26 </answer>",
                        {"answer": "26"})["steps_true"] == 1.0
    # equations outside the reasoning do not count; a slip caught at once does not cost
    assert terms(NO_STEPS + " 1 + 1 = 2")["steps_true"] == 0.0
    assert terms(" 44 + 19 = 62. No: 44 + 19 = 63. 63 + 35 = 98. </think>\n<answer> 44 + 19 + 35 </answer>"
                 )["steps_true"] == 1.0
    assert terms("<think>\n44 × 2 = 88, 63 + 35 = 98\n</think>\n<answer>\n44 + 19 + 35\n</answer>")["steps_true"] == 1.0


@pytest.mark.parametrize("scheme, expected", [
    ("faithful", [1.0, 0.5, 0.5, 0.1, 0.0]),
    ("no_guess", [1.0, 1.0, 1.0, 0.0, 0.0]),
    ("faithful_no_guess", [1.0, 0.5, 0.5, 0.0, 0.0]),
    ("tinyzero", [1.0, 1.0, 1.0, 0.1, 0.0]),              # unchanged
])
def test_faithful_and_no_guess_schemes(scheme, expected):
    got = [countdown_reward(c, NUMS, TARGET, scheme=scheme) for c in (HONEST, FALSE_STEPS, NO_STEPS, GUESS, UNFINISHED)]
    assert got == expected
    if scheme != "tinyzero":
        assert got[3] <= got[4] or scheme == "faithful"   # a wrong guess never beats an unfinished search
    low, high = SCHEMES[scheme].bounds if scheme != "tinyzero" else (0.0, 1.0)
    assert all(low <= g <= high for g in got)


def test_default_scheme_and_terms_are_backward_compatible():
    assert countdown_reward(HONEST, NUMS, TARGET) == countdown_reward(FALSE_STEPS, NUMS, TARGET) == 1.0
    assert TERMS[:5] == ("format_soft", "format_strict", "correct", "integer_answer", "xml_count")
