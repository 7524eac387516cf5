"""The aha metrics where a run logs them: `evaluation.search_summary` (eval rows, summary.json,
per-step metrics) and the SFT CLI's search-trace options."""

import json

import pytest

from aha_utils import sft
from aha_utils.analysis import AHA_KEYS
from aha_utils.data.countdown import make_problems
from aha_utils.data.search_traces import write_search
from aha_utils.evaluation import search_summary
from aha_utils.runlog import eval_summary


def _rows(problems, **options):
    rows = []
    for i, q in enumerate(problems):
        trace = write_search(q, seed=i, **options)
        rows.append({"problem": q, "completion": trace.completion, "correct": 1.0,
                     "failed": trace.failed})
    return rows


def test_search_summary_counts_the_searches_of_written_traces():
    rows = _rows(make_problems(60, seed=3))
    out = search_summary("countdown", rows)
    searched = sum(r["failed"] > 0 for r in rows)
    assert 0 < searched < len(rows)
    assert out["self_correction"] == pytest.approx(searched / len(rows))
    assert out["false_step_rate"] == 0.0
    assert set(AHA_KEYS) <= set(out)
    assert sum(out["attempts_hist"].values()) == len(rows)
    json.dumps(out)                                   # JSON-ready: string keys


def test_search_summary_is_empty_for_gsm8k_and_no_rows():
    assert search_summary("gsm8k", [{"completion": "x", "problem": {}}]) == {}
    assert search_summary("countdown", []) == {}


def test_eval_summary_keeps_the_aha_metrics_when_present():
    row = {"accuracy": 0.5, "format_rate": 1.0, "n": 4, "step": 0}
    assert set(eval_summary(row)) == {"accuracy", "accuracy_ci95", "format_rate", "n", "step"}
    aha = search_summary("countdown", _rows(make_problems(8, seed=1)))
    assert {k: eval_summary({**row, **aha})[k] for k in aha} == aha


def test_sft_cli_search_options():
    args = sft.parse_args(["--task", "countdown", "--steps", "2", "--out", "x",
                           "--search-fraction", "0.15", "--max-failed", "3"])
    cfg = type("Cfg", (), {"max_new_tokens": 512})()
    tok = type("Tok", (), {"encode": staticmethod(lambda s, add_bos=False: s.split())})()
    opts = sft.search_options(args, cfg, tok)
    assert (opts["search_fraction"], opts["max_failed"], opts["max_tokens"]) == (0.15, 3, 512)
    assert opts["count_tokens"]("a b c") == 3
    assert sft.search_options(sft.parse_args(["--task", "countdown", "--steps", "2", "--out", "x"]),
                              cfg, tok) == {}
    for bad in (["--search-fraction", "1.5"], ["--task", "gsm8k", "--search-fraction", "0.5"]):
        argv = ["--task", "countdown", "--steps", "2", "--out", "x", *bad]
        with pytest.raises(SystemExit):
            sft.parse_args(argv)


def test_gzipped_run_logs_read_like_plain_ones(tmp_path):
    import gzip

    from aha_utils.analysis import load_run
    from aha_utils.jsonl import read_jsonl, write_jsonl
    rows = [{"step": 1, "x": 0.5}, {"step": 2, "x": 1.5}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress((tmp_path / "a.jsonl").read_bytes()))
    assert read_jsonl(tmp_path / "b.jsonl.gz") == read_jsonl(tmp_path / "b.jsonl") == rows
    run = tmp_path / "run"
    write_jsonl(run / "metrics.jsonl", rows)
    write_jsonl(run / "completions" / "eval_00000.jsonl", [{"completion": "a"}])
    packed = run / "completions" / "eval_00010.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"completion": "b"}\n'))
    (run / "summary.json").write_text('{"task": "countdown"}')
    evals = load_run(run)["eval_completions"]
    assert {k: [r["completion"] for r in v] for k, v in evals.items()} == {0: ["a"], 10: ["b"]}
