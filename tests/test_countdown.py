"""Countdown problems: every one solvable, the solver complete, splits disjoint, loaders honest."""

import itertools
import random
from fractions import Fraction

import pytest

from aha_utils.arith import evaluate
from aha_utils.data import countdown
from aha_utils.data.countdown import load_countdown_tasks, make_problems, problem_split, solvable_targets, solve
from aha_utils.rewards import countdown_reward


def brute_force_values(nums):
    """Every value of every expression over all of `nums`: orderings x binary tree shapes x ops.
    Written independently of the solver (no subsets, no tables), so they check each other."""

    def trees(items):
        if len(items) == 1:
            yield items[0]
            return
        for i in range(1, len(items)):
            for left in trees(items[:i]):
                for right in trees(items[i:]):
                    yield left + right
                    yield left - right
                    yield left * right
                    if right != 0:
                        yield left / right

    values = set()
    for order in set(itertools.permutations(nums)):
        values.update(trees([Fraction(x) for x in order]))
    return values


def check_solution(nums, target, expression):
    result = evaluate(expression)
    assert result.value == target, (nums, target, expression)
    assert sorted(result.numbers) == sorted(nums), (nums, target, expression)


def test_solver_on_known_problems():
    check_solution([3, 3, 8, 8], 24, solve([3, 3, 8, 8], 24))  # needs the fraction 8/3
    check_solution([44, 19, 35], 98, solve([44, 19, 35], 98))
    assert solve([1, 1, 1], 100) is None
    assert solve([2, 3], 6) in ("2 * 3", "3 * 2")


def test_solver_agrees_with_brute_force_on_every_small_three_number_set():
    for nums in itertools.combinations_with_replacement(range(1, 7), 3):
        reachable = brute_force_values(nums)
        for target in range(0, 60):
            found = solve(list(nums), target)
            assert (found is not None) == (target in reachable), (nums, target)
            if found is not None:
                check_solution(nums, target, found)


def test_solver_agrees_with_brute_force_on_random_four_number_sets():
    rng = random.Random(0)
    for _ in range(8):
        nums = [rng.randint(1, 30) for _ in range(4)]
        reachable = brute_force_values(nums)
        targets = solvable_targets(nums, 1, 120)
        assert set(targets) == {t for t in range(1, 121) if t in reachable}, nums
        for target, expression in targets.items():
            check_solution(nums, target, expression)


@pytest.fixture(scope="module")
def many_problems():
    return {3: make_problems(3000, num_numbers=3, seed=1), 4: make_problems(600, num_numbers=4, seed=1)}


@pytest.mark.parametrize("k", [3, 4])
def test_every_problem_is_solved_by_its_own_solution_with_reward_one(many_problems, k):
    for p in many_problems[k]:
        assert set(p) == {"nums", "target", "solution"}
        assert len(p["nums"]) == k and all(1 <= x <= 99 for x in p["nums"]) and 10 <= p["target"] <= 100
        check_solution(p["nums"], p["target"], p["solution"])
        completion = f"Let me check. </think>\n<answer> {p['solution']} </answer>"
        assert countdown_reward(completion, p["nums"], p["target"]) == 1.0


@pytest.mark.parametrize("k", [3, 4])
def test_problems_are_distinct_and_in_their_split(many_problems, k):
    keys = [(tuple(sorted(p["nums"])), p["target"]) for p in many_problems[k]]
    assert len(set(keys)) == len(keys)
    assert all(problem_split(p["nums"], p["target"]) == "train" for p in many_problems[k])


def test_deterministic_by_seed_and_different_across_seeds():
    assert make_problems(50, seed=3) == make_problems(50, seed=3)
    assert make_problems(50, seed=3) != make_problems(50, seed=4)
    assert make_problems(20, seed=3) == make_problems(50, seed=3)[:20]  # a prefix: n does not reshuffle


def test_train_and_test_are_disjoint_for_any_seeds():
    test = {(tuple(sorted(p["nums"])), p["target"]) for s in range(3) for p in make_problems(300, seed=s, split="test")}
    train = {(tuple(sorted(p["nums"])), p["target"]) for s in range(3) for p in make_problems(300, seed=s)}
    assert test and train and not (test & train)


def test_split_is_about_a_tenth_and_ignores_number_order():
    rng = random.Random(0)
    draws = [([rng.randint(1, 99) for _ in range(3)], rng.randint(10, 100)) for _ in range(5000)]
    share = sum(problem_split(n, t) == "test" for n, t in draws) / len(draws)
    assert abs(share - countdown.TEST_FRACTION) < 0.02
    assert all(problem_split(n, t) == problem_split(n[::-1], t) for n, t in draws[:200])


def test_difficulty_knobs_are_respected():
    problems = make_problems(200, num_numbers=4, number_range=(1, 9), target_range=(20, 30), seed=2)
    assert all(len(p["nums"]) == 4 and all(1 <= x <= 9 for x in p["nums"]) for p in problems)
    assert all(20 <= p["target"] <= 30 for p in problems)
    assert {len(make_problems(5, num_numbers=k)[0]["nums"]) for k in (2, 3, 4, 5)} == {2, 3, 4, 5}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_numbers": 1}, "num_numbers"),
        ({"num_numbers": 6}, "num_numbers"),
        ({"split": "validation"}, "split"),
        ({"number_range": (0, 9)}, "number_range"),
        ({"target_range": (50, 10)}, "target_range"),
        ({"number_range": (1, 1), "target_range": (50, 60)}, "widen the ranges"),
    ],
)
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_problems(10, **kwargs)


def test_too_many_problems_for_a_tiny_space_is_an_error_not_a_short_list():
    with pytest.raises(ValueError, match="found only"):
        make_problems(500, num_numbers=2, number_range=(1, 5), target_range=(1, 10))


# The Hub loader, offline: `datasets.load_dataset` replaced by a real `datasets.Dataset` with the
# real columns (`target` int, `nums` list of ints) and enough rows for TinyZero's split.
@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    n = countdown.TINYZERO_TRAIN_SIZE + countdown.TINYZERO_TEST_SIZE + 5
    table = datasets.Dataset.from_dict(
        {"target": [i % 97 + 3 for i in range(n)], "nums": [[i % 50 + 1, 2, 3] + [4] * (i % 2) for i in range(n)]}
    )
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return table

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_loader_uses_tinyzero_rows(fake_hub):
    test = load_countdown_tasks("test")
    assert fake_hub[0] == ((countdown.COUNTDOWN_TASKS_HUB_ID,), {"split": "train"})
    assert len(test) == countdown.TINYZERO_TEST_SIZE
    first = countdown.TINYZERO_TRAIN_SIZE
    assert test[0] == {"nums": [first % 50 + 1, 2, 3] + [4] * (first % 2), "target": first % 97 + 3}
    train = load_countdown_tasks("train", limit=7, num_numbers=4)
    assert len(train) == 7 and all(len(p["nums"]) == 4 and type(p["target"]) is int for p in train)


def test_hub_loader_offline_says_what_to_do(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Jiayi-Pan/Countdown-Tasks-3to4' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="make_problems"):
        load_countdown_tasks("train")
    with pytest.raises(ValueError, match="split"):
        load_countdown_tasks("dev")
