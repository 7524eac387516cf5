"""Issue 33: a corrupt checkpoint, readable errors, resume semantics, --help, live view, memory.

Uses test_train's tiny model (2 layers, the real tokenizer's vocabulary) and its test reward."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils.checkpoint import CorruptCheckpoint
from aha_utils.run_config import RunConfig
from aha_utils.train import main, train
from tests.test_train import CFG, run, text_reward, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    from aha_utils.tokenizer import gguf_tokenizer
    return gguf_tokenizer()


def truncate_arrays(step_dir):
    """Cut every array data file of a checkpoint short, as a full disk or a kill would."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:20])


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_resumes_from_the_newest_good_one(tmp_path, tokenizer, capsys):
    run(CFG, tmp_path, tokenizer)                                    # checkpoints 2 and 3 kept
    truncate_arrays(tmp_path / "checkpoints" / "3")
    resumed = run(dataclasses.replace(CFG, steps=4), tmp_path, tokenizer, resume=True)
    out = capsys.readouterr().out
    assert "checkpoint step 3" in out and "is corrupt" in out and "resuming from step 2" in out
    assert "Traceback" not in out
    assert [r["step"] for r in resumed] == [3, 4]
    assert (tmp_path / "checkpoints.corrupt" / "3").is_dir()        # moved aside, not deleted
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]


def test_no_checkpoint_restores_stops_and_moves_nothing(tmp_path, tokenizer):
    run(CFG, tmp_path, tokenizer)
    for step in ("2", "3"):
        truncate_arrays(tmp_path / "checkpoints" / step)
    with pytest.raises(CorruptCheckpoint, match=r"no checkpoint .* restores \(step 3: .*step 2"
                                                r".*Nothing was deleted.*--out"):
        run(dataclasses.replace(CFG, steps=4), tmp_path, tokenizer, resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]


# ----- item 8: errors a user can read ----------------------------------------------------------
def cli(*args):
    return ["--task", "countdown", "--steps", "2", *args]


@pytest.mark.parametrize("args, message", [
    (("--model", "gemma9"), "pass --model with one of"),
    (("--set", "template=fancy"), "--set template=NAME with one of"),
    (("--time-limit", "0"), "--time-limit is in minutes and must be > 0"),
])
def test_names_are_checked_before_anything_loads(tmp_path, capsys, monkeypatch, args, message):
    import aha_utils.weights as weights
    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as e:
        main(cli("--out", str(tmp_path / "run"), *args))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_expected_errors_print_one_line_unless_debug(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli("--out", str(out), "--resume")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith("error: --resume: no checkpoint")
    assert "Traceback" not in err and not out.exists()               # no empty run folder left
    assert main(cli("--out", str(out), "--resume", "--debug")) == 1
    assert "Traceback" in capsys.readouterr().err


def test_run_main_handles_each_expected_error(tmp_path, capsys):
    from aha_utils.cli import run_main

    def boom(err):
        def fn():
            (tmp_path / "x" / "checkpoints").mkdir(parents=True)   # what a start makes
            raise err
        return fn
    for err in (CorruptCheckpoint("no checkpoint restores"), ConnectionError("offline"),
                PermissionError("No Kaggle credentials"), ModuleNotFoundError("no gguf")):
        assert run_main(boom(err), [], str(tmp_path / "x")) == 1
        assert capsys.readouterr().err.startswith(f"error: {err}")
        assert not (tmp_path / "x").exists()
    with pytest.raises(KeyError):                                     # a bug stays a traceback
        run_main(lambda: {}["k"], [], None)


def test_missing_gguf_package_is_reported_as_a_missing_package(tmp_path, monkeypatch):
    import sys

    from aha_utils.gguf_file import open_gguf
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    monkeypatch.setitem(sys.modules, "gguf", None)                    # as if not installed
    with pytest.raises(ModuleNotFoundError, match="pip install gguf"):
        open_gguf(path)


def test_kaggle_errors_name_the_cli_flag_and_never_echo_upstream_text(monkeypatch):
    import sys
    import types

    from aha_utils import weights
    monkeypatch.setattr(weights, "_has_kaggle_credentials", lambda: False)
    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace())
    with pytest.raises(PermissionError, match="--model gemma3-270m"):
        weights.download_kaggle("gemma3-1b-it")
    monkeypatch.setattr(weights, "_has_kaggle_credentials", lambda: True)

    def fail(handle):
        raise OSError("500 from server; Authorization: Bearer SECRET")
    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(model_download=fail))
    with pytest.raises(RuntimeError) as e:
        weights.download_kaggle("gemma3-1b-it")
    assert "SECRET" not in str(e.value) and "--model gemma3-270m" in str(e.value)


# ----- item 7: resume semantics -----------------------------------------------------------------
def test_resume_allows_cadence_and_data_path_refuses_training_changes(tmp_path, tokenizer):
    run(dataclasses.replace(CFG, steps=2), tmp_path, tokenizer)
    meta_file = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    assert len(json.loads(meta_file.read_text())["pool_sha256"]) == 64
    free = dataclasses.replace(CFG, steps=3, eval_every=1, sample_every=1, checkpoint_every=2,
                               keep_checkpoints=3, gsm8k_path="/moved/gsm8k")
    assert [r["step"] for r in run(free, tmp_path, tokenizer, resume=True)] == [3]
    with pytest.raises(ValueError, match=r"alter training: \['beta', 'learning_rate'\]"):
        run(dataclasses.replace(free, steps=4, beta=0.1, learning_rate=1e-3), tmp_path,
            tokenizer, resume=True)
    newest = tmp_path / "checkpoints" / "3" / "meta" / "metadata"
    meta = json.loads(newest.read_text())
    newest.write_text(json.dumps({**meta, "pool_sha256": "0" * 64}))  # other training data
    with pytest.raises(ValueError, match="training problems differ.*--gsm8k-path"):
        run(dataclasses.replace(free, steps=4), tmp_path, tokenizer, resume=True)


def blow_up_at(monkeypatch, update: int):
    """Make the `update`-th GRPO update leave non-finite trainable parameters."""
    from flax import nnx

    from aha_utils import grpo_step
    real, calls = grpo_step.grpo_updates, []

    def updates(model, optimizer, batch, grpo_cfg, train_cfg, ref_params):
        out = real(model, optimizer, batch, grpo_cfg, train_cfg, ref_params)
        calls.append(1)
        if len(calls) == update:
            from aha_utils.train_step import trainable_filter
            state = nnx.state(model, trainable_filter(train_cfg))
            nnx.update(model, jax.tree.map(lambda x: x * jnp.nan, state))
        return out
    monkeypatch.setattr(grpo_step, "grpo_updates", updates)


def trainable_finite(model, cfg):
    from flax import nnx

    from aha_utils.train_step import trainable_filter
    leaves = jax.tree.leaves(nnx.state(model, trainable_filter(cfg.train_config())))
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def test_non_finite_step_stops_with_the_model_put_back(tmp_path, tokenizer, monkeypatch):
    blow_up_at(monkeypatch, 2)
    model = tiny_model()
    with pytest.raises(FloatingPointError, match="skip_nonfinite=true"):
        train(CFG, tmp_path, model=model, tokenizer=tokenizer, reward_fn=text_reward,
              progress=False)
    assert trainable_finite(model, CFG)                               # the step-1 checkpoint


def test_skip_nonfinite_undoes_the_step_and_goes_on(tmp_path, tokenizer, monkeypatch):
    blow_up_at(monkeypatch, 2)
    cfg = dataclasses.replace(CFG, skip_nonfinite=True)
    model = tiny_model()
    history = train(cfg, tmp_path, model=model, tokenizer=tokenizer, reward_fn=text_reward,
                    progress=False)
    assert [r["step"] for r in history] == [1, 3] and trainable_finite(model, cfg)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("skipped_nonfinite", False)) for r in lines] == [
        (1, False), (2, True), (3, False)]
    assert np.isfinite(lines[2]["loss"])


# ----- item 6: --help that teaches -------------------------------------------------------------
@pytest.mark.parametrize("module", ["train", "sft"])
def test_help_lists_every_setting_and_every_flag_has_help(module, capsys, monkeypatch):
    import importlib
    monkeypatch.delenv("AHA_QUICK", raising=False)
    mod = importlib.import_module(f"aha_utils.{module}")
    parser = mod.build_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    text = capsys.readouterr().out
    if module == "train":   # every RunConfig field, its default, its meaning
        preset = RunConfig.preset("countdown", "cpu")
        for f in dataclasses.fields(RunConfig):
            line = next(x for x in text.splitlines() if x.split()[:1] == [f.name])
            assert str(getattr(preset, f.name)) in line and len(line.split()) > 3, line
    else:                   # every flag with its default
        assert "(default: 32)" in text and "(default: 2e-05)" in text


# ----- item 5: a live view ---------------------------------------------------------------------
def read_scalars(folder):
    """{tag: [(step, value)]} from the TFRecord event files under `folder`."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    out = {}
    for file in sorted(folder.rglob("events.out.tfevents.*")):
        data, i = file.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_events_beside_metrics(tmp_path, tokenizer):
    pytest.importorskip("tensorboardX")
    cfg = dataclasses.replace(CFG, steps=2, beta=0.04, tensorboard=True)
    history = run(cfg, tmp_path, tokenizer)
    scalars = read_scalars(tmp_path / "tensorboard")
    for tag in ("reward/mean", "length/mean", "policy/kl", "policy/loss"):   # accuracy: None
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
    assert scalars["reward/mean"][1][1] == pytest.approx(history[1]["reward_mean"])


def test_tensorboard_without_the_package_fails_before_anything(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboardX"):
        train(dataclasses.replace(CFG, tensorboard=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_live_view_tags_the_self_correction_metrics():
    from aha_utils.live import TAGS
    for key in ("reward_mean", "accuracy", "completion_len_mean", "kl", "self_correction",
                "self_correction_any", "false_step_rate", "attempts_mean"):
        assert key in TAGS


def test_sft_writes_its_metrics_every_step(tmp_path, monkeypatch):
    from aha_utils import sft
    from tests.test_sft import TOK
    from tests.test_sft import tiny_model as sft_model
    real, calls = sft.sft_step, []

    def dies_at_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)
    monkeypatch.setattr(sft, "sft_step", dies_at_step_3)
    args = sft.parse_args(["--task", "countdown", "--steps", "5", "--batch", "2", "--lr", "1e-3",
                           "--train-problems", "4", "--out", str(tmp_path), "--eval-n", "2",
                           "--max-new-tokens", "8"])
    with pytest.raises(KeyboardInterrupt):
        sft.run(args, model=sft_model(seed=1), tokenizer=TOK)
    lines = [json.loads(x) for x in (tmp_path / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and np.isfinite(lines[0]["loss"])


# ----- item 3: the CPU preset fits a laptop -----------------------------------------------------
def test_cpu_presets_fit_a_laptop_and_a_run_that_does_not_fit_says_what_to_change():
    from aha_utils.config import config_for
    from aha_utils.memory import GB, describe, device_summary, estimate_memory
    for task in ("countdown", "gsm8k"):
        cfg = RunConfig.preset(task, "cpu")
        est = estimate_memory(config_for(cfg.model), cfg, kernels=False, host=True)
        assert est.runtime > 0 and est.total < 5 * GB, task           # measured: docs/TRAINING.md
    assert device_summary()[2] > 1 * GB                      # CPUs: the machine's memory
    text = describe(RunConfig.countdown_cpu(micro_batch_size=None), n_data=1, memory_bytes=8e9)
    assert "does NOT fit" in text and "--set micro_batch_size=8; now 16" in text
    assert "WARNING" not in describe(RunConfig.countdown_cpu(), n_data=1, memory_bytes=8e9)
