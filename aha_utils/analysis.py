"""The text side of the aha-moment analysis: pure Python and NumPy, no JAX.

Reads what a run writes (`metrics.jsonl`, `eval.jsonl`, `completions/*.jsonl`, `summary.json`)
and measures it: accuracy with a confidence interval, response lengths, and how often
completions use reflection words ("wait", "let me check", ...). Notebook 06 draws these; the
training loop uses `wilson_interval` for the held-out accuracy in `summary.json`.

Reflection words are a proxy a ritual can fake, so the aha is also measured on what is written
(issue 30): `search_profile` finds checks that fail on a true value and are followed by a
different attempt, counts attempts and false steps; `aha_metrics` aggregates them into
`summary.json`'s `self_correction` and `false_step_rate` and an attempts histogram.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from aha_utils.jsonl import read_jsonl  # noqa: F401  (the one reader; re-exported)


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (by default) Wilson score interval for a binomial proportion `successes / n`.

    Wilson, not the normal approximation `p +- z sqrt(p(1-p)/n)`: at the accuracies a small model
    starts from (0 of 500) the normal interval collapses to [0, 0], which claims a certainty that
    500 problems do not give; Wilson's stays honest near 0 and 1.
    """
    if n < 1:
        raise ValueError(f"n={n}: an interval needs at least one trial")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in [0, n={n}]")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a, b) -> dict:
    """McNemar's exact test for two arms answering the same problems: `a[i]`, `b[i]` whether each
    got problem i right. Only the discordant pairs carry information: `b_only` (b right, a wrong)
    and `a_only`; under "no difference" each is Binomial(n_discordant, 1/2). Returns the counts,
    the accuracy difference `b - a` and the two-sided exact p-value."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired results need the same non-zero length; got {len(a)}, {len(b)}")
    a_only = sum(bool(x) and not bool(y) for x, y in zip(a, b))
    b_only = sum(bool(y) and not bool(x) for x, y in zip(a, b))
    n, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n if n else 1.0
    return {"n": len(a), "a_only": a_only, "b_only": b_only,
            "diff": (b_only - a_only) / len(a), "p_value": min(1.0, 2 * tail)}


def paired_correct(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[bool], list[bool]]:
    """Two evaluations' `correct` flags on the problems both answered, matched by problem (not by
    position), in the order of `rows_a`; an error when they share none."""
    by_key = {problem_key(r["problem"]): bool(r["correct"]) for r in rows_b}
    common = [r for r in rows_a if problem_key(r["problem"]) in by_key]
    if not common:
        raise ValueError("the two evaluations share no problem: were they run on the same test set?")
    return ([bool(r["correct"]) for r in common],
            [by_key[problem_key(r["problem"])] for r in common])


# ----------------------------------------------------------------------------------------------
# Reflection words
# ----------------------------------------------------------------------------------------------
REFLECTION_PHRASES: tuple[str, ...] = (
    "wait", "but wait", "hmm", "aha",
    "let me check", "let me verify", "verify", "double-check", "re-check", "recheck",
    "check again", "again", "try again", "let's try", "alternatively", "however",
    "rethink", "re-evaluate", "reconsider", "i made a mistake",
)
"""Phrases counted as reflection, in the spirit of the keyword lists of the R1-Zero "aha" analyses
(DeepSeek-R1's "Wait, wait. Wait. That's an aha moment", oat-zero's self-reflection keywords,
SimpleRL-Zoo's tracking of verification behaviour).

Design decisions:
- A fixed, short list, so numbers are comparable across runs and readers can audit it. Keyword
  counts are a proxy: "again" also appears in plain prose, and a model can write "wait" without
  reconsidering anything (oat-zero calls this superficial self-reflection). Read the completions.
- Phrases are counted independently, so "but wait" also counts as "wait": each phrase's own
  frequency then means what its name says.
- Matching is case-insensitive on word boundaries ("await", "waiter", "verifying" do not count);
  inside a phrase, spaces match any run of whitespace, a hyphen also matches a space
  ("double check"), and an apostrophe also matches the typographic one ("let’s try").
"""


def _phrase_pattern(phrase: str) -> re.Pattern:
    parts = []
    for ch in phrase:
        if ch == " ":
            parts.append(r"\s+")
        elif ch == "-":
            parts.append(r"[-\s]")
        elif ch == "'":
            parts.append("['\u2019]")
        else:
            parts.append(re.escape(ch))
    # Lookarounds rather than \b: a boundary means "no word character on that side", whatever
    # the phrase starts or ends with.
    return re.compile(r"(?<!\w)" + "".join(parts) + r"(?!\w)", re.IGNORECASE)


_PATTERNS = {phrase: _phrase_pattern(phrase) for phrase in REFLECTION_PHRASES}


def reflection_counts(text: str) -> dict[str, int]:
    """Occurrences of each phrase of `REFLECTION_PHRASES` in `text` (every phrase is a key)."""
    return {phrase: len(pattern.findall(text)) for phrase, pattern in _PATTERNS.items()}


def has_reflection(text: str) -> bool:
    """Whether `text` holds at least one reflection phrase."""
    return any(pattern.search(text) for pattern in _PATTERNS.values())


# One pattern for any phrase, longest first so that "but wait" wins over "wait" where both fit.
REFLECTION_REGEX = re.compile("|".join(
    f"(?:{_PATTERNS[p].pattern})" for p in sorted(REFLECTION_PHRASES, key=len, reverse=True)),
    re.IGNORECASE)
"""Matches any reflection phrase; for marking them in text (`REFLECTION_REGEX.sub(...)`). Its
matches do not overlap, so count with `reflection_counts`, which counts each phrase on its own."""


# ----------------------------------------------------------------------------------------------
# Reading a run folder
# ----------------------------------------------------------------------------------------------
def _completions_by_step(folder: Path, prefix: str) -> dict[int, list[dict]]:
    out = {}
    paths = [*folder.glob(f"{prefix}_*.jsonl"), *folder.glob(f"{prefix}_*.jsonl.gz")]
    for path in sorted(paths) if folder.is_dir() else []:
        number = path.name.split(".")[0][len(prefix) + 1:]
        if number.isdigit():
            out[int(number)] = read_jsonl(path)
    return dict(sorted(out.items()))


def load_run(path: str | Path) -> dict:
    """Everything `python -m aha_utils.train` wrote in the run folder `path`.

    Returns `{"name", "path", "summary", "metrics", "evals", "samples", "eval_completions"}`:
    `summary` is `summary.json` (None while a run is unfinished), `metrics` and `evals` the rows
    of `metrics.jsonl` and `eval.jsonl`, `samples[step]` the sampled completions of that step
    (`completions/step_XXXXX.jsonl`: `problem`, `completion`, `tokens`, `truncated`, `reward`
    and each reward term) and
    `eval_completions[step]` the greedy held-out ones (`completions/eval_XXXXX.jsonl`: `problem`,
    `completion`, `correct`, `format_soft`), both ordered by step.

    Every file is optional, so a folder committed with only some steps' completions (or a run
    still in progress) loads; a folder with none of them is an error, as it is not a run.
    """
    path = Path(path)
    summary_path = path / "summary.json"
    run = {"name": path.name, "path": path,
           "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None,
           "metrics": read_jsonl(path / "metrics.jsonl"), "evals": read_jsonl(path / "eval.jsonl"),
           "samples": _completions_by_step(path / "completions", "step"),
           "eval_completions": _completions_by_step(path / "completions", "eval")}
    if not any(run[k] for k in ("summary", "metrics", "evals", "samples", "eval_completions")):
        raise FileNotFoundError(f"{path} holds no summary.json, metrics.jsonl, eval.jsonl or "
                                "completions/: not a run folder of `python -m aha_utils.train`")
    return run


def find_runs(root: str | Path) -> list[Path]:
    """The run folders directly under `root` (those with `summary.json` or `metrics.jsonl`),
    sorted by name; `[]` if `root` does not exist."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir()
                  if d.is_dir() and ((d / "summary.json").exists() or (d / "metrics.jsonl").exists()))


# ----------------------------------------------------------------------------------------------
# Statistics over completions
# ----------------------------------------------------------------------------------------------
def completion_stats(rows: list[dict]) -> dict:
    """Length and reflection statistics of a list of completion rows (each with `completion`).

    Lengths are in characters and in whitespace-separated words, not tokens: they need no
    tokenizer and read the same for any model (`metrics.jsonl` has the token lengths).
    `phrase_frac[p]` is the fraction of completions that use phrase `p` at least once, not
    occurrences per word: a degenerate completion that repeats "wait" fifty times then counts
    once, as one completion, and cannot outweigh the rest. `reward_mean` is None for rows
    without a `reward` (the greedy evaluation stores `correct` and `format_soft` only).
    """
    texts = [r["completion"] for r in rows]
    if not texts:
        raise ValueError("completion_stats needs at least one completion row")
    chars = np.array([len(t) for t in texts], float)
    words = np.array([len(t.split()) for t in texts], float)
    counts = [reflection_counts(t) for t in texts]
    rewards = [r["reward"] for r in rows if "reward" in r]
    return {"n": len(texts),
            "chars_mean": float(chars.mean()), "chars_median": float(np.median(chars)),
            "words_mean": float(words.mean()), "words_median": float(np.median(words)),
            "reflection_frac": float(np.mean([any(c.values()) for c in counts])),
            "phrase_frac": {p: float(np.mean([c[p] > 0 for c in counts])) for p in REFLECTION_PHRASES},
            "reward_mean": float(np.mean(rewards)) if rewards else None}


def step_stats(run: dict, source: str = "samples") -> list[dict]:
    """`completion_stats` of each step with saved completions, as `[{"step": s, ...}]` ordered by
    step. `source` is `"samples"` (sampled at temperature 1 during training) or
    `"eval_completions"` (greedy, held out). Steps whose file is empty are skipped."""
    if source not in ("samples", "eval_completions"):
        raise ValueError(f"source={source!r}; choose 'samples' or 'eval_completions'")
    return [{"step": step, **completion_stats(rows)} for step, rows in run[source].items() if rows]


def problem_key(problem: dict) -> str:
    """A hashable identity of a problem dict (key order does not matter)."""
    return json.dumps(problem, sort_keys=True)


def before_after(run: dict, k: int | None = 5) -> list[dict]:
    """The same held-out problems answered at the first and the last evaluation.

    Returns up to `k` (all if None) `{"problem", "before", "after", "before_step", "after_step"}`
    in the order of the first evaluation, `before`/`after` being the evaluation rows
    (`completion`, `correct`, `format_soft`). Problems are matched by their dict, not by position,
    so a file reordered or cut short still pairs correctly; a problem missing from either side is
    left out. Fewer than two evaluations with completions give `[]`.
    """
    evals = {s: rows for s, rows in run["eval_completions"].items() if rows}
    if len(evals) < 2:
        return []
    first, last = min(evals), max(evals)
    after = {problem_key(r["problem"]): r for r in evals[last]}
    pairs = [{"problem": r["problem"], "before": r, "after": after[problem_key(r["problem"])],
              "before_step": first, "after_step": last}
             for r in evals[first] if problem_key(r["problem"]) in after]
    return pairs if k is None else pairs[:k]


# ----------------------------------------------------------------------------------------------
# The aha, measured: checks that fail, attempts, false steps (Countdown)
# ----------------------------------------------------------------------------------------------
# A check against the target: after an equation's value, "not 53" / "53? no" / "too high". Words
# only, read in the text between the equation and the next one (at most `_CHECK_WINDOW` chars).
_MISS_WORDS = re.compile(
    r"\b(?:too\s+(?:high|big|large|many|much|low|small|few|little)|short|over\s+by|under\s+by|"
    r"off\s+by|misses|miss|no\s+good|doesn'?t\s+work|does\s+not\s+work|not\s+(?:it|enough|the\s+target))\b",
    re.IGNORECASE)
_NOT_NUMBER = re.compile(r"(?:\bnot|\u2260|!=)\s*(?:equal\s+to\s+|the\s+target\s+)?(-?\d+)\b", re.IGNORECASE)
_CHECK_WINDOW = 80


def _attempt_key(left: str) -> str:
    """One step's identity: `47 + 30` and `30 + 47` are the same step."""
    parts = left.split()
    if len(parts) == 3 and parts[1] in "+*":
        parts = sorted((parts[0], parts[2])) + [parts[1]]
    return " ".join(parts)


def search_profile(completion: str, target: int) -> dict:
    """How a completion searches (Countdown): its attempts, failed checks and false steps.

    A *failed check* is an equation that holds, whose value is not the target, followed (before
    the next equation) by words that compare it with the target and find it different: "77, not
    53", "that's 77, too high". A false equation, or a "miss" claimed for a value that does hit
    the target, is not a check. Equations are those of `aha_utils.steps` (reasoning only).
    Attempts are the runs of equations between failed checks: the one after the last check
    counts when it writes any equation. A completion *self-corrects* when some failed check is
    followed by a different attempt (not the same steps written out once more).

    Returns `{"attempts", "failed_checks", "self_corrects", "false_step", "equations"}`.
    """
    from aha_utils.steps import reasoning_text, scan   # steps imports nothing of the analysis

    text = reasoning_text(completion)
    equations, _ = scan(text)
    runs: list[set] = [set()]
    failed = 0
    for k, eq in enumerate(equations):
        runs[-1].add(_attempt_key(eq.left))
        stop = equations[k + 1].start if k + 1 < len(equations) else len(text)
        window = text[eq.end:min(stop, eq.end + _CHECK_WINDOW)]
        said = _NOT_NUMBER.search(window)
        missed = (said is not None and int(said.group(1)) == target) or _MISS_WORDS.search(window)
        if missed and eq.holds and eq.right_value is not None and eq.right_value != target:
            failed += 1
            runs.append(set())
    attempts = failed + (1 if runs[-1] else 0)
    corrects = any(runs[i + 1] and runs[i + 1] != runs[i] for i in range(len(runs) - 1))
    return {"attempts": attempts, "failed_checks": failed, "self_corrects": bool(corrects),
            "false_step": any(not e.holds and not e.corrected for e in equations),
            "equations": len(equations)}


# The scalar aha metrics a run logs per step and per evaluation (`aha_metrics` has more).
AHA_KEYS = ("self_correction", "self_correction_any", "false_step_rate", "attempts_mean")


def aha_metrics(rows: list[dict]) -> dict:
    """The aha over Countdown completion rows `{"completion", "problem", "correct"?}`.

    `correct` (1/0 or bool) is recomputed from the completion when absent. Returns:
    - `self_correction`: share of completions that self-correct AND end correct (the headline,
      `summary.json`'s `eval.*.self_correction`); `self_correction_any`: that self-correct at all;
    - `self_correction_if_correct` / `_if_wrong`: the share that self-correct among completions
      ending correct / wrong (None when there are none);
    - `attempts_hist` (`{attempts: count}`, so a fixed ritual shows as a spike) and
      `attempts_mean`; `false_step_rate`: share of correct completions whose written steps hold a
      false equation (None without correct ones); `n`, `n_correct`.
    """
    from aha_utils.rewards import countdown_correct, extract_answer

    if not rows:
        raise ValueError("aha_metrics needs at least one completion row")
    profiles, correct = [], []
    for r in rows:
        q = r["problem"]
        ok = r.get("correct")
        if ok is None:
            answer = extract_answer(r["completion"])
            ok = answer is not None and countdown_correct(answer, q["nums"], q["target"])
        profiles.append(search_profile(r["completion"], q["target"]))
        correct.append(bool(ok))
    n, n_ok = len(rows), sum(correct)
    sc = [p["self_corrects"] for p in profiles]
    share = lambda xs: float(np.mean(xs)) if xs else None
    hist: dict[int, int] = {}
    for p in profiles:
        hist[p["attempts"]] = hist.get(p["attempts"], 0) + 1
    return {"n": n, "n_correct": n_ok,
            "self_correction": float(np.mean([s and c for s, c in zip(sc, correct)])),
            "self_correction_any": float(np.mean(sc)),
            "self_correction_if_correct": share([s for s, c in zip(sc, correct) if c]),
            "self_correction_if_wrong": share([s for s, c in zip(sc, correct) if not c]),
            "attempts_hist": dict(sorted(hist.items())),
            "attempts_mean": float(np.mean([p["attempts"] for p in profiles])),
            "false_step_rate": share([p["false_step"] for p, c in zip(profiles, correct) if c])}
