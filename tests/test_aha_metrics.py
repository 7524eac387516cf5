"""The aha, measured (`analysis.search_profile`, `analysis.aha_metrics`): a check that fails on a
true value and leads to a different attempt counts; a ritual, a repeat or a direct answer does not."""

import pytest

from aha_utils.analysis import aha_metrics, search_profile
from aha_utils.data.countdown import make_problems
from aha_utils.data.search_traces import write_search

Q = {"nums": [65, 35, 47], "target": 53}
END = " </think>\n<answer> {} </answer>"
REAL = ("65 - 35 = 30, and 30 + 47 = 77, not 53. 77 is 24 too many. Back up. 65 - 47 = 18. "
        "18 + 35 = 53. That works." + END.format("65 - 47 + 35"))
TOO_HIGH = ("30 + 47 = 77 from 65 - 35 = 30, that's 77, too high. Try 65 - 47 = 18, 18 + 35 = 53."
            + END.format("65 - 47 + 35"))
RITUAL = ("40 - 38 = 18, not 53. 18 + 19 = 36, not 53. 65 - 47 = 18. 18 + 35 = 53." + END.format("65 - 47 + 35"))
FALSE_CHECK = ("65 - 35 = 31, not 53. 65 - 47 = 18. 18 + 35 = 53." + END.format("65 - 47 + 35"))
CLAIMED_MISS_ON_A_HIT = ("65 - 47 = 18. 18 + 35 = 53, not 53. 65 - 35 = 30. 30 + 23 = 53."
                         + END.format("65 - 47 + 35"))
REPEATED = ("65 - 35 = 30. 30 + 47 = 77, not 53. 35 - 65 ... 65 - 35 = 30. 47 + 30 = 77."
            + END.format("65 - 35 + 47"))
DIRECT = "65 - 47 = 18. 18 + 35 = 53." + END.format("65 - 47 + 35")
GUESS = "I think so." + END.format("65 + 35 + 47")
WRONG_AFTER_SEARCH = ("65 - 35 = 30. 30 + 47 = 77, not 53. Back up. 65 + 35 = 100. 100 - 47 = 53."
                      + END.format("65 + 35 + 47"))   # right search, wrong answer written


@pytest.mark.parametrize("text, attempts, failed, corrects, false_step", [
    (REAL, 2, 1, True, False),
    (TOO_HIGH, 2, 1, True, False),
    (RITUAL, 1, 0, False, True),          # the checks sit on false equations: not checks
    (FALSE_CHECK, 1, 0, False, True),
    (CLAIMED_MISS_ON_A_HIT, 1, 0, False, False),
    (REPEATED, 2, 1, False, False),       # a check, then the same attempt once more
    (DIRECT, 1, 0, False, False),
    (GUESS, 0, 0, False, False),
    (WRONG_AFTER_SEARCH, 2, 1, True, False),
])
def test_search_profile(text, attempts, failed, corrects, false_step):
    p = search_profile(text, Q["target"])
    assert (p["attempts"], p["failed_checks"], p["self_corrects"], p["false_step"]) == (attempts, failed, corrects, false_step)


def test_a_true_miss_in_a_ritual_does_count():
    # the ritual's "not 53" on false equations is no check, so its runs read as one attempt; the
    # same words after a true value are a check
    assert search_profile(RITUAL, 53)["equations"] == 4
    true_miss = RITUAL.replace("18 + 19 = 36", "18 + 19 = 37")
    assert search_profile(true_miss, 53)["failed_checks"] == 1 and search_profile(true_miss, 53)["self_corrects"]


def test_aha_metrics_aggregates_and_splits_by_ending():
    rows = [{"completion": c, "problem": Q} for c in (REAL, TOO_HIGH, RITUAL, DIRECT, GUESS, WRONG_AFTER_SEARCH)]
    m = aha_metrics(rows)   # correct recomputed: REAL, TOO_HIGH, RITUAL, DIRECT right; GUESS, WRONG wrong
    assert m["n"] == 6 and m["n_correct"] == 4
    assert m["self_correction"] == pytest.approx(2 / 6)            # REAL, TOO_HIGH
    assert m["self_correction_any"] == pytest.approx(3 / 6)        # + WRONG_AFTER_SEARCH
    assert m["self_correction_if_correct"] == pytest.approx(2 / 4)
    assert m["self_correction_if_wrong"] == pytest.approx(1 / 2)
    assert m["attempts_hist"] == {0: 1, 1: 2, 2: 3} and m["attempts_mean"] == pytest.approx(8 / 6)
    assert m["false_step_rate"] == pytest.approx(1 / 4)            # RITUAL among the correct
    # a given `correct` is trusted, and a set with no correct answer has no false-step rate
    m = aha_metrics([{"completion": REAL, "problem": Q, "correct": 0.0}])
    assert m["self_correction"] == 0.0 and m["self_correction_any"] == 1.0 and m["false_step_rate"] is None
    with pytest.raises(ValueError):
        aha_metrics([])


@pytest.mark.parametrize("num_numbers", [3, 4])
def test_writer_traces_count_exactly_when_they_miss_first(num_numbers):
    problems = make_problems(200, num_numbers=num_numbers, seed=4)
    traces = [write_search(q, seed=i, slip_rate=0.2) for i, q in enumerate(problems)]
    for q, t in zip(problems, traces):
        assert search_profile(t.completion, q["target"])["self_corrects"] == (t.failed >= 1)
    m = aha_metrics([{"completion": t.completion, "problem": q} for q, t in zip(problems, traces)])
    assert m["n_correct"] == 200 and m["false_step_rate"] == 0.0
    assert m["self_correction"] == pytest.approx(sum(t.failed >= 1 for t in traces) / 200)
    assert m["attempts_hist"] == {k: sum(t.failed + 1 == k for t in traces) for k in m["attempts_hist"]}
