"""The warm-start arm: a short supervised phase on written-out solutions, then GRPO.

SimpleRL-Zoo's two-stage recipe next to the zero arm: `python -m aha_utils.sft --task T ...
--out DIR` fine-tunes the base model on worked solutions (Countdown: `make_problems` solutions
written out as short reasoning; GSM8K: the train split's own worked solutions), saves
`DIR/params`, and `python -m aha_utils.train --task T ... --set init_from=DIR` runs the same GRPO
from there. The examples are `aha_utils.sft_data`'s (`countdown_sft_example` is re-exported here
for its old importers); `sft` trains; `load_params` puts the parameters back into a model.
The run keeps checkpoints (`--checkpoint-every`, removed once `DIR/params` is saved) and
`--resume` continues the newest one exactly; the flags are `aha_utils.sft_cli`'s.

Design notes: docs/TRAINING.md, "The warm start (`aha_utils.sft`)".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from aha_utils import sft_data
from aha_utils.data.countdown import make_problems
from aha_utils.analysis import wilson_interval
from aha_utils.buckets import PAD_ID, left_pad
from aha_utils.cli import run_main
from aha_utils.checkpoint import (Checkpointer, load_params,  # noqa: F401
                                  save_params)   # load_params: its old home was here
from aha_utils.evaluation import evaluate
from aha_utils.jsonl import read_jsonl, rewrite_jsonl, write_jsonl
from aha_utils.live import LiveView
from aha_utils.problems import Problems, problem_key
from aha_utils.resume import changed_settings
from aha_utils.run_config import RunConfig
from aha_utils.sft_cli import (build_parser, check_resume_flags, parse_args,  # noqa: F401
                               run_settings, search_options)   # parse_args etc.: kept here too
from aha_utils.layers import cast_floats
from aha_utils.sharding import DATA, model_mesh, shard_batch
from aha_utils.train_config import GRPOConfig, TrainConfig
from aha_utils.train_step import (accumulate_micro_batches, completion_logprobs, init_training,
                                  make_schedule)

countdown_sft_example = sft_data.countdown_sft_example   # its first home: kept importable here

# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------
def build_sft_batch(tokenizer, examples: list[tuple[str, str]], *, prompt_len: int | None = None,
                    completion_len: int | None = None) -> dict:
    """`tokens`, `positions`, `completion_mask` in the GRPO batch layout (module doc). Columns
    default to the longest prompt and the longest completion, each rounded up to 16 (no power-of-
    two bucket as the sampler's: the columns are fixed over the data set, one compile anyway)."""
    prompts = [tokenizer.encode(p, add_bos=True) for p, _ in examples]
    comps = [tokenizer.encode(c, add_bos=False) for _, c in examples]
    longest_p, longest_c = max(map(len, prompts)), max(map(len, comps))
    p = prompt_len or -(-longest_p // 16) * 16
    c = completion_len or -(-longest_c // 16) * 16
    if longest_p > p or longest_c > c:
        raise ValueError(f"examples need {longest_p} prompt and {longest_c} completion columns; "
                         f"got prompt_len={p}, completion_len={c}")
    tokens_p, pos_p = left_pad(prompts, p, len(examples))
    tokens_c = np.full((len(examples), c), PAD_ID, np.int32)
    pos_c = np.full((len(examples), c), -1, np.int32)
    for r, (ids, prompt) in enumerate(zip(comps, prompts)):
        tokens_c[r, :len(ids)] = ids
        pos_c[r, :len(ids)] = len(prompt) + np.arange(len(ids))
    return dict(tokens=np.concatenate([tokens_p, tokens_c], 1),
                positions=np.concatenate([pos_p, pos_c], 1),
                completion_mask=(pos_c >= 0).astype(np.float32))


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------
def _micro_loss(params, rest, graphdef, mb, num_tokens, cfg: TrainConfig):
    dtype = jnp.dtype(cfg.compute_dtype)
    model = nnx.merge(graphdef, cast_floats(params, dtype), cast_floats(rest, dtype))
    start = mb["tokens"].shape[1] - mb["completion_mask"].shape[1]
    logp = completion_logprobs(model, mb["tokens"], mb["positions"], start,
                               chunk=cfg.logprob_chunk, remat=cfg.remat)           # [mb, C]
    mask = mb["completion_mask"]
    loss = -(logp * mask).sum() / num_tokens
    acc = ((logp > math.log(0.5)) * mask).sum() / num_tokens
    return loss, {"loss": loss, "token_accuracy": acc}


def _loss_and_grads(model, batch, cfg: TrainConfig, mesh):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    num_tokens = jnp.maximum(batch["completion_mask"].sum(), 1.0)   # the whole batch's count
    return accumulate_micro_batches(
        lambda p, mb: _micro_loss(p, rest, graphdef, mb, num_tokens, cfg),
        params, batch, cfg.micro_batch_size, mesh)


@nnx.jit(static_argnames=("cfg", "mesh"))
def _loss_jit(model, batch, cfg, mesh):
    return _loss_and_grads(model, batch, cfg, mesh)[1]


@nnx.jit(static_argnames=("cfg", "mesh"), donate_argnames=("model", "optimizer"))  # as train_step
def _step_jit(model, optimizer, batch, cfg, mesh):
    lr = make_schedule(cfg)(optimizer.step[...])
    grads, metrics = _loss_and_grads(model, batch, cfg, mesh)
    optimizer.update(model, grads)
    return dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=lr)


def _check(model, batch: dict, cfg: TrainConfig) -> dict:
    if cfg.lora_rank is not None:
        raise ValueError("SFT here is full fine-tuning: use lora_rank=None")
    rows, mesh = batch["tokens"].shape[0], model_mesh(model)
    mb = cfg.micro_batch_size or rows
    n_data = 1 if mesh is None else mesh.shape[DATA]
    if rows % mb or mb % n_data:
        raise ValueError(f"batch of {rows} rows needs a micro_batch_size that divides it and is "
                         f"a multiple of the {n_data} data-parallel devices; got {mb}")
    if mesh is not None:   # rows over `data`, as train_step does
        return {k: shard_batch(np.asarray(v), mesh) for k, v in batch.items()}
    return {k: jnp.asarray(v) for k, v in batch.items()}


def sft_loss(model, batch: dict, cfg: TrainConfig = TrainConfig()) -> dict:
    """`{"loss", "token_accuracy"}` of a batch (no update): completion tokens only."""
    return _loss_jit(model, _check(model, batch, cfg), cfg, model_mesh(model))


def sft_step(model, optimizer: nnx.Optimizer, batch: dict, cfg: TrainConfig) -> dict:
    """One AdamW update on `batch` in place; device scalars `loss`, `token_accuracy` (before the
    update), `grad_norm`, `learning_rate`."""
    return _step_jit(model, optimizer, _check(model, batch, cfg), cfg, model_mesh(model))


def sft(model, tokenizer, problems: list[dict], *, steps: int, batch_size: int,
        learning_rate: float, task: str = "countdown", template: str = "base",
        warmup_steps: int | None = None, micro_batch_size: int | None = None,
        compute_dtype: str = "bfloat16", remat: bool = False, seed: int = 0,
        progress: bool = False, search_fraction: float = 0.0, on_step=None,
        checkpoints: Checkpointer | None = None, resume: bool = False, meta: dict | None = None,
        on_start=None, **search_options) -> list[dict]:
    """Fine-tune `model` in place on `problems` of `task` (seeded epochs of permutations; GSM8K
    rows filtered by `sft_data.gsm8k_sft_rows` first); returns one dict of host floats per step
    this call ran (`step`, `loss`, `token_accuracy`, `grad_norm`, `learning_rate`), each also
    passed to `on_step(row)` as it is made (the CLI writes it to `sft_metrics.jsonl` there and
    then).

    With `checkpoints` (a `checkpoint.Checkpointer`) the parameters, AdamW state and step are
    saved on its interval and at the last step, with the training settings, a hash of the
    examples and `meta` (JSON). `resume=True` restores the newest checkpoint that loads
    (`restore_newest`: a damaged newer one is named and moved aside) and goes on from its step;
    other settings or examples than the checkpoint's are a ValueError. `on_start(step)` is
    called once, with the step training starts from (0, or the restored one)."""
    if steps < 1 or batch_size < 1 or not problems:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and problems; got {steps}, "
                         f"{batch_size}, {len(problems)} problems")
    if resume and checkpoints is None:
        raise ValueError("resume=True needs the run's checkpoints: pass checkpoints="
                         "Checkpointer(DIR / 'checkpoints', every=N)")
    cfg = TrainConfig(learning_rate=learning_rate, total_steps=steps,
                      warmup_steps=steps // 10 if warmup_steps is None else warmup_steps,
                      micro_batch_size=micro_batch_size, compute_dtype=compute_dtype, remat=remat)
    if task == "countdown":   # a `search_fraction` share as search traces (`data.search_traces`)
        examples = sft_data.countdown_sft_examples(problems, template=template, seed=seed,
                                                   search_fraction=search_fraction,
                                                   **search_options)
    elif search_fraction or search_options:
        raise ValueError("search traces are written for Countdown only; drop --search-fraction")
    else:
        examples = [sft_data.sft_example(task, q, template=template, seed=seed) for q in problems]
    # What a resume must match (micro_batch_size and remat only split the same update in memory).
    settings = dict(task=task, template=template, steps=steps, batch_size=batch_size,
                    learning_rate=learning_rate, warmup_steps=cfg.warmup_steps,
                    compute_dtype=compute_dtype, seed=seed, search_fraction=search_fraction,
                    **{k: v for k, v in search_options.items() if k != "count_tokens"},
                    examples_sha256=hashlib.sha256(json.dumps(examples).encode()).hexdigest())
    full = build_sft_batch(tokenizer, examples)          # fixed columns: one compiled program
    # Step s trains on rows order[s * batch_size:][:batch_size]: a function of the seed, s, the
    # batch size and the data alone, whatever step a run starts from, so a resume repeats the
    # straight run's batches.
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(examples))
                            for _ in range(-(-steps * batch_size // len(examples)))])
    optimizer, _ = init_training(model, cfg, GRPOConfig(beta=0.0), seed=seed)  # AdamW, nnx.Param
    start = 0
    if resume:
        saved = checkpoints.newest_meta()
        if saved is None:
            raise FileNotFoundError(f"no SFT checkpoint to resume in {checkpoints.directory}")
        changed = changed_settings(saved["sft"], settings)
        if changed:   # checked before the restore: a refused resume leaves the model alone
            raise ValueError(f"resume with other SFT settings or examples than the checkpoint's: "
                             f"{sorted(changed)}; pass the saved values, or start a new run in "
                             "another folder")
        start = checkpoints.restore_newest(model, optimizer, nnx.Param)["step"]
        if jax.process_index() == 0:
            print(f"SFT: resuming after step {start} of {steps}, from {checkpoints.directory}")
    if on_start is not None:
        on_start(start)
    history = []
    from tqdm.auto import tqdm
    for step in tqdm(range(start, steps), desc="SFT", initial=start, total=steps,
                     disable=not progress):
        idx = order[step * batch_size:(step + 1) * batch_size]
        out = jax.device_get(sft_step(model, optimizer, {k: v[idx] for k, v in full.items()}, cfg))
        row = {"step": step + 1, **{k: float(v) for k, v in out.items()}}
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(f"SFT loss is {row['loss']} at step {step + 1}: lower the "
                                     "learning rate")
        history.append(row)
        if on_step is not None:
            on_step(row)
        if checkpoints is not None:   # after the metrics row: a restored step has its row
            checkpoints.save(step + 1, model, optimizer, nnx.Param, force=step + 1 == steps,
                             meta={**(meta or {}), "step": step + 1, "sft": settings})
    if checkpoints is not None:
        checkpoints.wait_until_finished()
    return history


# ----------------------------------------------------------------------------------------------
# The run (the command line's flags: aha_utils.sft_cli)
# ----------------------------------------------------------------------------------------------
def gsm8k_train_set(pool: list[dict], tokenizer, cfg, n: int | None = None
                    ) -> tuple[list[dict], dict[str, int]]:
    """The SFT training rows of GSM8K's train split `pool` (`load_gsm8k("train")`): those
    `sft_data.gsm8k_sft_rows` keeps under `cfg.max_new_tokens`, in a seeded shuffle
    (`cfg.seed`), the first `n` (default all); also the skipped counts."""
    rows, skipped = sft_data.gsm8k_sft_rows(pool, tokenizer,
                                            max_completion_tokens=cfg.max_new_tokens,
                                            template=cfg.template)
    if not rows or (n or 0) > len(rows):
        raise ValueError(f"{len(rows)} GSM8K train rows are usable for SFT at max_new_tokens="
                         f"{cfg.max_new_tokens} (skipped: {skipped}), {n or 'some'} wanted: "
                         "raise --max-new-tokens or ask for fewer --train-problems")
    order = np.random.default_rng(cfg.seed).permutation(len(rows))
    return [rows[i] for i in order[:n]], skipped


def run(args: argparse.Namespace, *, model=None, tokenizer=None) -> dict:
    """Load, evaluate, fine-tune (checkpointed; `--resume` goes on from the newest checkpoint),
    evaluate, save (`model`/`tokenizer` injected for tests)."""
    t0 = time.perf_counter()
    out, is_main = Path(args.out), jax.process_index() == 0
    if (out / "params").exists():
        raise FileExistsError(f"{out} already holds SFT parameters (a finished run); choose "
                              "another --out")
    backend = jax.default_backend()
    overrides = dict(model=args.model, template=args.template, seed=args.seed,
                     gsm8k_path=args.gsm8k_path,
                     eval_n=args.eval_n or (16 if backend == "cpu" else 512))
    if getattr(args, "val_n", None) is not None:
        overrides["val_n"] = args.val_n
    if args.task == "countdown":
        overrides["num_numbers"] = args.num_numbers
    if args.max_new_tokens:
        overrides["max_new_tokens"] = args.max_new_tokens
    cfg = RunConfig.preset(args.task, backend, **overrides)
    ckpt = Checkpointer(out / "checkpoints", every=args.checkpoint_every,
                        keep=args.keep_checkpoints)
    try:   # on any exit, let a save in flight finish: it is the checkpoint to resume from
        summary = _run(args, cfg, ckpt, model, tokenizer, t0)
    finally:
        ckpt.close()
    if is_main:   # params/ holds the result; the checkpoints (GBs each) only served a resume
        shutil.rmtree(ckpt.directory, ignore_errors=True)
    return summary


def _run(args, cfg, ckpt, model, tokenizer, t0) -> dict:
    out, is_main, settings = Path(args.out), jax.process_index() == 0, run_settings(args, cfg)
    meta = ckpt.start_meta(args.resume, held="holds an unfinished SFT run")   # before loading
    if meta is not None:
        check_resume_flags(settings, meta.get("config", {}))
    if model is None:
        from aha_utils.weights import load_model
        model, tokenizer = load_model(cfg.model, dtype=jnp.float32)   # float32 master weights
    problems = Problems(cfg)                             # GSM8K: loads the train split too
    eval_set = problems.eval_set                         # the GRPO run's held-out problems
    n_train, skipped = args.train_problems or args.steps * args.batch, None
    if args.task == "countdown":
        held = {problem_key(q) for q in problems.val_set}   # GRPO's validation: kept out
        train_set = [q for q in make_problems(n_train + len(held), split="train",
                                              num_numbers=args.num_numbers, seed=args.seed)
                     if problem_key(q) not in held][:n_train]
    else:                                                # at most the usable rows by default
        train_set, skipped = gsm8k_train_set(problems.train_pool, tokenizer, cfg,
                                             args.train_problems)
        train_set = train_set[:n_train]
        if is_main:
            print(f"GSM8K SFT: {len(train_set)} train rows; skipped {skipped['reflection']} "
                  f"with a reflection phrase, {skipped['too_long']} longer than "
                  f"{cfg.max_new_tokens} tokens")

    def run_eval(name):
        result, rows = evaluate(model, tokenizer, cfg, eval_set)
        if is_main:
            write_jsonl(out / "completions" / f"eval_{name}.jsonl", rows, mode="w")
        for key in ("accuracy", "format_rate"):
            lo, hi = wilson_interval(round(result[key] * result["n"]), result["n"])
            result[f"{key}_ci95"] = [round(lo, 4), round(hi, 4)]
        return result

    # The base model's evaluation: on a resume, the one the run made before its first step.
    before = run_eval("before") if meta is None else meta["eval_before"]
    live = LiveView(out / "tensorboard", getattr(args, "tensorboard", False) and is_main)
    metrics, earlier, start = out / "sft_metrics.jsonl", [], 0

    def on_start(step):   # drop the rows of steps after the checkpoint: they run again
        nonlocal earlier, start
        earlier, start = [r for r in read_jsonl(metrics) if r["step"] <= step], step
        if is_main:
            rewrite_jsonl(metrics, earlier)   # then a row per step, as it is made

    def on_step(row):
        if is_main:
            write_jsonl(metrics, [row])
            live.log(row)
    t1 = time.perf_counter()
    history = earlier + sft(model, tokenizer, train_set, steps=args.steps, batch_size=args.batch,
                            learning_rate=args.lr, task=args.task, template=args.template,
                            warmup_steps=args.warmup, micro_batch_size=args.micro_batch,
                            compute_dtype=cfg.compute_dtype, seed=args.seed, progress=is_main,
                            on_step=on_step, checkpoints=ckpt, resume=args.resume,
                            meta={"config": settings, "eval_before": before}, on_start=on_start,
                            **search_options(args, cfg, tokenizer))
    live.close()
    sft_minutes = (time.perf_counter() - t1) / 60
    after = run_eval("after")
    save_params(model, out / "params")
    dev = jax.devices()[0]
    summary = {"task": args.task, "model": cfg.model, "phase": "sft",
               **({"experiment": args.experiment} if args.experiment else {}),
               "hardware": f"{len(jax.devices())} x {dev.device_kind} ({jax.default_backend()})",
               "wall_minutes": round((time.perf_counter() - t0) / 60, 2),
               "sft_minutes": round(sft_minutes, 2), "steps": args.steps,
               **({"resumed_from": start} if args.resume else {}),
               "config": {**settings, "train_problems": len(train_set),
                          **({} if skipped is None else {"train_skipped": skipped})},
               "final": {k: history[-1][k] for k in ("loss", "token_accuracy")},
               "eval": {"before": before, "after": after}}
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"SFT {cfg.model}: {args.steps - start} steps in {summary['sft_minutes']} min on "
              f"{summary['hardware']}{f' (resumed after step {start})' if args.resume else ''}; "
              f"loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}\n  held-out "
              f"(greedy, n={after['n']}): accuracy {before['accuracy']:.3f} -> "
              f"{after['accuracy']:.3f}, format {before['format_rate']:.3f} -> "
              f"{after['format_rate']:.3f}\n  parameters in {out / 'params'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: (run(args), 0)[1], argv, args.out)


if __name__ == "__main__":
    sys.exit(main())
