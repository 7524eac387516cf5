"""The GRPO training loop and its CLI: the one place that ties the library together.

    python -m aha_utils.train --task {countdown,gsm8k} --model NAME --steps N --out DIR [--resume]

Each step, top to bottom in `train`: problems of this step -> prompts -> G samples each
(`sampler.generate`, temperature 1) -> rewards per completion -> group advantages -> mu
optimizer updates (`train_step.grpo_updates`) -> a line of `DIR/metrics.jsonl` -> every
`eval_every` steps a greedy held-out evaluation -> every `checkpoint_every` steps an orbax
checkpoint. The defaults come from `RunConfig.preset(task, jax.default_backend())`;
`AHA_QUICK=1` applies `RunConfig.quick()`.

Files under DIR (only process 0 writes the non-orbax ones):
- `metrics.jsonl`: one object per step. `step` (completed steps, 1-based); for the reward and
  each of its terms `<term>_mean`, `<term>_std` (`reward_*`, `format_soft_*`, `correct_*`, ...);
  `accuracy` and `format_rate` (mean `correct` and `format_soft` of the step's samples);
  `completion_len_mean`, `completion_len_max`, `truncated_frac` (no stop before
  `max_new_tokens`); from the updates (mean over mu): `loss`, `kl` (null when beta = 0: there is
  no reference policy), `clip_frac` (= `clip_low` + `clip_high`), `ratio`, `entropy`,
  `grad_norm`, `learning_rate`; `step_time_s`, `sample_time_s`, `train_time_s`,
  `sample_tokens_per_s` (generated tokens), `train_tokens_per_s` (valid prompt + completion
  tokens x mu); `eval_accuracy`, `eval_format_rate` on the steps that evaluated.
- `eval.jsonl`: `{"step", "accuracy", "format_rate", "n"}` per evaluation (step 0 = before).
- `completions/step_XXXXX.jsonl`: the step's samples, one row each: `problem`, `completion`,
  `tokens` (generated, stop included), `truncated`, and every reward term (the prompt is
  `make_prompt(task, problem, template=config.template)`, not repeated G times); and
  `completions/eval_XXXXX.jsonl`: `problem`, `completion`, `correct`, `format_soft`.
- `checkpoints/<step>/` (orbax, the last `keep_checkpoints`), `summary.json`, `reward.png`.

Design decisions:
- Determinism without storing much: step s samples with a seed from
  `jax.random.fold_in(key(seed), s)` and draws its problems from `(seed, s)`, so a resumed run
  makes the same draws as a straight one. The checkpoint still stores the step, the data
  position and the base key, as well as the config: `--resume` with different settings is an
  error, never a silently mixed run.
- Crash safety: `metrics.jsonl` lines past the restored step are dropped on resume (those steps
  run again); a non-finite loss, gradient or parameter stops before that step is logged or
  saved, so the last good checkpoint is never overwritten with a diverged model.
- The first step's two compilations overlap: `compile_ahead` compiles the train step for the
  first batch's shape in a background thread while the first evaluation and the first sampling
  compile and run, and the first update waits for it (an error in the thread is raised there).
- Reward functions run per completion (`reward_fn(completion, problem) -> {"reward": r, term:
  value, ...}`) so an exception or a non-finite value is reported with the function's name and
  the offending completion.
- The loop never prints or stores environment variables: Kaggle credentials, if any, are read
  by kagglehub inside `load_model` and go nowhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils import grpo
from aha_utils.analysis import wilson_interval
from aha_utils.checkpoint import Checkpointer
from aha_utils.data.countdown import make_problems
from aha_utils.data.gsm8k import load_gsm8k
from aha_utils.data.prompts import make_prompt
from aha_utils.rewards import TASKS, get_scheme, reward_terms
from aha_utils.run_config import RunConfig
from aha_utils.sampler import Completions, encode_prompts, generate
from aha_utils.sft import load_params
from aha_utils.train_step import compile_train_step, grpo_updates, init_training

STOP_STRINGS = ("</answer>",)
RewardFn = Callable[[str, Mapping], Mapping[str, float]]
# Metrics that differ between two identical runs only by timing.
TIMING_KEYS = ("step_time_s", "sample_time_s", "train_time_s", "sample_tokens_per_s",
               "train_tokens_per_s")


def task_reward_fn(task: str, scheme: str = "tinyzero") -> RewardFn:
    """The task's reward with every term: `{"reward": scheme(terms), **terms}`."""
    score = get_scheme(scheme)

    def reward(completion: str, problem: Mapping) -> dict[str, float]:
        terms = reward_terms(task, completion, problem)
        return {"reward": score(terms), **terms}

    reward.__name__ = reward.__qualname__ = f"{task}_{scheme}_reward"
    return reward


def score_completions(reward_fn: RewardFn, texts: list[str], problems: list[Mapping]
                      ) -> dict[str, np.ndarray]:
    """Per-term arrays `[N]`; `problems[i]` belongs to `texts[i]`. Errors name the function and
    the completion, since a reward bug otherwise surfaces as a mystery deep in the loop."""
    name = getattr(reward_fn, "__qualname__", None) or repr(reward_fn)
    out: dict[str, list[float]] = {}
    for i, (text, problem) in enumerate(zip(texts, problems)):
        try:
            terms = reward_fn(text, problem)
        except Exception as e:
            raise RuntimeError(f"reward function {name} raised {type(e).__name__}: {e}\n  on "
                               f"completion {i}: {text!r}\n  of problem {dict(problem)}") from e
        if not isinstance(terms, Mapping) or "reward" not in terms:
            raise TypeError(f"reward function {name} must return a dict with a 'reward' key; "
                            f"got {terms!r} for completion {i}: {text!r}")
        if out and set(terms) != set(out):
            raise ValueError(f"reward function {name} returned keys {sorted(terms)} for "
                             f"completion {i} but {sorted(out)} before: keep them fixed")
        for key, value in terms.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"reward function {name} returned {key}={value} (not finite) "
                                 f"for completion {i}: {text!r}")
            out.setdefault(key, []).append(float(value))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def step_seed(base_key: jax.Array, step: int) -> int:
    """The sampling seed of step `step` (0-based): a pure function of the run's key and the
    step, so a resumed run samples exactly what a straight one would have."""
    return int(jax.random.bits(jax.random.fold_in(base_key, step), dtype=jnp.uint32) >> 1)


def prompts_of(cfg: RunConfig, problems: list[dict]) -> list[str]:
    """The prompt text of each problem, in the run's task and template."""
    return [make_prompt(cfg.task, q, template=cfg.template) for q in problems]


def sample_group(model, tokenizer, cfg: RunConfig, problems: list[dict], seed: int
                 ) -> Completions:
    """Loop stage 1: G = `cfg.num_samples` completions of each problem's prompt (samples of one
    prompt adjacent), with the sampler's log-probs, decoded in the train step's compute dtype
    (half the bytes a step for bfloat16; `aha_utils.sampler` says what it costs the log-probs)."""
    return generate(model, tokenizer, prompts_of(cfg, problems),
                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    top_k=cfg.top_k, top_p=cfg.top_p,
                    num_samples=cfg.num_samples, seed=seed, stop_strings=STOP_STRINGS,
                    compute_dtype=cfg.compute_dtype)


def compile_ahead(model, optimizer, tokenizer, cfg: RunConfig, problems: list[dict], grpo_cfg,
                  train_cfg, ref_params) -> Callable[[], None]:
    """Start compiling the train step for the batch `problems` will make, in a background
    thread, and return `wait()`: it waits for the compilation and re-raises its error, if any
    (on every call: calling it before each update costs nothing once it is done).

    The first step otherwise compiles the sampler, runs it, then compiles the train step; with
    this the train step compiles while the sampler compiles and runs (XLA releases the GIL), and
    its first call finds the program cached. The batch's shape is known before sampling: rows =
    problems x G, columns = the prompts' bucket + `max_new_tokens` (`build_batch`)."""
    _, cols = encode_prompts(tokenizer, prompts_of(cfg, problems))   # as `generate` will
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile-train-step")
    future = pool.submit(compile_train_step, model, optimizer, len(problems) * cfg.num_samples,
                         cols, cfg.max_new_tokens, grpo_cfg, train_cfg, ref_params)
    pool.shutdown(wait=False)
    return future.result   # waits, and re-raises the thread's error


def score_group(comp: Completions, problems: list[dict], cfg: RunConfig, reward_fn: RewardFn
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Loop stages 2-3: every reward term per completion, then the group advantages and the
    `train_step` batch. Returns `(terms, batch)`."""
    per_completion = [q for q in problems for _ in range(cfg.num_samples)]
    terms = score_completions(reward_fn, comp.texts, per_completion)
    advantages = grpo.group_advantages(terms["reward"], cfg.num_samples,
                                       scale_rewards=cfg.scale_rewards)           # [N]
    return terms, build_batch(comp, advantages)


# ----------------------------------------------------------------------------------------------
# Data: deterministic per (seed, step)
# ----------------------------------------------------------------------------------------------
def _subseed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class Problems:
    """Training problems of step s and the held-out evaluation set of a run."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        if cfg.task == "gsm8k":
            self.train_pool = load_gsm8k("train", path=cfg.gsm8k_path)
            self.eval_set = load_gsm8k("test", path=cfg.gsm8k_path)[:cfg.eval_n]
        else:
            self.eval_set = make_problems(cfg.eval_n, num_numbers=cfg.num_numbers,
                                          seed=cfg.seed, split="test")
        self._perms: dict[int, np.ndarray] = {}

    def position(self, step: int) -> int:
        """Problems consumed before step `step` (the data position stored in checkpoints)."""
        return step * self.cfg.prompts_per_step

    def for_step(self, step: int) -> list[dict]:
        cfg = self.cfg
        if cfg.task == "countdown":   # an endless stream: fresh problems each step
            return make_problems(cfg.prompts_per_step, num_numbers=cfg.num_numbers,
                                 seed=_subseed(cfg.seed, step), split="train")
        n = len(self.train_pool)      # GSM8K: epochs of seeded permutations of the train split
        out = []
        for idx in range(self.position(step), self.position(step + 1)):
            epoch, i = divmod(idx, n)
            if epoch not in self._perms:
                self._perms[epoch] = np.random.default_rng(_subseed(cfg.seed, epoch)).permutation(n)
            out.append(self.train_pool[self._perms[epoch][i]])
        return out


# ----------------------------------------------------------------------------------------------
# Batch, evaluation, files
# ----------------------------------------------------------------------------------------------
def build_batch(comp: Completions, advantages) -> dict:
    """The `train_step` batch from sampled completions (rows = prompts x G, samples adjacent)."""
    p = comp.prompt_tokens.shape[1]
    m = comp.tokens.shape[1]
    cols_p = np.arange(p)[None, :]                                       # [1, P]
    cols_c = np.arange(m)[None, :]                                       # [1, M]
    pad = (p - comp.prompt_lengths)[:, None]                             # [N, 1] left padding
    pos_p = np.where(cols_p >= pad, cols_p - pad, -1)                    # [N, P]
    valid = cols_c < comp.lengths[:, None]                               # [N, M]
    pos_c = np.where(valid, comp.prompt_lengths[:, None] + cols_c, -1)   # [N, M]
    return dict(tokens=np.concatenate([comp.prompt_tokens, comp.tokens], 1).astype(np.int32),
                positions=np.concatenate([pos_p, pos_c], 1).astype(np.int32),
                completion_mask=valid.astype(np.float32),
                old_logprobs=comp.logprobs.astype(np.float32),
                advantages=np.asarray(advantages, np.float32),
                truncated=~comp.stopped)


def evaluate(model, tokenizer, cfg: RunConfig, problems: list[dict]) -> tuple[dict, list[dict]]:
    """Greedy accuracy and format rate on held-out `problems`; also the completions."""
    rows, chunk = [], cfg.prompts_per_step * cfg.num_samples   # bounded like a training batch
    for start in range(0, len(problems), chunk):
        part = problems[start:start + chunk]
        comp = generate(model, tokenizer, prompts_of(cfg, part),
                        max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                        stop_strings=STOP_STRINGS, compute_dtype=cfg.compute_dtype)
        for q, text in zip(part, comp.texts):
            terms = reward_terms(cfg.task, text, q)
            rows.append({"problem": q, "completion": text, "correct": terms["correct"],
                         "format_soft": terms["format_soft"]})
    result = {"accuracy": float(np.mean([r["correct"] for r in rows])),
              "format_rate": float(np.mean([r["format_soft"] for r in rows])), "n": len(rows)}
    return result, rows


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _write_jsonl(path: Path, rows: list[dict], mode: str = "a") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


@jax.jit
def all_finite(state) -> jax.Array:
    """A device bool: every leaf of `state` (e.g. the trainable parameters) is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)]))


def _agree(flag: bool) -> bool:
    """Process 0's `flag` on every process (multi-host runs must take the same branch)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def mean_updates(updates: list[dict]) -> dict:
    """Host floats, each the mean over the mu updates of one step (`grpo_updates`' metrics)."""
    host = jax.device_get(updates)
    return {k: float(np.mean([u[k] for u in host])) for k in host[0]}


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, model=None,
          tokenizer=None, reward_fn: RewardFn | None = None, progress: bool = True,
          time_limit_s: float | None = None) -> list[dict]:
    """Run GRPO up to `cfg.steps` steps; returns the metrics rows written by this call.

    `model`/`tokenizer` default to `load_model(cfg.model)` (inject them to test with a toy model;
    the model is modified in place: LoRA applied, trained). `reward_fn(completion, problem)`
    defaults to the task's reward under `cfg.reward_scheme`, with every term logged.

    `time_limit_s` ends the run early, as if `cfg.steps` were reached, after the first step that
    finishes past that many seconds of this call: the step is evaluated, checkpointed and
    summarised, so a session with a hard end (Kaggle's 9 h, Colab's less) stops cleanly, and
    `--resume` later continues towards `cfg.steps`.
    """
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time_limit_s={time_limit_s} must be > 0 (or None: no limit)")
    out = Path(out_dir)
    ckpt = Checkpointer(out / "checkpoints", every=cfg.checkpoint_every, keep=cfg.keep_checkpoints)
    try:   # on any exit, let a save in flight finish: it is the good checkpoint to resume from
        return _train(cfg, out, ckpt, resume, model, tokenizer, reward_fn, progress,
                      time_limit_s)
    finally:
        ckpt.close()


def _train(cfg, out, ckpt, resume, model, tokenizer, reward_fn, progress, time_limit_s
           ) -> list[dict]:
    t_call = time.perf_counter()
    is_main = jax.process_index() == 0
    latest = ckpt.latest_step()
    if resume and latest is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {ckpt.directory}; run without "
                                "--resume to start a fresh run there")
    if not resume and latest is not None:
        raise FileExistsError(f"{out} already holds a run (checkpoint at step {latest}); pass "
                              "--resume to continue it, or choose another --out")
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer, or neither (then cfg.model is loaded)")
    if model is None:
        from aha_utils.weights import load_model   # heavy: only when not injected
        model, tokenizer = load_model(cfg.model, dtype=jnp.dtype(cfg.param_dtype))
    if cfg.init_from:   # the warm-start arm: SFT weights, before LoRA and the optimizer
        load_params(model, cfg.init_from)
    reward_fn = reward_fn or task_reward_fn(cfg.task, cfg.reward_scheme)
    grpo_cfg, train_cfg = cfg.grpo_config(), cfg.train_config()
    optimizer, ref_params = init_training(model, train_cfg, grpo_cfg, seed=cfg.seed)
    data = Problems(cfg)
    base_key = jax.random.key(cfg.seed)
    config_json = dataclasses.asdict(cfg)

    start, elapsed_before = 0, 0.0
    if resume:
        meta = ckpt.restore(model, optimizer, train_cfg.trainable)
        # `steps` may grow on resume (that is how a run is extended); nothing else may change.
        changed = {k: (meta["config"].get(k), v) for k, v in config_json.items()
                   if k != "steps" and meta["config"].get(k) != v}
        if changed:
            raise ValueError(f"--resume with settings that differ from the checkpoint's "
                             f"(saved, now): {changed}; use the original settings or a new --out")
        start, elapsed_before = meta["step"], meta.get("elapsed_s", 0.0)
        if start >= cfg.steps:
            raise ValueError(f"the checkpoint is at step {start} already; pass --steps larger "
                             f"than {start} to continue")
    if is_main:   # drop lines of steps after the checkpoint: they run again
        for name in ("metrics.jsonl", "eval.jsonl"):
            keep = [r for r in _read_jsonl(out / name) if r["step"] <= start]
            _write_jsonl(out / name, keep, mode="w")

    def run_eval(step: int) -> dict:
        result, rows = evaluate(model, tokenizer, cfg, data.eval_set)
        if is_main:
            _write_jsonl(out / "eval.jsonl", [{"step": step, **result}])
            _write_jsonl(out / "completions" / f"eval_{step:05d}.jsonl", rows, mode="w")
        return result

    t_run = time.perf_counter()
    # The train step compiles while the first evaluation and the first sampling run.
    wait_compiled = compile_ahead(model, optimizer, tokenizer, cfg, data.for_step(start),
                                  grpo_cfg, train_cfg, ref_params)
    if start == 0:
        run_eval(0)   # "before": the base model's greedy accuracy and format rate
    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.steps, initial=start, desc=f"GRPO {cfg.task}",
               disable=not (progress and is_main))
    history = []
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        # 1. Sample G completions of each of this step's prompts.
        problems = data.for_step(step)
        comp = sample_group(model, tokenizer, cfg, problems, step_seed(base_key, step))
        t1 = time.perf_counter()
        # 2. Score each completion, 3. compare it with its group.
        terms, batch = score_group(comp, problems, cfg, reward_fn)
        # 4. mu updates against the sampler's log-probs.
        wait_compiled()
        upd = mean_updates(grpo_updates(model, optimizer, batch, grpo_cfg, train_cfg, ref_params))
        t2 = time.perf_counter()
        finite = all_finite(nnx.state(model, train_cfg.trainable))
        if not (math.isfinite(upd["loss"]) and math.isfinite(upd["grad_norm"]) and finite):
            ckpt.wait_until_finished()
            good = ckpt.latest_step()
            raise FloatingPointError(
                f"non-finite training at step {step + 1}: loss={upd['loss']}, grad_norm="
                f"{upd['grad_norm']}, parameters finite={bool(finite)}. This step was not logged "
                f"or saved; the last good checkpoint (step {good}) in {ckpt.directory} is kept. "
                "Lower learning_rate (or max_grad_norm) and --resume, or check the rewards.")

        # 5. Log.
        lengths = comp.lengths
        row = {"step": step + 1}
        for key, values in terms.items():
            row[f"{key}_mean"], row[f"{key}_std"] = float(values.mean()), float(values.std())
        row.update(
            accuracy=row.get("correct_mean"), format_rate=row.get("format_soft_mean"),
            completion_len_mean=float(lengths.mean()), completion_len_max=int(lengths.max()),
            truncated_frac=float((~comp.stopped).mean()),
            loss=upd["loss"], kl=upd.get("kl"), clip_frac=upd["clip_low"] + upd["clip_high"],
            clip_low=upd["clip_low"], clip_high=upd["clip_high"], ratio=upd["ratio"],
            entropy=upd["entropy"], grad_norm=upd["grad_norm"],
            learning_rate=upd["learning_rate"],
            sample_time_s=t1 - t0, train_time_s=t2 - t1,
            sample_tokens_per_s=float(lengths.sum()) / (t1 - t0),
            train_tokens_per_s=float(batch["completion_mask"].sum()
                                     + comp.prompt_lengths.sum()) * cfg.num_iterations / (t2 - t1))
        done = step + 1
        # Every process must agree to stop, so the deadline is process 0's decision.
        last = done == cfg.steps or (time_limit_s is not None and _agree(
            time.perf_counter() - t_call > time_limit_s))
        if is_main and (done % cfg.sample_every == 0 or done == 1 or last):
            _write_jsonl(out / "completions" / f"step_{done:05d}.jsonl",
                         [{"problem": problems[i // cfg.num_samples], "completion": text,
                           "tokens": int(lengths[i]), "truncated": bool(~comp.stopped[i]),
                           **{k: float(v[i]) for k, v in terms.items()}}
                          for i, text in enumerate(comp.texts)], mode="w")
        # 6. Evaluate on held-out problems.
        if done % cfg.eval_every == 0 or last:
            result = run_eval(done)
            row.update(eval_accuracy=result["accuracy"], eval_format_rate=result["format_rate"])
        row["step_time_s"] = time.perf_counter() - t0
        if is_main:
            _write_jsonl(out / "metrics.jsonl", [row])
        history.append(row)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", fmt=f"{row.get('format_rate') or 0:.2f}",
                        len=f"{row['completion_len_mean']:.0f}")
        # 7. Checkpoint (after the log line, so a restored step always has its line).
        ckpt.save(done, model, optimizer, train_cfg.trainable, force=last, meta={
            "step": done, "data_position": data.position(done),
            "rng_key": np.asarray(jax.random.key_data(base_key)).tolist(),
            "elapsed_s": elapsed_before + time.perf_counter() - t_run, "config": config_json})
        if last:
            break
    bar.close()
    ckpt.wait_until_finished()
    if is_main:
        write_summary(cfg, out, elapsed_before + time.perf_counter() - t_run)
    return history


def write_summary(cfg: RunConfig, out: Path, elapsed_s: float) -> dict:
    """`summary.json` (DESIGN.md's format) and `reward.png`; prints a short summary."""
    evals = _read_jsonl(out / "eval.jsonl")
    metrics = _read_jsonl(out / "metrics.jsonl")
    dev = jax.devices()[0]
    summary = {"task": cfg.task, "model": cfg.model,
               "hardware": f"{len(jax.devices())} x {dev.device_kind} ({jax.default_backend()})",
               "wall_minutes": round(elapsed_s / 60, 2), "steps_done": metrics[-1]["step"],
               "config": dataclasses.asdict(cfg),
               "eval": {"before": _eval_summary(evals[0]), "after": _eval_summary(evals[-1])}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_rewards(metrics, evals, out / "reward.png")
    last = metrics[-1]
    print(f"{cfg.task} / {cfg.model}: {last['step']} steps in {summary['wall_minutes']} min on "
          f"{summary['hardware']}\n  last step: reward {last['reward_mean']:.3f}, format "
          f"{last.get('format_rate')}, length {last['completion_len_mean']:.0f}\n  held-out "
          f"(greedy, n={evals[-1]['n']}): accuracy {evals[0]['accuracy']:.3f} -> "
          f"{evals[-1]['accuracy']:.3f}, format {evals[0]['format_rate']:.3f} -> "
          f"{evals[-1]['format_rate']:.3f}\n  files in {out}")
    return summary


def _eval_summary(row: dict) -> dict:
    """One evaluation as summary.json gives it, with a 95% Wilson interval on the accuracy."""
    lo, hi = wilson_interval(round(row["accuracy"] * row["n"]), row["n"])
    return {"accuracy": row["accuracy"], "accuracy_ci95": [round(lo, 4), round(hi, 4)],
            "format_rate": row["format_rate"], "n": row["n"], "step": row["step"]}


def plot_rewards(metrics: list[dict], evals: list[dict], path: Path) -> None:
    # A bare Figure needs no display and, unlike `matplotlib.use("Agg")`, leaves the process's
    # backend alone, so a notebook that calls `train()` keeps its inline plots.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["reward_mean"] for m in metrics], label="train reward (mean)")
    for key, label in (("accuracy", "eval accuracy"), ("format_rate", "eval format rate")):
        ax.plot([e["step"] for e in evals], [e[key] for e in evals], "o--", label=label)
    ax.set_xlabel("GRPO step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> tuple[RunConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m aha_utils.train",
        description="GRPO (R1-Zero style) on Countdown or GSM8K. Defaults: the preset for the "
                    "hardware found (cpu: a few-minute LoRA run; gpu/tpu: the TRL-comparable "
                    "full fine-tune); AHA_QUICK=1 shrinks it.")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", default=None, help="default: the preset's (gemma3-270m)")
    parser.add_argument("--steps", type=int, required=True, help="train up to this step")
    parser.add_argument("--out", required=True, help="run folder (metrics, checkpoints, plot)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint in --out (error if none)")
    parser.add_argument("--gsm8k-path", default=None,
                        help="folder with GSM8K train.jsonl/test.jsonl (default: the HF Hub)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop cleanly (evaluate, checkpoint, summarise) after the first "
                             "step that ends past this many minutes; --resume continues later")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any RunConfig field, e.g. --set learning_rate=3e-6 "
                             "--set lora_rank=none --set template=chat (repeatable; applied "
                             "after AHA_QUICK, so it also sets what quick mode shrinks)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1; got {args.steps}")
    overrides = {"steps": args.steps}
    for key in ("model", "gsm8k_path", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = RunConfig.preset(args.task, jax.default_backend(), **overrides)
    if os.environ.get("AHA_QUICK") == "1":
        cfg = cfg.quick()
    try:
        cfg = dataclasses.replace(cfg, **parse_overrides(args.set))
    except ValueError as e:
        parser.error(str(e))
    return cfg, args


def parse_overrides(items: list[str]) -> dict:
    """`["learning_rate=3e-6", "lora_rank=none"]` -> typed RunConfig overrides.

    Each value is parsed as the field's declared type (`int | None` accepts `none`), so a typo
    fails here with the field's name rather than deep inside the run."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(fields)}")
        if key in ("task", "steps"):
            raise ValueError(f"--set {key}=...: use --{key} instead")
        kind = str(fields[key].type)
        if raw.strip().lower() in ("none", "null") and "None" in kind:
            out[key] = None
            continue
        try:
            if kind.startswith("bool"):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("true", "1")
            elif kind.startswith("int"):
                out[key] = int(raw)
            elif kind.startswith("float"):
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise ValueError(f"--set {item!r}: {key} takes a value of type {kind}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    print(f"jax {jax.__version__} on {jax.default_backend()} ({len(jax.devices())} devices); "
          f"{'resuming' if args.resume else 'starting'} {cfg.task} / {cfg.model} up to step "
          f"{cfg.steps} in {args.out}")
    if jax.process_index() == 0:   # shapes only: says before loading anything whether it fits
        from aha_utils.memory import describe
        print(describe(cfg))
    train(cfg, args.out, resume=args.resume,
          time_limit_s=None if args.time_limit is None else 60 * args.time_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
