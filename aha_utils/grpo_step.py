"""One GRPO step, `grpo_step(...)`: sample a group of completions per problem, score them, turn
the rewards into group advantages, build the batch, run the mu optimizer updates, and return the
step's metrics. The loop (`aha_utils.train`), the peer benchmark and notebook 05 all call it, so
the order of those stages is written down once.

The batch layout (`build_batch`) is `aha_utils.train_step`'s: rows = problems x G (samples of
one prompt adjacent), the left-padded prompt then the completion, positions -1 on padding.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils import grpo
from aha_utils.analysis import AHA_KEYS
from aha_utils.evaluation import (STOP_STRINGS, RewardFn, prompts_of, score_completions,
                                  search_summary)
from aha_utils.run_config import RunConfig
from aha_utils.sampler import Completions, encode_prompts, generate
from aha_utils.train_config import TrainConfig
from aha_utils.train_step import compile_train_step, grpo_updates, trainable_filter


@dataclasses.dataclass
class StepOutput:
    """What one `grpo_step` did: its samples, scores, batch and metrics (host values)."""
    comp: Completions               # the sampled completions (with the sampler's log-probs)
    terms: dict[str, np.ndarray]    # every reward term per completion, [N]
    batch: dict                     # the train-step batch (advantages included)
    updates: dict                   # host floats, each the mean over the mu updates
    metrics: dict                   # the step's metrics.jsonl fields (no step, evals, step time)
    finite: bool                    # loss, gradient norm and trainable parameters all finite
    sample_time_s: float
    score_time_s: float
    update_time_s: float


def step_seed(base_key: jax.Array, step: int) -> int:
    """The sampling seed of step `step` (0-based): a pure function of the run's key and the
    step, so a resumed run samples exactly what a straight one would have."""
    return int(jax.random.bits(jax.random.fold_in(base_key, step), dtype=jnp.uint32) >> 1)


def sample_group(model, tokenizer, cfg: RunConfig, problems: list[dict], seed: int
                 ) -> Completions:
    """G = `cfg.num_samples` completions of each problem's prompt (samples of one prompt
    adjacent), with the sampler's log-probs, decoded in the train step's compute dtype."""
    return generate(model, tokenizer, prompts_of(cfg, problems),
                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    top_k=cfg.top_k, top_p=cfg.top_p,
                    num_samples=cfg.num_samples, seed=seed, stop_strings=STOP_STRINGS,
                    compute_dtype=cfg.compute_dtype)


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


def score_group(comp: Completions, problems: list[dict], cfg: RunConfig, reward_fn: RewardFn
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Every reward term per completion, then the group advantages and the batch."""
    per_completion = [q for q in problems for _ in range(cfg.num_samples)]
    terms = score_completions(reward_fn, comp.texts, per_completion)
    advantages = grpo.group_advantages(terms["reward"], cfg.num_samples,
                                       scale_rewards=cfg.scale_rewards)           # [N]
    return terms, build_batch(comp, advantages)


def compile_ahead(model, optimizer, tokenizer, cfg: RunConfig, problems: list[dict], grpo_cfg,
                  train_cfg, ref_params) -> Callable[[], None]:
    """Start compiling the train step for the batch `problems` will make, in a background
    thread; returns `wait()`, which waits and re-raises the thread's error (free once done).

    The train step then compiles while the sampler compiles and runs (XLA releases the GIL).
    The batch's shape is known before sampling: rows = problems x G, columns = the prompts'
    bucket + `max_new_tokens`."""
    _, cols = encode_prompts(tokenizer, prompts_of(cfg, problems))   # as `generate` will
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile-train-step")
    future = pool.submit(compile_train_step, model, optimizer, len(problems) * cfg.num_samples,
                         cols, cfg.max_new_tokens, grpo_cfg, train_cfg, ref_params)
    pool.shutdown(wait=False)
    return future.result


@jax.jit
def all_finite(state) -> jax.Array:
    """A device bool: every leaf of `state` (e.g. the trainable parameters) is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)]))


def mean_updates(updates: list[dict]) -> dict:
    """Host floats, each the mean over the mu updates of one step (`grpo_updates`' metrics)."""
    host = jax.device_get(updates)
    return {k: float(np.mean([u[k] for u in host])) for k in host[0]}


def step_metrics(comp: Completions, terms: dict, upd: dict, batch: dict, sample_s: float,
                 train_s: float, mu: int, aha: dict | None = None) -> dict:
    """The fields of a metrics.jsonl row that one step determines (see `aha_utils.train`);
    `aha`: the sampled completions' search metrics (`evaluation.search_summary`), if any."""
    lengths = comp.lengths
    row = {k: v for k, v in (aha or {}).items() if k in AHA_KEYS}
    for key, values in terms.items():
        row[f"{key}_mean"], row[f"{key}_std"] = float(values.mean()), float(values.std())
    row.update(
        accuracy=row.get("correct_mean"), format_rate=row.get("format_soft_mean"),
        completion_len_mean=float(lengths.mean()), completion_len_max=int(lengths.max()),
        truncated_frac=float((~comp.stopped).mean()),
        loss=upd["loss"], kl=upd.get("kl"), clip_frac=upd["clip_low"] + upd["clip_high"],
        clip_low=upd["clip_low"], clip_high=upd["clip_high"], ratio=upd["ratio"],
        entropy=upd["entropy"], grad_norm=upd["grad_norm"], learning_rate=upd["learning_rate"],
        sample_time_s=sample_s, train_time_s=train_s,
        sample_tokens_per_s=float(lengths.sum()) / sample_s,
        train_tokens_per_s=float(batch["completion_mask"].sum()
                                 + comp.prompt_lengths.sum()) * mu / train_s)
    return row


def grpo_step(model, tokenizer, optimizer, problems: list[dict], cfg: RunConfig, *, seed: int,
              reward_fn: RewardFn, train_cfg: TrainConfig | None = None, ref_params=None,
              wait_compiled: Callable[[], None] | None = None) -> StepOutput:
    """One GRPO step on `problems`, in place on `model` and `optimizer`.

    1. sample G = `cfg.num_samples` completions per problem at `cfg.temperature` (`seed`);
    2. score each with `reward_fn(completion, problem)`; 3. group advantages and the batch;
    4. mu = `cfg.num_iterations` updates (`train_cfg`, default `cfg.train_config()`; `wait_compiled`
    from `compile_ahead` is called just before them). Non-finite results are reported in
    `.finite`, not raised: the caller knows which checkpoint to point at."""
    grpo_cfg, train_cfg = cfg.grpo_config(), train_cfg or cfg.train_config()
    t0 = time.perf_counter()
    comp = sample_group(model, tokenizer, cfg, problems, seed)
    t1 = time.perf_counter()
    terms, batch = score_group(comp, problems, cfg, reward_fn)
    t2 = time.perf_counter()
    if wait_compiled is not None:
        wait_compiled()
    upd = mean_updates(grpo_updates(model, optimizer, batch, grpo_cfg, train_cfg, ref_params))
    t3 = time.perf_counter()
    finite = bool(all_finite(nnx.state(model, trainable_filter(train_cfg))))
    finite = finite and np.isfinite(upd["loss"]) and np.isfinite(upd["grad_norm"])
    grouped = [q for q in problems for _ in range(cfg.num_samples)]   # samples adjacent
    correct = terms.get("correct", [None] * len(comp.texts))
    aha = search_summary(cfg.task, [{"completion": text, "problem": q, "correct": c}
                                    for text, q, c in zip(comp.texts, grouped, correct)])
    metrics = step_metrics(comp, terms, upd, batch, t1 - t0, t3 - t1, cfg.num_iterations, aha)
    return StepOutput(comp, terms, batch, upd, metrics, bool(finite), t1 - t0, t2 - t1, t3 - t2)
