"""SFT checkpoints and `--resume` (issue 33): a run killed mid-way and resumed ends where a straight
run ends, with the same metrics rows; other settings are refused by name; a damaged newest
checkpoint falls back to the one before; `--resume` with nothing to resume is one line.

The toy model and word tokenizer of tests/test_sft.py: a step costs milliseconds."""

import shutil

import jax
import numpy as np
import pytest

from aha_utils import sft
from aha_utils.checkpoint import Checkpointer
from aha_utils.data.countdown import make_problems
from aha_utils.jsonl import read_jsonl
from tests.test_reliability import truncate_arrays
from tests.test_sft import TOK, params_of, tiny_model

# 8 steps of 2 over 5 problems: epochs straddle steps, so a resume that restarted the data order
# (or drew it anew) would train other rows at every resumed step. Checkpoints at 1, 3, 6, 8.
ARGS = ["--task", "countdown", "--steps", "8", "--batch", "2", "--lr", "1e-2",
        "--train-problems", "5", "--eval-n", "2", "--max-new-tokens", "8",
        "--checkpoint-every", "3"]


def cli(out, *extra):
    return sft.parse_args([*ARGS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    model = tiny_model(seed=1)
    summary = sft.run(cli(out), model=model, tokenizer=TOK)
    return out, params_of(model), summary


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The same run killed during its 8th step (a disconnect): checkpoints 1 (orbax saves a run's
    first step), 3 and 6 and metrics rows 1-7, so a resume must drop row 7 and run it again."""
    out = tmp_path_factory.mktemp("stopped")
    real, calls = sft.sft_step, []

    def dies_in_step_8(*a, **k):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sft, "sft_step", dies_in_step_8)
        with pytest.raises(KeyboardInterrupt):
            sft.run(cli(out), model=tiny_model(seed=1), tokenizer=TOK)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1", "3", "6"]
    assert [r["step"] for r in read_jsonl(out / "sft_metrics.jsonl")] == list(range(1, 8))
    return out


def resume(stopped, tmp_path, *extra):
    """`--resume` on a copy of the stopped run, into a model of other weights: every parameter
    must come from the checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    model = tiny_model(seed=7)
    summary = sft.run(cli(out, "--resume", *extra), model=model, tokenizer=TOK)
    return out, params_of(model), summary


def assert_same_run(straight, out, params, summary):
    """Parameters, every metrics row and the summary's numbers of the straight run."""
    straight_out, straight_params, straight_summary = straight
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 params, straight_params)
    rows, want = read_jsonl(out / "sft_metrics.jsonl"), read_jsonl(straight_out / "sft_metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))
    for row, ref in zip(rows, want, strict=True):
        assert row == pytest.approx(ref, rel=1e-6), row["step"]
    assert summary["final"] == pytest.approx(straight_summary["final"], rel=1e-6)
    assert summary["eval"]["before"] == straight_summary["eval"]["before"]   # kept, not re-run
    assert not (out / "checkpoints").exists() and (out / "params").is_dir()


def test_a_resumed_run_equals_a_straight_run(straight, stopped, tmp_path, capsys):
    # the checkpoint cadence may change on a resume; what trains may not
    out, params, summary = resume(stopped, tmp_path, "--checkpoint-every", "4")
    assert "SFT: resuming after step 6 of 8" in capsys.readouterr().out
    assert summary["resumed_from"] == 6
    assert_same_run(straight, out, params, summary)
    # straight: the params moved (so equality above is not two untrained models)
    assert not np.allclose(straight[1]["embedding"], params_of(tiny_model(seed=1))["embedding"])


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(straight, stopped, tmp_path,
                                                                    capsys):
    copy = tmp_path / "stopped"
    shutil.copytree(stopped, copy)
    truncate_arrays(copy / "checkpoints" / "6")
    out, params, summary = resume(copy, tmp_path)
    said = capsys.readouterr().out
    assert "checkpoint step 6" in said and "is corrupt" in said and "resuming from step 3" in said
    assert summary["resumed_from"] == 3 and (out / "checkpoints.corrupt" / "6").is_dir()
    assert_same_run(straight, out, params, summary)   # rows 4-7 dropped and run again


def test_changed_settings_are_refused_by_name(stopped, tmp_path, monkeypatch):
    import aha_utils.weights as weights
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    # before anything loads (no model passed: loading one would fail the test)
    with pytest.raises(ValueError, match=r"--resume with settings that alter training: \['lr'\] "
                                         r"\(saved, now\): \{'lr': \(0\.01, 0\.02\)\}"):
        sft.run(cli(out, "--resume", "--lr", "2e-2"))
    with pytest.raises(FileExistsError, match="unfinished SFT run .*pass --resume"):
        sft.run(cli(out))                                  # a fresh start would mix two runs
    assert [r["step"] for r in read_jsonl(out / "sft_metrics.jsonl")] == list(range(1, 8))
    # the library refuses too, before touching the model: another setting, or other examples
    # (what a GSM8K file changed under the same --gsm8k-path would give)
    model, ckpt = tiny_model(seed=7), Checkpointer(out / "checkpoints", every=3)
    start, problems = params_of(model), make_problems(6, split="train", num_numbers=3, seed=0)
    same = dict(steps=8, batch_size=2, warmup_steps=0, compute_dtype="float32",
                checkpoints=ckpt, resume=True)
    with pytest.raises(ValueError, match=r": \['learning_rate'\]; pass the saved values"):
        sft.sft(model, TOK, problems[:5], learning_rate=2e-2, **same)
    with pytest.raises(ValueError, match=r": \['examples_sha256'\]; pass the saved values"):
        sft.sft(model, TOK, problems[1:], learning_rate=1e-2, **same)
    jax.tree.map(np.testing.assert_array_equal, params_of(model), start)
    ckpt.close()


def test_resume_with_nothing_to_resume_is_one_line(tmp_path, capsys, monkeypatch):
    import aha_utils.weights as weights
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "none"
    assert sft.main([*ARGS, "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --resume: no checkpoint in {out / 'checkpoints'}; run "
                          "without --resume") and err.count("\n") == 2
    assert not out.exists()                             # the folder the failed start made: gone
