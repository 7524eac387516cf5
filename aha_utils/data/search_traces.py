"""Search traces for the warm start: a real, informed search over a Countdown problem, in words.

Why (issue 30): a 270M base model never checks its work, so RL has no checking to amplify. Stream
of Search (Gandhi et al. 2024) trains on serialized searches, dead ends and backtracking included;
"Cognitive behaviors" (Gandhi et al. 2025) shows that priming with verification and backtracking
is what lets RL improve on Countdown. Two probes here showed how it fails: random dead ends teach a
ritual RL prunes, and searches that run out of tokens lose to a guess. So these traces are a real
search whose dead ends inform the next move, and every trace commits to its answer inside the cap.

`write_search(problem, ...)` runs a depth-first search over pairs of the numbers, whole positive
intermediates only (what a person writes). The first move is ordered by a heuristic: how close
its result gets to the target, a factor of the target counting as part way, plus seeded noise
(`explore`) so that the order, and so the number of dead ends, varies. Later moves that leave two
numbers look one step on (how close can those two get?), so after a miss there the search backs
up to a new first pair at once; other inner moves try at most `breadth` siblings first. Where only
two numbers are left the closest operation is written and compared with the target: a hit ends the
search; a miss is a failed attempt, written with its TRUE computed value ("30 + 47 = 77, not 53.")
and the gap ("77 is 24 too many"). The miss informs the next move: at the point the search backs
up to, the siblings that move the result the way the gap asks come first (lower when the value is
added or multiplied on, higher when it is subtracted or divided by), and the trace says so only
when the next step really does ("77 is 24 too many, so go lower than 30."). The answer is
the expression of the hit, checked by `rewards.countdown_correct`; every written equation is checked true (apart
from an optional slip, written wrong and corrected at once: "12 * 4 = 46. No: 12 * 4 = 48.").

Knobs: `dead_ends` and `max_failed` (the dead ends shown are the search's own: with "drawn", at
most a cap drawn per problem in 1..max_failed, so long searches do not all show the maximum, later
ones dropped and the trace going from the last one shown straight to the hit; with "all", every
one the search made, so no hit comes out of nowhere), `explore`, `breadth`, `slip_rate`,
`max_tokens` with `count_tokens` (dead ends are dropped from the end until the whole completion
fits; the answer is never cut). The default `count_tokens` overcounts Gemma (`estimate_tokens`).
Measured (2,000 problems each, Gemma tokenizer, cap 512, defaults): dead ends written 0/1/2/3/4 in
44/37/12/4/2% of Countdown-3 traces and 38/26/18/11/7% of Countdown-4; 100 tokens mean (p99 259)
and 153 (p99 341). The search itself needed more dead ends than shown in 12% (C3) and 34% (C4): the
trace then goes from the last one shown to the hit. At a 256-token cap 14% of C4 traces lose
dead ends to the cap: use 512 for search traces. No trace uses a phrase of
`analysis.REFLECTION_PHRASES`, so that keyword count stays a measure of what RL adds. Where no whole-number path exists (a few problems need fractions) the trace falls
back to the solver's expression written step by step (`fallback=True`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from aha_utils.arith import expression_steps
from aha_utils.data.countdown import solve
from aha_utils.data.prompts import TEMPLATES
from aha_utils.rewards import countdown_correct

# Gemma's tokenizer splits numbers into single digits, so this text is dense: measured on 4,000
# traces (Countdown-3 and -4) 1.41 to ~2 characters a token, median 1.6. 1.4 keeps the estimate
# conservative (it overcounts); pass the real tokenizer's count where it is loaded.
CHARS_PER_TOKEN = 1.4
DEAD_ENDS = ("drawn", "all")   # which of the search's dead ends a trace shows (`write_search`)
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def estimate_tokens(text: str) -> int:
    """A conservative Gemma token count without a tokenizer: ceil(len / 1.4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def layout(reasoning: str, answer: str, template: str) -> str:
    """The completion after the prompt: base/few_shot (prompt ends in `<think>`) or chat."""
    if template == "chat":
        return f"<think>\n{reasoning}\n</think>\n<answer>\n{answer}\n</answer>"
    return f" {reasoning} </think>\n<answer> {answer} </answer>"


@dataclass(frozen=True)
class SearchTrace:
    completion: str     # what follows the prompt, `layout(reasoning, answer, template)`
    reasoning: str
    answer: str         # the final expression, solver-checked
    failed: int         # failed attempts written
    dropped: int        # failed attempts the search made but the trace leaves out (max_failed or cap)
    dropped_for_tokens: int  # of those, the ones left out only to fit max_tokens
    slip: bool          # a caught arithmetic slip is written
    fallback: bool      # no whole-number search path: the solver's expression, step by step
    tokens: int         # count_tokens(completion)


# A value in the search: (number, expression string, precedence of that expression).
class _Val(tuple):
    __slots__ = ()

    def __new__(cls, n, expr=None, prec=3):
        return tuple.__new__(cls, (n, str(n) if expr is None else expr, prec))


def _combine(a: _Val, op: str, b: _Val) -> _Val:
    p = _PREC[op]
    left = a[1] if a[2] >= p else f"({a[1]})"
    right = b[1] if b[2] > p or (b[2] == p and op in "+*") else f"({b[1]})"
    n = {"+": a[0] + b[0], "-": a[0] - b[0], "*": a[0] * b[0], "/": a[0] // b[0]}[op]
    return _Val(n, f"{left} {op} {right}", p)


def _moves(state: tuple[_Val, ...]):
    """Every (i, j, op, a, b, result) combining two values into a whole positive number."""
    for i in range(len(state)):
        for j in range(i + 1, len(state)):
            a, b = (state[i], state[j]) if state[i][0] >= state[j][0] else (state[j], state[i])
            ops = ["+", "*"] + (["-"] if a[0] > b[0] else []) + (["/"] if b[0] > 1 and a[0] % b[0] == 0 else [])
            for op in ops:
                yield i, j, op, a, b, _combine(a, op, b)


def _closeness(r: int, target: int) -> float:
    """Heuristic distance of a new partial result from the target (0 = a hit); lower is better.
    Only the new result counts: a number left untouched near the target says nothing of the move."""
    d = abs(target - r) / target
    if 1 < r < target and target % r == 0:
        d = min(d, 0.35)    # a factor of the target is part way there: multiply up
    return d


class _Search:
    """Depth-first search; records the attempts (leaves written) up to the first hit."""

    def __init__(self, nums, target, rng, explore, breadth):
        self.target, self.rng, self.explore = target, rng, explore
        self.attempts = []      # [(steps, value)], steps = [(a, op, b, result)] from the start
        self.last_miss = 0      # sign of (value - target) of the last miss: +1 over, -1 short
        self.seen, self.tried = set(), set()
        self.root = tuple(_Val(n) for n in nums)
        self.breadth = breadth

    def run(self):
        # First pass: below the first pair, at most `breadth` moves before backing up to a new
        # pair (a person abandons a start that keeps missing). Second pass, rarely needed: all.
        found = self._visit(self.root, [])
        if found is None and self.breadth is not None:
            self.breadth, self.seen = None, set()
            found = self._visit(self.root, [])
        return found

    def _visit(self, state, steps):
        t = self.target
        if len(state) == 2:
            moves = sorted(_moves(state), key=lambda m: abs(m[5][0] - t))
            if not moves:
                return None
            _, _, op, a, b, r = moves[0]
            if r[1] in self.tried:
                return None     # written already in the first pass
            self.tried.add(r[1])
            self.attempts.append((steps + [(a, op, b, r)], r[0]))
            if r[0] == t:
                return r
            self.last_miss = 1 if r[0] > t else -1
            return None
        children = []
        for i, j, op, a, b, r in _moves(state):
            rest = tuple(v for k, v in enumerate(state) if k not in (i, j)) + (r,)
            key = tuple(sorted(v[0] for v in rest))
            if key in self.seen:
                continue  # the same numbers reached another way: nothing new to learn there
            self.seen.add(key)
            noise = math.exp(self.rng.gauss(0.0, self.explore)) if self.explore else 1.0
            if steps and len(rest) == 2:
                # Below the first pair, with two numbers left, look one step on: how close can
                # they get? (A person sees at a glance whether 30 and 47 can make 53.) At the
                # first pair of Countdown-3 this would be the answer itself, so the first move
                # is always chosen by closeness alone.
                score = min((abs(m[5][0] - t) / t for m in _moves(rest)), default=math.inf)
            else:
                score = _closeness(r[0], t)
            children.append((score * noise, (a, op, b, r), rest))
        children.sort(key=lambda c: c[0])
        previous, left = None, len(children)
        if steps and self.breadth is not None:
            # With two numbers left after the move, the scores above are exact: if the best
            # continuation misses, every sibling misses too, so back up at once.
            left = min(left, 1 if len(state) == 3 else self.breadth)
        while children and left:
            left -= 1
            last = self.attempts[-1][0] if self.attempts else None
            if previous is not None and self.last_miss and len(last) > len(steps) and last[len(steps)] is tried:
                # Use the last miss: over the target -> whatever lowers the result first, which is
                # a smaller value here if it is added or multiplied on, a larger one if subtracted
                # or divided by (`_direction`); short of it -> the other way.
                want = -self.last_miss * _direction(last, len(steps))
                children.sort(key=lambda c: (want * (c[1][3][0] - previous) <= 0, c[0]))
            score, tried, rest = children.pop(0)
            found = self._visit(rest, steps + [tried])
            if found is not None:
                return found
            previous = tried[3][0]
        return None


def _eq(a, op, b, r) -> str:
    return f"{a[0]} {op} {b[0]} = {r[0]}"


def _slipped(a, op, b, r, rng) -> str:
    wrong = r[0] + rng.choice((-2, -1, 1, 2, 10)) if r[0] > 2 else r[0] + 1
    return f"{a[0]} {op} {b[0]} = {wrong}. No: {_eq(a, op, b, r)}"


def _render(nums, target, attempts, rng, slip_at) -> str:
    """Words for the attempts written (each a (steps, value)); the last one is the hit."""
    sents = [rng.choice(("", f"Target {target} from {', '.join(map(str, nums))}.",
                         f"We need {target} from {', '.join(map(str, nums))}."))]
    prev_steps = None
    for k, (steps, value) in enumerate(attempts):
        shared = 0
        if prev_steps is not None:
            while shared < len(steps) - 1 and steps[shared][3] is prev_steps[shared][3]:
                shared += 1
            state = _state_after(nums, prev_steps[:shared])
            if shared:
                sents.append(f"Back up to {', '.join(str(v[0]) for v in state)}.")
            else:
                sents.append(rng.choice(("Back up.", "Try another pair.", "Start over.")))
        slip_step = rng.randrange(shared, len(steps)) if k == slip_at else None
        words = [_slipped(a, op, b, r, rng) if s == slip_step else _eq(a, op, b, r)
                 for s, (a, op, b, r) in enumerate(steps[shared:], start=shared)]
        if value == target:
            body = ". ".join(words) + rng.choice((f". That hits {target}.", f", the target.", "."))
        else:
            gap = value - target
            body = ". ".join(words) + f", not {target}. "
            body += f"{value} is {abs(gap)} too {'many' if gap > 0 else 'few'}"
            nxt = attempts[k + 1][0] if k + 1 < len(attempts) else None
            hint = _hint(steps, nxt, gap)
            body += f", so go {hint}." if hint else "."
        sents.append(body)
        prev_steps = steps
    return " ".join(s for s in sents if s)


def _direction(steps, k: int) -> int:
    """+1 if the final value grows with step k's result along this path, -1 if it shrinks: each
    later step that takes it as the right operand of - or / flips the sign (values are positive)."""
    sign, v = 1, steps[k][3]
    for a, op, b, r in steps[k + 1:]:
        if a is v or b is v:
            sign = -sign if (b is v and op in "-/") else sign
            v = r
    return sign


def _hint(steps, nxt, gap):
    """'lower than 30' when the miss asks for that (`_direction`) and the next attempt's first new
    step really moves that way, else None."""
    if nxt is None:
        return None
    d = 0
    while d < len(steps) - 1 and d < len(nxt) - 1 and nxt[d][3] is steps[d][3]:
        d += 1
    before, after = steps[d][3][0], nxt[d][3][0]
    want = -(1 if gap > 0 else -1) * _direction(steps, d)
    if want < 0 and after < before:
        return f"lower than {before}"
    if want > 0 and after > before:
        return f"higher than {before}"
    return None


def _state_after(nums, steps):
    state = [_Val(n) for n in nums]
    for a, op, b, r in steps:
        for v in (a, b):
            for i, w in enumerate(state):
                if w is v or w == v:  # the given numbers are rebuilt here, so equal, not identical
                    del state[i]
                    break
        state.append(r)
    return state


def _fallback(nums, target) -> tuple[str, str]:
    """The solver's expression (it may need fractions), its operations in evaluation order."""
    expr = solve(nums, target)
    if expr is None:
        raise ValueError(f"countdown problem {nums} -> {target} has no solution to write out")
    steps: list = []
    expression_steps(expr, steps)
    # A fraction in parentheses, so "55 / (55/24) = 24" reads (and parses) as meant.
    say = lambda x: str(x.numerator) if x.denominator == 1 else f"({x.numerator}/{x.denominator})"
    words = [f"{say(a)} {op} {say(b)} = {say(r)}." for a, op, b, r in steps]
    return " ".join(words) + f" That hits {target}.", expr


def write_search(problem: dict, *, template: str = "base", seed: int = 0, max_failed: int = 4,
                 dead_ends: str = "drawn", explore: float = 0.5, breadth: int | None = 2,
                 slip_rate: float = 0.0, max_tokens: int = 512,
                 count_tokens: Callable[[str], int] = estimate_tokens) -> SearchTrace:
    """One verified search trace for a Countdown problem `{"nums", "target"}` (module doc).

    Deterministic in `(problem, seed)` and the knobs. Raises ValueError when the problem has no
    solution, or when even the trace with no failed attempt does not fit `max_tokens`.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if dead_ends not in DEAD_ENDS:
        raise ValueError(f"dead_ends must be one of {DEAD_ENDS}, got {dead_ends!r}")
    nums, target = list(problem["nums"]), problem["target"]
    rng = random.Random(f"search/{seed}/{sorted(nums)}/{target}")
    search = _Search(nums, target, rng, explore, breadth)
    hit = search.run()
    slip = False
    if hit is None:
        reasoning, answer = _fallback(nums, target)
        candidates = [(reasoning, answer, 0, 0, False)]
    else:
        answer = hit[1]
        failed_all, success = search.attempts[:-1], search.attempts[-1]
        # The dead ends shown: the search's own, up to a cap drawn per problem in 1..max_failed,
        # so a long search shows 1, 2, 3 or 4 of them, not always the maximum (no ritual spike).
        if dead_ends == "all":
            cap = len(failed_all)
        else:
            cap = rng.randint(1, max_failed) if max_failed > 0 else 0
        shown = min(cap, len(failed_all))
        slip_draw = rng.random() < slip_rate
        candidates = []
        for keep in range(shown, -1, -1):       # drop failed attempts from the end to fit the cap
            written = failed_all[:keep] + [success]
            slip_at = rng.randrange(len(written)) if slip_draw else None  # which attempt slips
            words_rng = random.Random(f"render/{seed}/{keep}/{sorted(nums)}/{target}")
            text = _render(nums, target, written, words_rng, slip_at)
            candidates.append((text, answer, keep, len(failed_all) - keep, slip_at is not None))
    for reasoning, answer, failed, dropped, slip in candidates:
        completion = layout(reasoning, answer, template)
        tokens = count_tokens(completion)
        if tokens <= max_tokens:
            trace = SearchTrace(completion, reasoning, answer, failed, dropped, candidates[0][2] - failed,
                                slip, hit is None, tokens)
            verify(trace, problem)
            return trace
    raise ValueError(f"no search trace for {nums} -> {target} fits {max_tokens} tokens; raise max_tokens")


def verify(trace: SearchTrace, problem: dict) -> None:
    """Raise AssertionError unless the trace's answer is right and every equation it writes holds
    (a slip counts only when corrected at once), with no reflection phrase."""
    from aha_utils.analysis import has_reflection
    from aha_utils.rewards import written_equations
    if not countdown_correct(trace.answer, problem["nums"], problem["target"]):
        raise AssertionError(f"wrong answer {trace.answer!r} for {problem}")
    eqs = written_equations(trace.reasoning)
    bad = [e for e in eqs if not e.holds and not e.corrected]
    if bad or not eqs:
        raise AssertionError(f"false or no equations {bad} in {trace.reasoning!r}")
    if sum(not e.holds for e in eqs) != trace.slip:
        raise AssertionError(f"slip count wrong in {trace.reasoning!r}")
    if has_reflection(trace.completion):
        raise AssertionError(f"reflection phrase in {trace.reasoning!r}")
