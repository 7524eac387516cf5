"""Countdown problems: a few integers and a target, reached with + - * / and parentheses.

The rules are the ones the reward checks (`aha_utils.rewards`, through `aha_utils.arith`): every
given number is used exactly once, only binary operators, exact arithmetic (intermediate
fractions and negatives are fine, as in TinyZero), division by zero is invalid.

- `solve(nums, target)` searches every expression over the numbers and returns one that hits the
  target (or None). It is a dynamic programme over subsets of the numbers: the values reachable
  with a subset are the values of its two-part splits combined by the six ordered operations.
  About 0.5 ms for 3 numbers, 10 ms for 4, 0.3 s for 5 on one CPU core.
- `make_problems(n, ...)` draws the numbers uniformly from `number_range`, asks the solver for
  every target in `target_range` they can reach, and picks one of those uniformly. So every
  problem is solvable and carries one `solution` (for tests, and an SFT warm-start later), and no
  draw is wasted: a random target is reachable only ~4% of the time with 3 numbers in 1-99, ~13%
  with 4, so drawing targets blindly and checking would throw most draws away.
- Train and test are disjoint by construction: a problem's split is a hash of its identity
  (sorted numbers and target), not of the draw, so no seed or size can leak a test problem into
  training.
- `load_countdown_tasks` reads TinyZero's dataset from the Hugging Face Hub for readers online.
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction
from itertools import combinations
from typing import Iterator

MIN_NUMBERS, MAX_NUMBERS = 2, 5  # 6 numbers makes the exhaustive solver take seconds per problem
TEST_FRACTION = 0.1  # share of all possible problems that belongs to the test split
SPLITS = ("train", "test")

# Precedence of what an expression string is, to print only the parentheses it needs.
_ATOM, _PRODUCT, _SUM = 3, 2, 1
_PRECEDENCE = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT}

# values[mask] maps each value reachable with the numbers in bit set `mask` to how it was made:
# None for a given number, else (op, left_mask, left_value, right_mask, right_value). Strings
# are built only for the one expression returned. Values are exact: an `int` while whole (most
# are, and int arithmetic and hashing are ~10x cheaper than Fraction's), else a `Fraction`.
Value = int | Fraction
Step = tuple[str, int, Value, int, Value] | None
Table = dict[Value, Step]


def _div(a: Value, b: Value) -> Value:
    """Exact a / b (b != 0), an int when whole: 6 / 3 is 2, 7 / 2 is Fraction(7, 2)."""
    if type(a) is int and type(b) is int:
        q, r = divmod(a, b)
        return q if r == 0 else Fraction(a, b)
    return _whole(a / b)


def _whole(v: Value) -> Value:
    return v.numerator if type(v) is Fraction and v.denominator == 1 else v


def _splits(mask: int) -> Iterator[tuple[int, int]]:
    """Unordered splits of a bit set into two non-empty parts (each once)."""
    sub = (mask - 1) & mask
    while sub:
        if sub < (mask ^ sub):
            yield sub, mask ^ sub
        sub = (sub - 1) & mask


def _combine_into(table: Table, a: int, ta: Table, b: int, tb: Table, whole: tuple[int, int] | None = None) -> None:
    """Add every `x op y` and `y op x` (x from `ta`, y from `tb`) to `table`; the first way wins.

    With `whole=(low, high)` keep only whole results in that range: the full set of numbers only
    needs targets, and skipping what cannot be a target (a fraction plus a whole number is never
    whole) makes that largest step several times cheaper.
    """
    for va in ta:
        fa = type(va) is not int
        for vb in tb:
            fb = type(vb) is not int
            if whole is None or fa == fb:
                results = [(va + vb, "+", False), (va - vb, "-", False), (vb - va, "-", True), (va * vb, "*", False)]
                if fa:  # two fractions can sum to a whole number: normalise
                    results = [(_whole(v), op, sw) for v, op, sw in results]
            else:
                results = [(_whole(va * vb), "*", False)]
            if vb and not (whole and not fa and not fb and va % vb):
                results.append((_div(va, vb), "/", False))
            if va and not (whole and not fa and not fb and vb % va):
                results.append((_div(vb, va), "/", True))
            for value, op, swapped in results:
                if value in table or (whole and not (type(value) is int and whole[0] <= value <= whole[1])):
                    continue
                table[value] = (op, b, vb, a, va) if swapped else (op, a, va, b, vb)


def _value_tables(nums: list[int], whole: tuple[int, int] | None = None) -> dict[int, Table]:
    """The value table of every non-empty subset of `nums`, keyed by bit set; with `whole`,
    the full set's table holds only the whole values in that range."""
    k = len(nums)
    full = (1 << k) - 1
    values: dict[int, Table] = {1 << i: {x: None} for i, x in enumerate(nums)}
    for size in range(2, k + 1):  # smallest subsets first: each split's parts are already known
        for idx in combinations(range(k), size):
            mask = sum(1 << i for i in idx)
            table: Table = {}
            for a, b in _splits(mask):
                _combine_into(table, a, values[a], b, values[b], whole if mask == full else None)
            values[mask] = table
    return values


def _render(values: dict[int, Table], value: Value, step: Step) -> tuple[str, int]:
    if step is None:
        return str(value), _ATOM
    op, a, va, b, vb = step
    left = _render(values, va, values[a][va])
    right = _render(values, vb, values[b][vb])
    prec = _PRECEDENCE[op]
    lt = f"({left[0]})" if left[1] < prec else left[0]
    # a - (b - c) and a / (b * c) need their parentheses; a + (b + c) does not.
    needs = right[1] < prec or (right[1] == prec and op in "-/")
    rt = f"({right[0]})" if needs else right[0]
    return f"{lt} {op} {rt}", prec


def _check_count(k: int) -> None:
    if not MIN_NUMBERS <= k <= MAX_NUMBERS:
        raise ValueError(f"num_numbers must be {MIN_NUMBERS} to {MAX_NUMBERS} (3 or 4 in the course), got {k}")


def solvable_targets(nums: list[int], low: int, high: int) -> dict[int, str]:
    """Every integer target in [low, high] that `nums` can make, each with one expression."""
    _check_count(len(nums))
    values = _value_tables(nums, whole=(low, high))
    return {v: _render(values, v, step)[0] for v, step in values[(1 << len(nums)) - 1].items()}


def solve(nums: list[int], target: int) -> str | None:
    """One expression using each of `nums` exactly once that equals `target`, or None."""
    return solvable_targets(nums, target, target).get(target)


def problem_split(nums: list[int], target: int) -> str:
    """'train' or 'test': a fixed hash of the problem's identity (order of `nums` ignored)."""
    key = f"{sorted(nums)}->{target}".encode()
    bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % 10_000
    return "test" if bucket < TEST_FRACTION * 10_000 else "train"


def make_problems(
    n: int,
    *,
    num_numbers: int = 3,
    seed: int = 0,
    split: str = "train",
    number_range: tuple[int, int] = (1, 99),
    target_range: tuple[int, int] = (10, 100),
) -> list[dict]:
    """`n` distinct solvable problems `{"nums", "target", "solution"}` of one split.

    Deterministic in all arguments. `number_range` and `target_range` are inclusive; a wider
    number range or more numbers make harder problems (more ways to miss), a target range close
    to the numbers makes easier ones. Raises `ValueError` when the ranges cannot supply `n`
    distinct solvable problems.
    """
    _check_count(num_numbers)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for name, (lo, hi) in (("number_range", number_range), ("target_range", target_range)):
        if not 1 <= lo <= hi:
            raise ValueError(f"{name} must be (low, high) with 1 <= low <= high, got {(lo, hi)}")
    rng = random.Random(f"countdown/{seed}/{split}/{num_numbers}/{number_range}/{target_range}")
    problems: list[dict] = []
    seen: set[tuple] = set()
    budget = 1_000 + 20 * n  # draws of numbers; most draws succeed, so this trips only on bad ranges
    for _ in range(budget):
        if len(problems) == n:
            break
        nums = [rng.randint(*number_range) for _ in range(num_numbers)]
        key = tuple(sorted(nums))
        options = {
            target: expr
            for target, expr in solvable_targets(nums, *target_range).items()
            if (key, target) not in seen and problem_split(nums, target) == split
        }
        if options:
            target = rng.choice(sorted(options))
            seen.add((key, target))
            problems.append({"nums": nums, "target": target, "solution": options[target]})
    if len(problems) < n:
        raise ValueError(
            f"found only {len(problems)} of {n} distinct solvable {split} problems with "
            f"num_numbers={num_numbers}, number_range={number_range}, target_range={target_range}; "
            "widen the ranges or ask for fewer problems"
        )
    return problems


COUNTDOWN_TASKS_HUB_ID = "Jiayi-Pan/Countdown-Tasks-3to4"
# TinyZero's own split of that dataset (examples/data_preprocess/countdown.py): the first
# 327,680 rows train, the next 1,024 test. Using the same rows keeps results comparable.
TINYZERO_TRAIN_SIZE = 327_680
TINYZERO_TEST_SIZE = 1_024


def load_countdown_tasks(split: str = "train", *, limit: int | None = None, num_numbers: int | None = None) -> list[dict]:
    """TinyZero's Countdown problems `{"nums", "target"}` from the Hub (needs internet).

    `split` selects TinyZero's rows; `num_numbers` keeps only problems with 3 (or 4) numbers;
    `limit` stops after that many. Offline, use `make_problems`, which needs nothing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    import datasets  # heavy and only needed here

    try:
        table = datasets.load_dataset(COUNTDOWN_TASKS_HUB_ID, split="train")
    except OSError as err:  # ConnectionError and the Hub's offline errors are OSErrors
        raise ConnectionError(
            f"could not load {COUNTDOWN_TASKS_HUB_ID} from the Hugging Face Hub ({err}). "
            "Offline, generate problems locally with aha_utils.data.countdown.make_problems(n)."
        ) from err
    start, stop = (0, TINYZERO_TRAIN_SIZE) if split == "train" else (TINYZERO_TRAIN_SIZE, TINYZERO_TRAIN_SIZE + TINYZERO_TEST_SIZE)
    if len(table) < stop:
        raise ValueError(f"{COUNTDOWN_TASKS_HUB_ID} has {len(table)} rows, fewer than TinyZero's split needs ({stop})")
    problems: list[dict] = []
    for batch in table.select(range(start, stop)).iter(batch_size=4096):
        for nums, target in zip(batch["nums"], batch["target"]):
            if num_numbers is None or len(nums) == num_numbers:
                problems.append({"nums": [int(x) for x in nums], "target": int(target)})
            if limit is not None and len(problems) >= limit:
                return problems
    return problems
