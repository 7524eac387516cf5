"""The GRPO training loop and its CLI: the one place that ties the library together.

    python -m aha_utils.train --task {countdown,gsm8k} --model NAME --steps N --out DIR [--resume]

Each step is one `grpo_step` (sample G completions per problem, score, advantages, mu updates)
on `Problems.for_step(s)`, then a line of `DIR/metrics.jsonl`; every `eval_every` steps a greedy
evaluation of the validation split (`val.jsonl`; the best parameters so far kept in `DIR/best/`);
every `checkpoint_every` steps an orbax checkpoint. The test split is evaluated before training
and at the end, for the final and for the best-on-validation parameters (`summary.json`'s
`eval.before`, `eval.after`, `eval.best`). docs/ARCHITECTURE.md shows where each part lives.

Files under DIR (only process 0 writes the non-orbax ones):
- `metrics.jsonl`: one object per step: `step` (1-based); `<term>_mean`, `<term>_std` for the
  reward and each of its terms; `accuracy`, `format_rate`, `completion_len_mean`,
  `completion_len_max`, `truncated_frac`; from the updates (mean over mu) `loss`, `kl` (null
  when beta = 0), `clip_frac`, `clip_low`, `clip_high`, `ratio`, `entropy`, `grad_norm`,
  `learning_rate`; timings (`TIMING_KEYS`); `val_accuracy`, `val_format_rate` on the steps that
  validated and `eval_accuracy`, `eval_format_rate` on those that tested.
- `eval.jsonl` (test) and `val.jsonl` (validation): `{"step", "accuracy", "format_rate", "n"}`.
- `completions/step_XXXXX.jsonl` (sampled), `eval_XXXXX.jsonl` (test), `val_XXXXX.jsonl`.
- `checkpoints/<step>/`, `best/` (parameters + `best.json`), `summary.json`, `reward.png`.

Determinism: step s samples with a seed folded from (seed, s) and draws its problems from
(seed, s), so `--resume` continues exactly; the checkpoint stores the config (a different one is
refused, except `RESUME_FREE` fields) and the planned length of the learning-rate schedule; the
newest checkpoint that restores is used (a damaged one is named and moved aside). A non-finite
loss, gradient or parameter stops the run before that step is logged or saved (the model is put
back to the last checkpoint), or with `skip_nonfinite` the step is undone and logged as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils.checkpoint import BestParams, Checkpointer, load_params
from aha_utils.cli import (TIME_LIMIT_HELP, check_names, parse_overrides, run_main,
                           settings_table)
from aha_utils.evaluation import (STOP_STRINGS, RewardFn, evaluate, prompts_of,  # noqa: F401
                                  score_completions, task_reward_fn)
from aha_utils.grpo_step import (all_finite, build_batch, compile_ahead, grpo_step,  # noqa: F401
                                 mean_updates, sample_group, score_group, step_seed)
from aha_utils.live import LiveView
from aha_utils.jsonl import read_jsonl, rewrite_jsonl, write_jsonl
from aha_utils.problems import Problems
from aha_utils.rewards import TASKS, get_scheme
from aha_utils.run_config import RunConfig
from aha_utils.runlog import plot_rewards, write_summary  # noqa: F401
from aha_utils.resume import RESUME_FREE, check_resume, snapshot  # noqa: F401
from aha_utils.schedule import SchedulePlan
from aha_utils.train_step import init_training, rebuild_optimizer, trainable_filter

# Metrics that differ between two identical runs only by timing.
TIMING_KEYS = ("step_time_s", "sample_time_s", "train_time_s", "sample_tokens_per_s",
               "train_tokens_per_s")


def _agree(flag: bool) -> bool:
    """Process 0's `flag` on every process (multi-host runs must take the same branch)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def hardware() -> str:
    dev = jax.devices()[0]
    return f"{len(jax.devices())} x {dev.device_kind} ({jax.default_backend()})"


def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, model=None,
          tokenizer=None, reward_fn: RewardFn | None = None, progress: bool = True,
          time_limit_s: float | None = None, experiment: str | None = None) -> list[dict]:
    """Run GRPO up to `cfg.steps` steps; returns the metrics rows written by this call.

    `model`/`tokenizer` default to `load_model(cfg.model)` (inject them to test with a toy model;
    the model is modified in place: LoRA applied, trained). `reward_fn(completion, problem)`
    defaults to the task's reward under `cfg.reward_scheme`, with every term logged.

    `time_limit_s` sizes the run to a session with a hard end (Kaggle's 9 h, Colab's less): after
    a few timed steps the schedule is planned over the steps that fit (`aha_utils.schedule`), and
    as a safety net the run also stops after the first step that ends past the limit; either way
    the last step is evaluated, checkpointed and summarised, and `--resume` can continue later.
    `experiment` (a config name of `experiments/`) is recorded in `summary.json`.
    """
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time_limit_s={time_limit_s} must be > 0 (or None: no limit)")
    get_scheme(cfg.reward_scheme)   # an unknown scheme fails here, before anything loads
    out = Path(out_dir)
    live = LiveView(out / "tensorboard", cfg.tensorboard and jax.process_index() == 0)
    ckpt = Checkpointer(out / "checkpoints", every=cfg.checkpoint_every, keep=cfg.keep_checkpoints)
    try:   # on any exit, let a save in flight finish: it is the good checkpoint to resume from
        return _train(cfg, out, ckpt, resume, model, tokenizer, reward_fn, progress,
                      time_limit_s, experiment, live)
    finally:
        ckpt.close()
        live.close()


def _train(cfg, out, ckpt, resume, model, tokenizer, reward_fn, progress, time_limit_s,
           experiment, live) -> list[dict]:
    t_call = time.perf_counter()
    is_main = jax.process_index() == 0
    meta = ckpt.start_meta(resume, held="already holds a run")
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer, or neither (then cfg.model is loaded)")
    data = Problems(cfg)   # before the model: a missing data set fails fast
    if meta is not None:
        check_resume(cfg, meta, data)
    if model is None:
        from aha_utils.weights import load_model   # heavy: only when not injected
        model, tokenizer = load_model(cfg.model, dtype=jnp.dtype(cfg.param_dtype))
    if cfg.init_from:   # the warm-start arm: SFT weights, before LoRA and the optimizer
        load_params(model, cfg.init_from)
    reward_fn = reward_fn or task_reward_fn(cfg.task, cfg.reward_scheme)
    start = 0 if meta is None else meta["step"]
    plan = SchedulePlan.start(cfg.steps, start, time_limit_s, meta)
    if start >= plan.planned:
        raise ValueError(f"the checkpoint is at step {start} already; pass --steps larger "
                         f"than {start} to continue")
    grpo_cfg, train_cfg = cfg.grpo_config(), cfg.train_config(plan.planned)
    optimizer, ref_params = init_training(model, train_cfg, grpo_cfg, seed=cfg.seed)
    base_key = jax.random.key(cfg.seed)
    best = BestParams(out / "best", trainable_filter(train_cfg))
    elapsed_before = 0.0
    if meta is not None:
        restored = ckpt.restore_newest(model, optimizer, trainable_filter(train_cfg))
        if restored["step"] != meta["step"]:   # the newest was damaged: an older one restored
            meta, start = restored, restored["step"]
            check_resume(cfg, meta, data)
            plan = SchedulePlan.start(cfg.steps, start, time_limit_s, meta)
            if cfg.train_config(plan.planned) != train_cfg:
                train_cfg = cfg.train_config(plan.planned)
                optimizer = rebuild_optimizer(model, optimizer, train_cfg)
        elapsed_before = meta.get("elapsed_s", 0.0)
        if plan.note:
            print(plan.note)
    if is_main:   # drop lines of steps after the checkpoint: they run again (atomic rewrite)
        for name in ("metrics.jsonl", "eval.jsonl", "val.jsonl"):
            rewrite_jsonl(out / name, [r for r in read_jsonl(out / name) if r["step"] <= start])
    best.forget_after(start)

    def run_eval(step: int, split: str) -> tuple[dict, float]:
        """split: "test" (eval.jsonl), "val" (val.jsonl) or "best" (the test set, completions
        only: its result goes to summary.json)."""
        t = time.perf_counter()
        result, rows = evaluate(model, tokenizer, cfg, data.val_set if split == "val"
                                else data.test_set)
        if is_main:
            prefix = {"test": "eval", "val": "val", "best": "best"}[split]
            if split != "best":
                write_jsonl(out / f"{prefix}.jsonl", [{"step": step, **result}])
            write_jsonl(out / "completions" / f"{prefix}_{step:05d}.jsonl", rows, mode="w")
        return result, time.perf_counter() - t

    def validate(step: int) -> tuple[dict, bool]:
        """Evaluate the validation set; keep the parameters if strictly the best so far."""
        result, plan.eval_seconds = run_eval(step, "val")
        return result, best.offer(step, result["accuracy"], model)

    def checkpoint_meta(done: int) -> dict:
        return {"step": done, "data_position": data.position(done),
                "rng_key": np.asarray(jax.random.key_data(base_key)).tolist(),
                "elapsed_s": elapsed_before + time.perf_counter() - t_run,
                "config": dataclasses.asdict(cfg), "pool_sha256": data.pool_hash(),
                **plan.to_meta()}

    t_run, tested = time.perf_counter(), {}   # tested: this call's test results by step
    # The train step compiles while the first evaluation and the first sampling run.
    wait_compiled = compile_ahead(model, optimizer, tokenizer, cfg, data.for_step(start),
                                  grpo_cfg, train_cfg, ref_params)
    if start == 0:
        before, plan.test_seconds = run_eval(0, "test")   # "before": the base model
        tested[0] = {"step": 0, **before}
        if data.val_set:
            validate(0)   # the base model is the first candidate
    from tqdm.auto import tqdm
    bar = tqdm(total=plan.planned, initial=start, desc=f"GRPO {cfg.task}",
               disable=not (progress and is_main))
    history, step = [], start
    while step < plan.planned:
        t0 = time.perf_counter()
        problems = data.for_step(step)
        saved = snapshot(model, optimizer, train_cfg) if cfg.skip_nonfinite else None
        res = grpo_step(model, tokenizer, optimizer, problems, cfg,
                        seed=step_seed(base_key, step), reward_fn=reward_fn,
                        train_cfg=train_cfg, ref_params=ref_params, wait_compiled=wait_compiled)
        if not res.finite and saved is not None:   # undo the step, log it as skipped, go on
            nnx.update(model, saved[0])
            nnx.update(optimizer, saved[1])
            print(f"step {step + 1}: non-finite loss={res.updates['loss']}, grad_norm="
                  f"{res.updates['grad_norm']}; skipped (skip_nonfinite), the model is as before")
            if is_main:
                write_jsonl(out / "metrics.jsonl", [{"step": step + 1, **res.metrics,
                                                     "skipped_nonfinite": True}])
            step += 1
            bar.update(1)
            continue
        if not res.finite:
            ckpt.wait_until_finished()
            if ckpt.latest_step() is not None:   # never leave the caller a corrupted model
                ckpt.restore(model, optimizer, trainable_filter(train_cfg))
            raise FloatingPointError(
                f"non-finite training at step {step + 1}: loss={res.updates['loss']}, grad_norm="
                f"{res.updates['grad_norm']}. This step was not logged or saved; the last good "
                f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept. Lower "
                "learning_rate (or max_grad_norm) and --resume, check the rewards, or "
                "--set skip_nonfinite=true to skip such steps.")
        done = step + 1
        plan.step_seconds.append(res.sample_time_s + res.score_time_s + res.update_time_s)
        if plan.should_plan(done):   # a time limit: size the schedule to the steps that fit
            new = plan.freeze(done, time_limit_s - (time.perf_counter() - t_call), cfg.eval_every)
            print(plan.note)
            if cfg.train_config(new) != train_cfg:   # resized: same state, new schedule
                train_cfg = cfg.train_config(new)
                optimizer = rebuild_optimizer(model, optimizer, train_cfg)
            bar.total = plan.planned
        row = {"step": done, **res.metrics}
        # Every process must agree to stop, so the deadline is process 0's decision.
        last = done >= plan.planned or (time_limit_s is not None and _agree(
            time.perf_counter() - t_call > time_limit_s))
        if is_main and (done % cfg.sample_every == 0 or done == 1 or last):
            comp, terms = res.comp, res.terms
            write_jsonl(out / "completions" / f"step_{done:05d}.jsonl",
                        [{"problem": problems[i // cfg.num_samples], "completion": text,
                          "tokens": int(comp.lengths[i]), "truncated": bool(~comp.stopped[i]),
                          **{k: float(v[i]) for k, v in terms.items()}}
                         for i, text in enumerate(comp.texts)], mode="w")
        improved = False
        if done % cfg.eval_every == 0 or last:   # validation (chooses), then test (reports)
            if data.val_set:
                result, improved = validate(done)
                row.update(val_accuracy=result["accuracy"],
                           val_format_rate=result["format_rate"])
            result, _ = run_eval(done, "test")
            tested[done] = {"step": done, **result}
            row.update(eval_accuracy=result["accuracy"], eval_format_rate=result["format_rate"])
        row["step_time_s"] = time.perf_counter() - t0
        if is_main:
            write_jsonl(out / "metrics.jsonl", [row])
            live.log(row)
        history.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", fmt=f"{row.get('format_rate') or 0:.2f}",
                        len=f"{row['completion_len_mean']:.0f}")
        # Checkpoint (after the log line, so a restored step always has its line); always
        # when the best changed, so best/ never holds a step later than the newest checkpoint.
        ckpt.save(done, model, optimizer, trainable_filter(train_cfg), force=last or improved,
                  meta=checkpoint_meta(done))
        step = done
        if last:
            break
    bar.close()
    ckpt.wait_until_finished()
    best_row = _evaluate_best(best, model, tested, run_eval) if data.val_set else None
    if is_main:
        write_summary(cfg, out, elapsed_before + time.perf_counter() - t_run,
                      hardware=hardware(), best=best_row,
                      extra=None if experiment is None else {"experiment": experiment})
    return history


def _evaluate_best(best: BestParams, model, tested: dict[int, dict], run_eval) -> dict | None:
    """The test evaluation of the best-on-validation parameters (reused from `tested`, this
    call's test rows by step, when that step was tested); the model keeps its final ones."""
    record = best.record()
    if record is None:
        return None
    if record["step"] in tested:
        row = tested[record["step"]]
    else:
        final = best.swap_in(model)
        try:
            result, _ = run_eval(record["step"], "best")
        finally:
            best.swap_out(model, final)
        row = {"step": record["step"], **result}
    return {**row, "step": record["step"], "val_accuracy": record["val_accuracy"]}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    preset = RunConfig.preset("countdown", jax.default_backend())
    parser = argparse.ArgumentParser(
        prog="python -m aha_utils.train", epilog=settings_table(preset),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GRPO (R1-Zero style) on Countdown or GSM8K. Defaults: the preset for the "
                    "hardware found (cpu: a few-minute LoRA run; gpu/tpu: the TRL-comparable "
                    "full fine-tune); AHA_QUICK=1 shrinks it.")
    parser.add_argument("--task", required=True, choices=TASKS, help="the task to train on")
    parser.add_argument("--model", default=None, help="default: the preset's (gemma3-270m)")
    parser.add_argument("--steps", type=int, required=True, help="train up to this step")
    parser.add_argument("--out", required=True, help="run folder (metrics, checkpoints, plot)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in --out (error if none)")
    parser.add_argument("--gsm8k-path", default=None,
                        help="folder with GSM8K train.jsonl/test.jsonl (default: the copy shipped with the course)")
    parser.add_argument("--seed", type=int, default=None, help="seed of problems and sampling")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help=TIME_LIMIT_HELP)
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="the experiments/ config this run comes from (kept in summary.json)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any RunConfig field, e.g. --set learning_rate=3e-6 "
                             "--set lora_rank=none --set lr_floor=0.1 --set val_n=256 "
                             "(repeatable; applied after AHA_QUICK, so it also sets what quick "
                             "mode shrinks)")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1; got {args.steps}")
    if args.time_limit is not None and not args.time_limit > 0:
        parser.error(f"--time-limit is in minutes and must be > 0; got {args.time_limit}")
    overrides = {"steps": args.steps}
    for key in ("model", "gsm8k_path", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        cfg = RunConfig.preset(args.task, jax.default_backend(), **overrides)
    except ValueError as e:
        parser.error(str(e))
    if os.environ.get("AHA_QUICK") == "1":
        cfg = cfg.quick()
    try:
        cfg = dataclasses.replace(cfg, **parse_overrides(args.set))
        check_names(cfg.model, cfg.template)
    except ValueError as e:
        parser.error(str(e))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    return run_main(lambda: _main(cfg, args), argv, args.out)


def _main(cfg: RunConfig, args: argparse.Namespace) -> int:
    print(f"jax {jax.__version__} on {jax.default_backend()} ({len(jax.devices())} devices); "
          f"{'resuming' if args.resume else 'starting'} {cfg.task} / {cfg.model} up to step "
          f"{cfg.steps} in {args.out}")
    if jax.process_index() == 0:   # shapes only: says before loading anything whether it fits
        from aha_utils.memory import describe
        print(describe(cfg))
    train(cfg, args.out, resume=args.resume, experiment=args.experiment,
          time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
