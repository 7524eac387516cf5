"""The analysis side (aha_utils.analysis): reflection words on word boundaries, the Wilson
interval against independent computations, reading a run folder in the format train.py writes,
per-step statistics, and the before/after pairing of held-out problems."""

import json
import math
from pathlib import Path

import pytest

from aha_utils.analysis import (
    REFLECTION_PHRASES,
    REFLECTION_REGEX,
    before_after,
    completion_stats,
    find_runs,
    has_reflection,
    load_run,
    read_jsonl,
    reflection_counts,
    step_stats,
    wilson_interval,
)


# ----------------------------------------------------------------------------------------------
# Reflection words
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "Wait, that is wrong.", "wait", "44 + 19 = 63. WAIT. 63 + 35 = 98", "(wait)", "hmm...",
    "Let me check: 3 * 4 = 12", "let  me\ncheck", "I should double-check.", "double check it",
    "Let me re-check", "recheck the sum", "Alternatively, 44 - 19", "However, 98 is even",
    "I made a mistake above", "Let's try 5 * 6", "Let\u2019s try 5 * 6", "Verify: 98", "again",
    "Aha!",
])
def test_reflection_phrases_that_must_match(text):
    assert has_reflection(text), text


@pytest.mark.parametrize("text", [
    "await the result", "the waiter came", "waiting", "waited", "verifying", "verified",
    "checked", "I check it", "against", "gains", "hmmm", "ahaa", "howevers", "made a mistake",
    "lets try", "", "44 + 19 + 35 </think>\n<answer> 44 + 19 + 35 </answer>",
])
def test_reflection_phrases_that_must_not_match(text):
    assert not has_reflection(text), reflection_counts(text)


def test_reflection_counts_on_a_crafted_text():
    text = ("Wait, 44 + 19 = 63. But wait, let me check again. Hmm, waiter? Let me verify: "
            "63 + 35 = 98. However I made a mistake. Wait.")
    counts = reflection_counts(text)
    assert set(counts) == set(REFLECTION_PHRASES)          # every phrase is a key
    expected = {"wait": 3, "but wait": 1, "let me check": 1, "check again": 1, "again": 1, "hmm": 1,
                "let me verify": 1, "verify": 1, "however": 1, "i made a mistake": 1}
    assert {p: c for p, c in counts.items() if c} == expected
    assert reflection_counts("") == dict.fromkeys(REFLECTION_PHRASES, 0)


def test_reflection_regex_marks_the_longest_phrase():
    marked = REFLECTION_REGEX.sub(lambda m: f"[{m.group(0)}]", "But wait, the waiter said: WAIT. Let’s try.")
    assert marked == "[But wait], the waiter said: [WAIT]. [Let’s try]."


def test_phrases_are_lowercase_and_unique():
    assert len(set(REFLECTION_PHRASES)) == len(REFLECTION_PHRASES)
    assert all(p == p.lower().strip() for p in REFLECTION_PHRASES)


# ----------------------------------------------------------------------------------------------
# Wilson interval
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.2775),        # textbook values (Wilson 1927; Newcombe 1998, table I)
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),   # Newcombe 1998, example (a)
])
def test_wilson_textbook_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def _score_interval_by_bisection(k, n, z=1.959964):
    """The Wilson interval from its definition, not its closed form: the p at which the score
    statistic |k/n - p| / sqrt(p (1 - p) / n) equals z, found by bisection on each side."""
    phat = k / n

    def outside(p):
        return abs(phat - p) > z * math.sqrt(p * (1 - p) / n)

    def boundary(a, b):   # `a` inside, `b` outside (or the end of [0, 1])
        if not outside(b):
            return b
        for _ in range(200):
            mid = (a + b) / 2
            a, b = (a, mid) if outside(mid) else (mid, b)
        return (a + b) / 2

    return boundary(phat, 0.0), boundary(phat, 1.0)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 3), (7, 8), (0, 500), (3, 500), (250, 500), (128, 128)])
def test_wilson_equals_the_score_interval(k, n):
    assert wilson_interval(k, n) == pytest.approx(_score_interval_by_bisection(k, n), abs=1e-9)


def test_wilson_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="must lie in"):
        wilson_interval(11, 10)


# ----------------------------------------------------------------------------------------------
# A run folder, written the way aha_utils/train.py writes one
# ----------------------------------------------------------------------------------------------
PROBLEMS = [{"nums": [44, 19, 35], "target": 98, "solution": "44 + 19 + 35"},
            {"nums": [5, 18, 61], "target": 74, "solution": "61 - (5 - 18)"},
            {"nums": [45, 54, 48], "target": 18, "solution": "54 / (48 - 45)"}]


def _jsonl(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _eval_rows(completions, correct):
    return [{"problem": p, "completion": c, "correct": float(ok), "format_soft": 1.0}
            for p, c, ok in zip(PROBLEMS, completions, correct)]


def _sample_rows(texts, rewards):
    return [{"prompt": f"prompt {i // 2}", "completion": t, "reward": r, "correct": float(r == 1.0),
             "format_soft": float(r > 0), "format_strict": 0.0} for i, (t, r) in enumerate(zip(texts, rewards))]


def write_run(out: Path, *, summary=True, sample_steps=(1, 3), eval_steps=(0, 3)):
    """A 3-step run: metrics of every step, evals at 0 and 3, completions of some steps."""
    metrics = [{"step": s, "reward_mean": 0.1 * s, "reward_std": 0.1, "correct_mean": 0.0,
                "correct_std": 0.0, "format_soft_mean": 0.3 * s, "format_soft_std": 0.2,
                "accuracy": 0.0, "format_rate": 0.3 * s, "completion_len_mean": 30.0 + s,
                "completion_len_max": 64, "truncated_frac": 0.5, "loss": 0.01, "kl": None,
                "step_time_s": 1.0} for s in (1, 2, 3)]
    metrics[-1].update(eval_accuracy=1 / 3, eval_format_rate=1.0)
    _jsonl(out / "metrics.jsonl", metrics)
    _jsonl(out / "eval.jsonl", [{"step": 0, "accuracy": 0.0, "format_rate": 0.0, "n": 3},
                                {"step": 3, "accuracy": 1 / 3, "format_rate": 1.0, "n": 3}])
    samples = {1: _sample_rows(["<answer>\n<answer>", "44 + 19 </think> <answer> 63 </answer>",
                                "no", "x"], [0.0, 0.1, 0.0, 0.0]),
               3: _sample_rows(["Wait, 44 + 19 = 63. Let me check again. 63 + 35 = 98 </think>",
                                "Hmm. However </think> <answer> 44 + 19 + 35 </answer>",
                                "fine </think> <answer> 1 </answer>", "the waiter waits"],
                               [0.0, 1.0, 0.1, 0.0])}
    for s in sample_steps:
        _jsonl(out / "completions" / f"step_{s:05d}.jsonl", samples[s])
    evals = {0: _eval_rows(["<answer>\n<answer>\n", "<answer>\n", "</think>"], [0, 0, 0]),
             3: _eval_rows(["... </think> <answer> 44 + 19 + 35 </answer>",
                            "... </think> <answer> 61 + 18 </answer>",
                            "... </think> <answer> 54 / 3 </answer>"], [1, 0, 0])}
    for s in eval_steps:
        _jsonl(out / "completions" / f"eval_{s:05d}.jsonl", evals[s])
    if summary:
        out.joinpath("summary.json").write_text(json.dumps({
            "task": "countdown", "model": "gemma3-270m", "hardware": "1 x cpu (cpu)",
            "wall_minutes": 0.5, "config": {"steps": 3},
            "eval": {"before": {"accuracy": 0.0, "accuracy_ci95": [0.0, 0.5615], "format_rate": 0.0,
                                "n": 3, "step": 0},
                     "after": {"accuracy": 1 / 3, "accuracy_ci95": [0.0615, 0.7924],
                               "format_rate": 1.0, "n": 3, "step": 3}}}, indent=2))
    return out


def test_load_run_reads_every_file(tmp_path):
    run = load_run(write_run(tmp_path / "countdown"))
    assert run["name"] == "countdown"
    assert run["summary"]["task"] == "countdown"
    assert [m["step"] for m in run["metrics"]] == [1, 2, 3]
    assert [e["step"] for e in run["evals"]] == [0, 3]
    assert list(run["samples"]) == [1, 3] and len(run["samples"][3]) == 4
    assert list(run["eval_completions"]) == [0, 3]
    assert run["eval_completions"][3][0]["problem"] == PROBLEMS[0]


def test_load_run_tolerates_missing_optional_files(tmp_path):
    out = write_run(tmp_path / "partial", summary=False, sample_steps=(3,), eval_steps=(3,))
    (out / "eval.jsonl").unlink()
    run = load_run(out)
    assert run["summary"] is None and run["evals"] == []
    assert list(run["samples"]) == [3] and list(run["eval_completions"]) == [3]
    assert before_after(run) == []                 # one evaluation: nothing to pair
    only_metrics = tmp_path / "only_metrics"
    _jsonl(only_metrics / "metrics.jsonl", [{"step": 1, "reward_mean": 0.0}])
    run = load_run(only_metrics)
    assert run["samples"] == {} and run["eval_completions"] == {} and step_stats(run) == []
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path / "does_not_exist")


def test_read_jsonl_skips_only_a_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_find_runs(tmp_path):
    write_run(tmp_path / "b_run")
    write_run(tmp_path / "a_run", summary=False)
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "README.md").write_text("runs")
    assert [p.name for p in find_runs(tmp_path)] == ["a_run", "b_run"]
    assert find_runs(tmp_path / "nothing_here") == []


# ----------------------------------------------------------------------------------------------
# Statistics and the before/after pairing
# ----------------------------------------------------------------------------------------------
def test_completion_stats_on_crafted_rows():
    rows = [{"completion": "one two three", "reward": 1.0},        # 13 chars, 3 words
            {"completion": "Wait wait wait wait", "reward": 0.0},  # 19 chars, 4 words
            {"completion": "a", "reward": 0.1},                    # 1 char, 1 word
            {"completion": "hmm ok", "reward": 0.1}]               # 6 chars, 2 words
    s = completion_stats(rows)
    assert s["n"] == 4
    assert s["chars_mean"] == pytest.approx((13 + 19 + 1 + 6) / 4)
    assert s["chars_median"] == pytest.approx((6 + 13) / 2)
    assert s["words_mean"] == pytest.approx(10 / 4) and s["words_median"] == pytest.approx(2.5)
    assert s["reflection_frac"] == pytest.approx(0.5)
    assert s["phrase_frac"]["wait"] == pytest.approx(0.25)      # four "wait"s count once
    assert s["phrase_frac"]["hmm"] == pytest.approx(0.25) and s["phrase_frac"]["again"] == 0
    assert s["reward_mean"] == pytest.approx(1.2 / 4)
    assert completion_stats([{"completion": "x", "correct": 0.0}])["reward_mean"] is None
    with pytest.raises(ValueError):
        completion_stats([])


def test_step_stats_follows_the_saved_steps(tmp_path):
    run = load_run(write_run(tmp_path / "run"))
    stats = step_stats(run)
    assert [s["step"] for s in stats] == [1, 3]
    assert stats[0]["reflection_frac"] == 0.0
    assert stats[1]["reflection_frac"] == pytest.approx(0.5)    # "the waiter waits" does not count
    assert stats[1]["reward_mean"] == pytest.approx(1.1 / 4)
    assert stats[1]["chars_mean"] > stats[0]["chars_mean"]
    evals = step_stats(run, "eval_completions")
    assert [s["step"] for s in evals] == [0, 3] and evals[0]["reward_mean"] is None
    with pytest.raises(ValueError, match="source"):
        step_stats(run, "metrics")


def test_before_after_pairs_the_same_problems(tmp_path):
    out = write_run(tmp_path / "run")
    after = read_jsonl(out / "completions" / "eval_00003.jsonl")
    # Reorder the last evaluation, drop one problem and reorder a problem's keys: the pairing
    # must follow the problem, not the line.
    after = [after[2], {**after[0], "problem": dict(reversed(list(after[0]["problem"].items())))}]
    _jsonl(out / "completions" / "eval_00003.jsonl", after)
    pairs = before_after(load_run(out), k=None)
    assert [p["problem"] for p in pairs] == [PROBLEMS[0], PROBLEMS[2]]
    for p in pairs:
        assert (p["before_step"], p["after_step"]) == (0, 3)
        assert p["before"]["problem"] == p["problem"]
        assert p["after"]["problem"] == p["problem"]        # equal as dicts
    assert pairs[0]["before"]["correct"] == 0.0 and pairs[0]["after"]["correct"] == 1.0
    assert "44 + 19 + 35" in pairs[0]["after"]["completion"]
    assert len(before_after(load_run(out), k=1)) == 1


def test_mcnemar_matches_scipys_exact_binomial_test():
    from scipy.stats import binomtest

    from aha_utils.analysis import mcnemar
    rng = __import__("random").Random(0)
    for _ in range(50):
        n = rng.randint(1, 200)
        a = [rng.random() < 0.4 for _ in range(n)]
        b = [x if rng.random() < 0.7 else rng.random() < 0.6 for x in a]
        out = mcnemar(a, b)
        k = out["a_only"] + out["b_only"]
        ref = binomtest(out["b_only"], k, 0.5).pvalue if k else 1.0
        assert out["p_value"] == pytest.approx(ref, rel=1e-9, abs=1e-12)
        assert out["diff"] == pytest.approx((sum(b) - sum(a)) / n)
    assert mcnemar([1, 1, 0], [1, 1, 0])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar([1], [1, 0])


def test_paired_correct_matches_by_problem_not_position():
    from aha_utils.analysis import paired_correct
    q = [{"nums": [1, 2, 3], "target": t} for t in (6, 7, 9)]
    a = [{"problem": q[0], "correct": 1}, {"problem": q[1], "correct": 0}, {"problem": q[2], "correct": 1}]
    b = [{"problem": q[2], "correct": 0}, {"problem": q[0], "correct": 1}]
    assert paired_correct(a, b) == ([True, True], [True, False])
    with pytest.raises(ValueError, match="share no problem"):
        paired_correct(a[:1], b[:1])
