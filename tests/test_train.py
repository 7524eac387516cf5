"""The training loop and CLI: metrics file, exact resume, keep-last checkpoints, clear errors.

A tiny Gemma-3-shaped model (random weights, 2 layers) with the REAL tokenizer's vocabulary
(262144: an embedding of 16.7M floats, cheap) runs the whole loop on real Countdown prompts with
8 new tokens. Its completions are random text, so the task reward would be 0 everywhere and
nothing would train; the tests use a reward that varies with the text instead, so advantages
are non-zero, LoRA moves, and "resume == straight" compares runs that really change."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.model import Gemma
from aha_utils.run_config import RunConfig
from aha_utils.sampler import Completions
from aha_utils.train import TIMING_KEYS, build_batch, main, parse_args, train
from aha_utils.train_step import make_schedule

CFG = RunConfig(task="countdown", steps=3, prompts_per_step=2, num_samples=2, max_new_tokens=8,
                lora_rank=4, learning_rate=3e-2, eval_n=2, val_n=2, eval_every=2, sample_every=2,
                checkpoint_every=1, keep_checkpoints=2)
TERM_KEYS = {"step", "reward_mean", "reward_std", "accuracy", "format_rate",
             "completion_len_mean", "completion_len_max", "truncated_frac", "loss", "kl",
             "clip_frac", "grad_norm", "learning_rate", *TIMING_KEYS}


@pytest.fixture(scope="module")
def tokenizer():
    from aha_utils.tokenizer import gguf_tokenizer
    return gguf_tokenizer()


def tiny_model():
    model = Gemma(ModelConfig.tiny(num_layers=2, vocab_size=262_144), dtype=jnp.float32,
                  rngs=nnx.Rngs(0))
    model.embedding[...] = model.embedding[...] * 0.1   # flatter logits: samples differ
    return model


def text_reward(completion, problem):
    """Varies with the text (deterministically), so groups have non-zero advantages."""
    return {"reward": (len(completion) % 7) / 6.0, "has_digit": float(any(c.isdigit()
                                                                             for c in completion))}


def run(cfg, out, tokenizer, **kw):
    return train(cfg, out, model=tiny_model(), tokenizer=tokenizer, progress=False,
                 reward_fn=kw.pop("reward_fn", text_reward), **kw)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("straight")
    return out, run(CFG, out, tokenizer)


def test_metrics_file_summary_and_keep_last(straight):
    out, history = straight
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and lines == history
    for row in lines:
        assert TERM_KEYS | {"has_digit_mean", "has_digit_std"} <= set(row), set(row)
        assert row["kl"] is None                               # beta = 0: no reference policy
        assert 1 <= row["completion_len_max"] <= CFG.max_new_tokens
    schedule = make_schedule(CFG.train_config())   # cosine over the 3 planned steps to the floor
    assert [r["learning_rate"] for r in lines] == pytest.approx([float(schedule(u))
                                                                  for u in range(3)])
    assert lines[0]["learning_rate"] == pytest.approx(CFG.learning_rate)
    assert lines[2]["learning_rate"] < lines[1]["learning_rate"] < lines[0]["learning_rate"]
    assert {"eval_accuracy", "eval_format_rate", "val_accuracy"} <= set(lines[1])
    assert "eval_accuracy" not in lines[0] and "val_accuracy" not in lines[0]
    assert any(r["grad_norm"] > 0 for r in lines)              # the test reward does train
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2, 3] and all(e["n"] == 2 for e in evals)
    vals = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [e["step"] for e in vals] == [0, 2, 3] and all(e["n"] == 2 for e in vals)
    names = sorted(p.name for p in (out / "completions").iterdir())
    assert [n for n in names if not n.startswith("best_")] == [
        "eval_00000.jsonl", "eval_00002.jsonl", "eval_00003.jsonl",
        "step_00001.jsonl", "step_00002.jsonl", "step_00003.jsonl",
        "val_00000.jsonl", "val_00002.jsonl", "val_00003.jsonl"]
    sample = json.loads((out / "completions" / "step_00002.jsonl").read_text().splitlines()[0])
    assert {"problem", "completion", "tokens", "truncated", "reward"} <= set(sample)
    assert {"nums", "target"} <= set(sample["problem"]) and 1 <= sample["tokens"] <= 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "countdown" and summary["eval"]["after"]["n"] == 2
    assert {"before", "after", "best"} == set(summary["eval"]) and summary["config"]["steps"] == 3
    best = json.loads((out / "best" / "best.json").read_text())
    assert summary["eval"]["best"]["step"] == best["step"] and best["step"] in (0, 2, 3)
    assert summary["eval"]["best"]["val_accuracy"] == max(v["accuracy"] for v in vals)
    for when in ("before", "after", "best"):
        e = summary["eval"][when]
        lo, hi = e["accuracy_ci95"]
        assert 0 <= lo <= e["accuracy"] <= hi <= 1 and hi - lo > 0.3   # n = 2: a wide interval
    assert (out / "reward.png").stat().st_size > 1000
    # keep-last: only the newest 2 of the 3 checkpoints remain
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]


def crash_at_step(step: int):
    """A reward that dies while scoring step `step` (1-based), as a killed process would."""
    calls, rows = [], CFG.prompts_per_step * CFG.num_samples

    def reward(completion, problem):
        calls.append(1)
        if len(calls) > (step - 1) * rows:
            raise KeyboardInterrupt("killed")
        return text_reward(completion, problem)
    return reward


def test_resume_equals_straight_run(straight, tmp_path, tokenizer):
    _, full = straight
    with pytest.raises(KeyboardInterrupt):
        run(CFG, tmp_path, tokenizer, reward_fn=crash_at_step(2))   # killed in step 2
    # ... while writing step 2's line: half a line at the end of metrics.jsonl
    half = json.dumps(full[1])[:40]
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(half)
    resumed = run(CFG, tmp_path, tokenizer, resume=True)             # a new model object, as
    assert [r["step"] for r in resumed] == [2, 3]                   # a fresh process would have
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert not list(tmp_path.glob(".metrics.jsonl.tmp-*"))         # the rewrite left no temp file
    for got, want in zip(lines, full):
        assert set(got) == set(want)
        for key in set(want) - set(TIMING_KEYS):
            if want[key] is None:
                assert got[key] is None, key
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["step"], key)


def test_resume_errors(straight, tmp_path, tokenizer):
    out, _ = straight
    with pytest.raises(FileNotFoundError, match="no checkpoint.*without --resume"):
        train(CFG, tmp_path, resume=True)                            # nothing there: no load
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(CFG, out)
    with pytest.raises(ValueError, match="learning_rate"):
        run(dataclasses.replace(CFG, steps=6, learning_rate=1e-3), out, tokenizer, resume=True)
    # a save that died mid-write (orbax writes into a temporary folder, renamed when complete)
    partial = out / "checkpoints" / "4.orbax-checkpoint-tmp-1234567"
    (partial / "trainable").mkdir(parents=True)
    (partial / "trainable" / "junk").write_text("half a write")
    with pytest.raises(ValueError, match="checkpoint is at step 3 already"):
        run(CFG, out, tokenizer, resume=True)                        # step 3, not the partial 4


def test_raising_reward_names_function_and_completion(tmp_path, tokenizer):
    def picky_reward(completion, problem):
        raise KeyError("no such term")

    with pytest.raises(RuntimeError, match=r"picky_reward raised KeyError.*\n  on completion 0: '") as e:
        run(CFG, tmp_path, tokenizer, reward_fn=picky_reward)
    assert "of problem {'nums'" in str(e.value)

    with pytest.raises(ValueError, match="nan_reward returned reward=nan"):
        run(CFG, tmp_path / "b", tokenizer, reward_fn=nan_reward)


def nan_reward(completion, problem):
    return {"reward": float("nan")}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tokenizer):
    model = tiny_model()
    rows = CFG.prompts_per_step * CFG.num_samples
    calls = []

    def diverging_reward(completion, problem):
        calls.append(1)
        if len(calls) == 2 * rows + 1:   # while scoring step 3: the weights blow up
            model.embedding[...] = model.embedding[...] * jnp.nan
        return text_reward(completion, problem)

    with pytest.raises(FloatingPointError, match=r"step 3: loss=nan.*last good checkpoint \(step 2\)"):
        train(CFG, tmp_path, model=model, tokenizer=tokenizer, reward_fn=diverging_reward,
              progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]
    # the survivor restores and continues (the injected model is healthy again)
    resumed = run(dataclasses.replace(CFG, steps=3), tmp_path, tokenizer, resume=True)
    assert [r["step"] for r in resumed] == [3] and np.isfinite(resumed[0]["loss"])


def test_build_batch_positions_and_masks():
    comp = Completions(texts=["a", "b"], tokens=np.array([[7, 8, 1], [9, 0, 0]], np.int32),
                       logprobs=np.full((2, 3), -1.0, np.float32), lengths=np.array([3, 1]),
                       stopped=np.array([True, False]),
                       prompt_tokens=np.array([[0, 2, 5], [2, 5, 6]], np.int32),
                       prompt_lengths=np.array([2, 3], np.int32))
    batch = build_batch(comp, [0.5, -0.5])
    np.testing.assert_array_equal(batch["positions"], [[-1, 0, 1, 2, 3, 4], [0, 1, 2, 3, -1, -1]])
    np.testing.assert_array_equal(batch["completion_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(batch["tokens"][:, 3:], comp.tokens)
    np.testing.assert_array_equal(batch["truncated"], [False, True])


def test_cli_arguments_and_presets(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["--task", "sudoku", "--steps", "2", "--out", str(tmp_path)])
    assert "invalid choice: 'sudoku'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--task", "countdown", "--steps", "0", "--out", str(tmp_path)])
    assert "--steps must be >= 1; got 0" in capsys.readouterr().err
    assert main(["--task", "countdown", "--steps", "2", "--out", str(tmp_path / "new"),
                 "--resume"]) == 1                                   # one line, no traceback
    err = capsys.readouterr().err
    assert "error: --resume: no checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()                           # no empty run folder left

    monkeypatch.delenv("AHA_QUICK", raising=False)
    cfg, _ = parse_args(["--task", "gsm8k", "--steps", "7", "--out", "x"])
    assert cfg == RunConfig.gsm8k_cpu(steps=7)                      # tests run on the CPU backend
    monkeypatch.setenv("AHA_QUICK", "1")
    quick, _ = parse_args(["--task", "countdown", "--steps", "2", "--out", "x"])
    assert quick == RunConfig.countdown_cpu(steps=2).quick() and quick.max_new_tokens == 32
    gpu = RunConfig.preset("countdown", "tpu", steps=50)
    assert (gpu.prompts_per_step, gpu.num_samples, gpu.max_new_tokens, gpu.lora_rank,
            gpu.learning_rate) == (16, 8, 256, None, 1e-5)
    assert gpu.quick().micro_batch_size == 8                         # 2 x 4 rows still divide
    with pytest.raises(ValueError, match="num_samples=1"):
        RunConfig(num_samples=1)
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size=3"):
        RunConfig(micro_batch_size=3)


def test_cli_set_overrides(monkeypatch, capsys):
    monkeypatch.delenv("AHA_QUICK", raising=False)
    cfg, _ = parse_args(["--task", "countdown", "--steps", "4", "--out", "x",
                         "--set", "learning_rate=3e-6", "--set", "lora_rank=none",
                         "--set", "template=chat", "--set", "eval-n=16",
                         "--set", "scale_rewards=false", "--set", "top_k=50"])
    assert cfg == RunConfig.countdown_cpu(steps=4, learning_rate=3e-6, lora_rank=None,
                                          template="chat", eval_n=16, scale_rewards=False,
                                          top_k=50)
    for bad, message in (("learning_rate=fast", "learning_rate takes a value of type float"),
                         ("lora_rnak=4", "expected FIELD=VALUE with FIELD one of"),
                         ("steps=9", "use --steps instead"),
                         ("scale_rewards=maybe", "scale_rewards takes a value of type bool"),
                         ("num_samples=1", "num_samples=1")):
        with pytest.raises(SystemExit):
            parse_args(["--task", "countdown", "--steps", "4", "--out", "x", "--set", bad])
        assert message in capsys.readouterr().err, bad


def test_time_limit_stops_cleanly_and_resume_continues(tmp_path, tokenizer):
    cfg = dataclasses.replace(CFG, eval_every=10, sample_every=10)
    first = run(cfg, tmp_path, tokenizer, time_limit_s=1e-9)   # past the limit after step 1
    assert [r["step"] for r in first] == [1] and "eval_accuracy" in first[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval"]["after"]["step"] == 1 and summary["steps_done"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]
    rest = run(cfg, tmp_path, tokenizer, resume=True)
    assert [r["step"] for r in rest] == [2, 3]
    with pytest.raises(ValueError, match="time_limit_s=0 must be > 0"):
        run(cfg, tmp_path / "x", tokenizer, time_limit_s=0)


# ----------------------------------------------------------------------------------------------
# Schedule, splits, best-on-validation
# ----------------------------------------------------------------------------------------------
def test_schedule_shape_warmup_cosine_floor():
    from aha_utils.schedule import SchedulePlan

    cfg = dataclasses.replace(CFG, steps=20, warmup_steps=4, lr_floor=0.1, learning_rate=1.0)
    lr = [float(make_schedule(cfg.train_config())(u)) for u in range(31)]
    assert lr[0] == 0 and lr[4] == pytest.approx(1.0)                     # linear warmup
    assert all(a < b for a, b in zip(lr[:4], lr[1:5]))
    assert all(a >= b for a, b in zip(lr[4:20], lr[5:21]))                 # then only down
    assert lr[12] == pytest.approx(0.1 + 0.9 * 0.5)                        # cosine's midpoint
    assert lr[20] == pytest.approx(0.1) and lr[30] == pytest.approx(0.1)   # the floor, held
    half = [float(make_schedule(cfg.train_config(planned_steps=10))(u)) for u in range(11)]
    assert half[10] == pytest.approx(0.1) and half[4] == pytest.approx(1.0)  # sized to the plan
    constant = dataclasses.replace(cfg, lr_floor=1.0).train_config()
    assert float(make_schedule(constant)(15)) == pytest.approx(1.0)

    # the plan: --steps without a time limit; with one, what fits after PLAN_AFTER timed steps
    assert SchedulePlan.start(100, 0, None, None).planned == 100
    plan = SchedulePlan.start(100, 0, 600.0, None)
    assert not plan.frozen and plan.should_plan(3) and not plan.should_plan(2)
    plan.step_seconds, plan.eval_seconds, plan.test_seconds = [30.0, 2.0, 2.0], 4.0, 3.0
    # 2 s a step + 4 s of validation every 2 steps = 4 s; 50 s left - 6 s reserved -> 11 steps
    assert plan.freeze(3, 50.0, eval_every=2) == 14 and plan.frozen
    meta = {"config": {"steps": 100}, **plan.to_meta()}
    assert SchedulePlan.start(100, 7, 600.0, meta).planned == 14           # resume: exact plan
    extended = SchedulePlan.start(200, 14, None, meta)
    assert extended.planned == 200 and "re-planned" in extended.note


def test_time_limit_plans_the_schedule_and_resume_keeps_it(tmp_path, tokenizer, monkeypatch):
    from aha_utils import schedule

    def freeze(self, done, remaining_s, eval_every):   # "4 of 5 steps fit the time left"
        self.planned, self.frozen, self.note = 4, True, "planned 4"
        return 4
    monkeypatch.setattr(schedule.SchedulePlan, "freeze", freeze)
    cfg = dataclasses.replace(CFG, steps=5, val_n=0, eval_every=10, sample_every=10)
    rows = run(cfg, tmp_path, tokenizer, time_limit_s=1e6)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    resized = make_schedule(cfg.train_config(planned_steps=4))
    assert rows[3]["learning_rate"] == pytest.approx(float(resized(3)))   # the rebuilt optimizer
    assert rows[0]["learning_rate"] == pytest.approx(float(resized(0)))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps_done"] == 4 and "best" not in summary["eval"]   # no validation split
    with pytest.raises(ValueError, match="checkpoint is at step 4 already"):
        run(cfg, tmp_path, tokenizer, resume=True)                    # the plan is stored


def test_splits_are_disjoint(tmp_path):
    from aha_utils.problems import Problems, problem_key

    cfg = dataclasses.replace(CFG, eval_n=64, val_n=64, prompts_per_step=8)
    data = Problems(cfg)
    data.check_disjoint(steps=50)
    assert len(data.val_set) == 64 and len(data.test_set) == 64
    # force a collision: a validation set made of step 3's problems is drawn around
    data.val_set = data.for_step(3)
    data._val_keys = {problem_key(q) for q in data.val_set}
    assert not {problem_key(q) for q in data.for_step(3)} & data._val_keys
    data.check_disjoint(steps=5)
    # GSM8K (a local copy): validation is a seeded part of the train split, out of the pool
    rows = [{"question": f"q{i}?", "answer": f"{i} + 0 = {i}\n#### {i}"} for i in range(40)]
    for name, part in (("train", rows[:30]), ("test", rows[30:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    g = Problems(RunConfig(task="gsm8k", gsm8k_path=str(tmp_path), eval_n=10, val_n=5,
                           prompts_per_step=4))
    assert len(g.train_pool) == 25 and len(g.val_set) == 5
    g.check_disjoint(steps=20)
    bigger = Problems(RunConfig(task="gsm8k", gsm8k_path=str(tmp_path), eval_n=10, val_n=8))
    assert {q["question"] for q in g.val_set} <= {
        q["question"] for q in bigger.val_set}                         # val_n extends, not redraws


def test_best_is_chosen_on_validation_never_on_test(tmp_path, tokenizer, monkeypatch):
    """Validation peaks at step 1, test at step 2: the kept model is step 1's. After a resume
    past it, the kept parameters themselves are loaded and tested."""
    from aha_utils import train as train_module
    from aha_utils.train_step import trainable_filter

    cfg = dataclasses.replace(CFG, steps=2, eval_n=2, val_n=3, eval_every=1, sample_every=10)
    scores = {"val": iter([0.0, 2 / 3, 1 / 3, 0.0]), "test": iter([0.0, 0.25, 1.0, 0.5, 0.75])}
    seen = []

    def fake_evaluate(model, tokenizer, cfg_, problems):
        split = "val" if len(problems) == 3 else "test"
        acc = next(scores[split])
        fingerprint = float(sum(jnp.sum(x) for x in jax.tree.leaves(
            nnx.state(model, trainable_filter(cfg_.train_config())))))
        seen.append((split, acc, fingerprint))
        return {"accuracy": acc, "format_rate": 1.0, "n": len(problems)}, [
            {"problem": q, "completion": "", "correct": acc, "format_soft": 1.0} for q in problems]
    monkeypatch.setattr(train_module, "evaluate", fake_evaluate)
    run(cfg, tmp_path, tokenizer)
    summary = json.loads((tmp_path / "summary.json").read_text())
    best = summary["eval"]["best"]
    assert best["step"] == 1 and best["val_accuracy"] == pytest.approx(2 / 3)
    assert best["selected_on"] == "validation"
    assert best["accuracy"] == 0.25                    # step 1's own test evaluation, reused
    assert summary["eval"]["after"]["accuracy"] == 1.0 and summary["eval"]["after"]["step"] == 2
    assert len(seen) == 6                              # no extra evaluation was needed
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 1
    assert [p.name for p in (tmp_path / "best").glob("step_*")] == ["step_00001"]

    # resumed to step 3: step 1's parameters are loaded from best/ and tested
    run(dataclasses.replace(cfg, steps=3), tmp_path, tokenizer, resume=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval"]["best"]["step"] == 1 and summary["eval"]["best"]["accuracy"] == 0.75
    assert summary["eval"]["after"]["accuracy"] == 0.5
    step1_val = [f for split, _, f in seen if split == "val"][1]
    assert seen[-1][0] == "test" and seen[-1][2] == pytest.approx(step1_val, rel=1e-6)
    assert seen[-2][2] != pytest.approx(step1_val, rel=1e-6)     # the final model differs
    assert (tmp_path / "completions" / "best_00001.jsonl").exists()
