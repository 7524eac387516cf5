"""One GRPO optimizer update: log-probs from the model, the `aha_utils.grpo` loss, AdamW.

`train_step(model, optimizer, batch, grpo_cfg, train_cfg, ref_params=None) -> metrics` is one
update; `grpo_updates(...)` runs the `grpo_cfg.num_iterations` (mu) updates of one sampled
batch, all against the sampler's `old_logprobs` (GRPO's Algorithm 1). `loss_and_grads` is the
same computation without the update (tests, notebooks). `init_training` applies LoRA when
configured and builds the optimizer and the reference state.

The batch is a dict of arrays, rows = completions (samples of one prompt adjacent):
  tokens          int32 [B, P+C]  left-padded prompt, then the completion (padded after its end)
  positions       int32 [B, P+C]  -1 on padding (prompt's left and completion's right)
  completion_mask float [B, C]    1 on valid completion tokens, the stop token included
  old_logprobs    float [B, C]    the sampler's log-probs of those tokens (temperature 1)
  advantages      float [B]       `grpo.group_advantages` of the rewards
  truncated       bool  [B]       optional; needed by `mask_truncated_completions`

Design notes: docs/TRAINING.md, "One update (`aha_utils.train_step`)".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from aha_utils import grpo
from aha_utils.train_config import TrainConfig
from aha_utils.layers import cast_floats
from aha_utils.lora import LoRAParam, apply_lora, has_lora, zero_adapters
from aha_utils.sharding import DATA, model_mesh, put, shard_batch, traced_under

F32 = jnp.float32
BATCH_KEYS = ("tokens", "positions", "completion_mask", "old_logprobs", "advantages", "truncated")


def trainable_filter(cfg: TrainConfig):
    """The nnx filter of what the optimizer updates: the LoRA adapters with LoRA, else every
    `nnx.Param`. (A function here, not a config property: configs import nothing of ours.)"""
    return LoRAParam if cfg.lora_rank is not None else nnx.Param


def make_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine decay until `total_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps, end_value=cfg.learning_rate * cfg.final_lr_fraction)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on the warmup + cosine schedule."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.adamw(make_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2,
                    weight_decay=cfg.weight_decay,
                    mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)))


def init_training(model: nnx.Module, train_cfg: TrainConfig, grpo_cfg: grpo.GRPOConfig, *,
                  seed: int = 0) -> tuple[nnx.Optimizer, nnx.State | None]:
    """Prepare `model` in place: LoRA adapters when `train_cfg.lora_rank` is set. Returns the
    optimizer and `ref_params` (a frozen copy of the initial parameters for full fine-tuning
    with `beta > 0`; None otherwise). Shard the model before calling this."""
    if train_cfg.lora_rank is not None:
        apply_lora(model, rank=train_cfg.lora_rank, alpha=train_cfg.lora_alpha,
                   rngs=nnx.Rngs(seed))
    ref_params = None
    if grpo_cfg.beta > 0 and train_cfg.lora_rank is None:
        ref_params = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, make_optimizer(train_cfg), wrt=trainable_filter(train_cfg))
    mesh = model_mesh(model)
    if mesh is not None:
        _replicate_loose_state(optimizer, mesh)
    return optimizer, ref_params


def rebuild_optimizer(model: nnx.Module, optimizer: nnx.Optimizer, train_cfg: TrainConfig
                      ) -> nnx.Optimizer:
    """A new optimizer for `train_cfg` (e.g. a resized schedule) holding `optimizer`'s state:
    AdamW's moments and counts do not depend on the schedule, which is a function of the count."""
    new = nnx.Optimizer(model, make_optimizer(train_cfg), wrt=trainable_filter(train_cfg))
    nnx.update(new, nnx.state(optimizer))
    return new


def _replicate_loose_state(optimizer: nnx.Optimizer, mesh) -> None:
    """Put the optimizer's scalars (step and AdamW counts) on `mesh`, replicated.

    optax creates them on the default device while the moments follow the parameters' shardings.
    The first jitted update would return them replicated on the mesh, so the second call would
    see new input shardings and compile the whole step again; with several processes an array on
    one local device cannot even be passed next to the mesh's arrays."""
    state = nnx.state(optimizer)
    replicated = NamedSharding(mesh, P())

    def place(x):
        if isinstance(x, jax.Array) and not (isinstance(x.sharding, NamedSharding)
                                              and x.sharding.mesh == mesh):
            return put(x, replicated)
        return x
    nnx.update(optimizer, jax.tree.map(place, state))


def completion_logprobs(model: nnx.Module, tokens, positions, completion_start: int, *,
                        chunk: int = 64, remat: bool = False) -> jax.Array:
    """float32 `[B, C]`: log pi(token | prefix) of columns `completion_start..T-1` of `tokens`
    `[B, T]` (C = T - completion_start), with no `[B, T, V]` or `[B, C, V]` array kept."""
    b, t = tokens.shape
    c = t - completion_start
    if not 1 <= completion_start < t:
        raise ValueError(f"completion_start={completion_start} must lie in [1, {t}): the token "
                         "before the first completion token predicts it")
    h, _ = model.hidden(tokens, positions, remat=remat)                  # [B, T, D]
    h = h[:, completion_start - 1:t - 1]                                 # [B, C, D] predicts next
    targets = tokens[:, completion_start:]                               # [B, C]
    chunk = min(chunk, c)
    n = -(-c // chunk)
    pad = n * chunk - c
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))                           # [B, n*chunk, D]
    targets = jnp.pad(targets, ((0, 0), (0, pad)))                       # [B, n*chunk]
    h = h.reshape(b, n, chunk, -1).swapaxes(0, 1)                        # [n, B, chunk, D]
    targets = targets.reshape(b, n, chunk).swapaxes(0, 1)                # [n, B, chunk]

    # Each chunk's backward recomputes its logits rather than keeping them (`token_logprobs`).
    out = jax.lax.map(lambda a: model.token_logprobs(*a), (h, targets))  # [n, B, chunk]
    return out.swapaxes(0, 1).reshape(b, n * chunk)[:, :c]               # [B, C]


def _micro_loss(params, rest, graphdef, ref_params, mb, counts, grpo_cfg, train_cfg):
    """Loss of one micro-batch (normalised by the whole batch's counts) and its metrics."""
    dtype = jnp.dtype(train_cfg.compute_dtype)
    tokens, positions = mb["tokens"], mb["positions"]
    start = tokens.shape[1] - mb["completion_mask"].shape[1]
    logprobs = lambda m: completion_logprobs(m, tokens, positions, start,
                                             chunk=train_cfg.logprob_chunk, remat=train_cfg.remat)
    model = nnx.merge(graphdef, cast_floats(params, dtype), cast_floats(rest, dtype))
    logp = logprobs(model)                                               # [mb, C]
    ref_logp = None
    if grpo_cfg.beta > 0:
        frozen = zero_adapters(params) if ref_params is None else ref_params
        ref_model = nnx.merge(graphdef, cast_floats(frozen, dtype), cast_floats(rest, dtype))
        ref_logp = jax.lax.stop_gradient(logprobs(ref_model))            # [mb, C]
    return grpo.policy_loss(logp, mb["old_logprobs"], ref_logp, mb["advantages"],
                            mb["completion_mask"], grpo_cfg, truncated=mb.get("truncated"),
                            num_sequences=counts[0], num_tokens=counts[1])


def accumulate_micro_batches(loss_fn, params, batch: dict, micro_batch_size: int | None, mesh):
    """`(grads, metrics)` of `loss_fn(params, micro_batch) -> (loss, metrics)`, summed over the
    micro-batches of `batch` by one `lax.scan` in float32 accumulators. `loss_fn` must normalise
    by the whole batch (then the sums are the full-batch values). Micro-batch k takes rows k,
    k+n, k+2n, ... (a reshape `[mb, n]`), so with a mesh each one stays spread over the `data`
    axis without moving data; it is constrained to `P("data")` inside the scan. The loss is
    traced under `mesh` (`sharding.traced_under`), so cuDNN's attention runs where only rows
    are split (`model.Attention._fused`), for GRPO and SFT alike."""
    rows = batch["tokens"].shape[0]
    mb = micro_batch_size or rows
    n = rows // mb
    micro = jax.tree.map(lambda x: x.reshape(mb, n, *x.shape[1:]).swapaxes(0, 1), batch)

    def constrain(x):
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(mesh, P(DATA, *([None] * (x.ndim - 1)))))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def body(carry, mb_batch):
        (_, metrics), grads = grad_fn(params, jax.tree.map(constrain, mb_batch))
        return jax.tree.map(lambda a, g: a + g.astype(a.dtype), carry, (grads, metrics)), None

    first = jax.tree.map(lambda x: x[0], micro)
    with traced_under(mesh):
        metric_shapes = jax.eval_shape(lambda: loss_fn(params, first)[1])
        init = (jax.tree.map(lambda p: jnp.zeros(p.shape, F32), params),
                jax.tree.map(lambda s: jnp.zeros(s.shape, F32), metric_shapes))
        (grads, metrics), _ = jax.lax.scan(body, init, micro)
    return grads, metrics


def _loss_and_grads(model, batch, ref_params, grpo_cfg, train_cfg, mesh):
    graphdef, params, rest = nnx.split(model, trainable_filter(train_cfg), ...)
    mask = grpo.loss_mask(batch["completion_mask"], batch.get("truncated"), grpo_cfg)
    counts = (batch["tokens"].shape[0], jnp.maximum(mask.sum(), 1.0))   # whole-batch normalisers
    grads, metrics = accumulate_micro_batches(
        lambda p, mb: _micro_loss(p, rest, graphdef, ref_params, mb, counts, grpo_cfg, train_cfg),
        params, batch, train_cfg.micro_batch_size, mesh)
    return metrics["loss"], grads, metrics


@nnx.jit(static_argnames=("grpo_cfg", "train_cfg", "mesh"))
def _loss_and_grads_jit(model, batch, ref_params, grpo_cfg, train_cfg, mesh):
    return _loss_and_grads(model, batch, ref_params, grpo_cfg, train_cfg, mesh)


# The model and optimizer are donated: the update writes the new weights and moments into the
# old buffers instead of holding both copies at the peak (3 x the trainable bytes: 3.2 GB at
# 270M full fine-tuning, about 12 GB at 1B). Nothing reads the old state after a step: orbax
# copies a checkpoint's arrays to host before `save` returns.
@nnx.jit(static_argnames=("grpo_cfg", "train_cfg", "mesh"), donate_argnames=("model", "optimizer"))
def _train_step_jit(model, optimizer, batch, ref_params, grpo_cfg, train_cfg, mesh):
    lr = make_schedule(train_cfg)(optimizer.step[...])
    _, grads, metrics = _loss_and_grads(model, batch, ref_params, grpo_cfg, train_cfg, mesh)
    optimizer.update(model, grads)
    return dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=lr)


def validate(model, batch: dict, grpo_cfg: grpo.GRPOConfig, train_cfg: TrainConfig,
             ref_params) -> dict:
    """Eager checks with messages that say what to do; returns the batch as jax arrays."""
    unknown = set(batch) - set(BATCH_KEYS)
    missing = set(BATCH_KEYS[:-1]) - set(batch)
    if unknown or missing:
        raise ValueError(f"batch keys: missing {sorted(missing)}, unexpected {sorted(unknown)}; "
                         f"expected {BATCH_KEYS} ('truncated' optional)")
    batch = {k: v if isinstance(v, jax.Array) else np.asarray(v) for k, v in batch.items()}
    tokens, mask = batch["tokens"], batch["completion_mask"]
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be int [B, P+C]; got {tokens.dtype}{tokens.shape}")
    rows, cols = tokens.shape
    if mask.ndim != 2 or mask.shape[0] != rows or not 1 <= mask.shape[1] < cols:
        raise ValueError(f"completion_mask must be [B={rows}, C] with 1 <= C < {cols} (at least "
                         f"one prompt column); got {mask.shape}")
    want = {"positions": tokens.shape, "old_logprobs": mask.shape, "advantages": (rows,),
            "truncated": (rows,)}
    for key, shape in want.items():
        if key in batch and batch[key].shape != shape:
            raise ValueError(f"batch[{key!r}] must have shape {shape}; got {batch[key].shape}")
    if grpo_cfg.mask_truncated_completions and "truncated" not in batch:
        raise ValueError("mask_truncated_completions=True needs batch['truncated'] ([B] bool)")
    mb = train_cfg.micro_batch_size or rows
    if rows % mb:
        raise ValueError(f"batch of {rows} rows is not a multiple of micro_batch_size={mb}; "
                         "change one of them (e.g. prompts x samples divisible by it)")
    mesh = model_mesh(model)
    n_data = 1 if mesh is None else mesh.shape[DATA]
    if mb % n_data:
        raise ValueError(f"micro-batch of {mb} rows does not split over the {n_data} data-"
                         f"parallel devices; use a micro_batch_size that is a multiple of {n_data}")
    if mesh is not None:   # rows over `data`; `put` also works when the mesh spans processes
        batch = {k: shard_batch(v, mesh) for k, v in batch.items()}
    else:
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
    if (train_cfg.lora_rank is not None) != has_lora(model):
        raise ValueError(f"train_cfg.lora_rank={train_cfg.lora_rank} but the model "
                         f"{'has' if has_lora(model) else 'has no'} LoRA adapters; build both "
                         "with init_training(model, train_cfg, grpo_cfg)")
    full_ft_ref = grpo_cfg.beta > 0 and train_cfg.lora_rank is None
    if full_ft_ref and ref_params is None:
        raise ValueError("beta > 0 with full fine-tuning needs ref_params (the frozen initial "
                         "parameters): use the ones init_training returns")
    if not full_ft_ref and ref_params is not None:
        raise ValueError("ref_params is only used with beta > 0 and full fine-tuning (LoRA's "
                         "reference is the base itself); pass ref_params=None")
    return batch


def loss_and_grads(model, batch: dict, grpo_cfg: grpo.GRPOConfig, train_cfg: TrainConfig,
                   ref_params=None):
    """`(loss, grads, metrics)` of the whole batch, gradients w.r.t. `trainable_filter(train_cfg)`."""
    batch = validate(model, batch, grpo_cfg, train_cfg, ref_params)
    return _loss_and_grads_jit(model, batch, ref_params, grpo_cfg, train_cfg, model_mesh(model))


def train_step(model, optimizer: nnx.Optimizer, batch: dict, grpo_cfg: grpo.GRPOConfig,
               train_cfg: TrainConfig, ref_params=None) -> dict:
    """One optimizer update on `batch` (in place). Returns device scalars: the `policy_loss`
    metrics summed over micro-batches, `grad_norm` (before clipping) and `learning_rate`."""
    batch = validate(model, batch, grpo_cfg, train_cfg, ref_params)
    return _train_step_jit(model, optimizer, batch, ref_params, grpo_cfg, train_cfg,
                           model_mesh(model))


def compile_train_step(model, optimizer: nnx.Optimizer, rows: int, prompt_cols: int,
                       completion_cols: int, grpo_cfg: grpo.GRPOConfig, train_cfg: TrainConfig,
                       ref_params=None) -> None:
    """Compile `train_step` for a batch of `rows` x (`prompt_cols` + `completion_cols`) tokens
    without running it: a later `train_step` / `grpo_updates` on a batch of that shape finds the
    program in jit's cache and starts at once.

    Meant for a background thread while the sampler produces the first batch, so the two
    compilations overlap (`train.train` does this). Lowering only reads the model and optimizer
    (nnx's trace contexts are thread-local, and nothing is donated, because nothing runs), and
    XLA compiles with the GIL released."""
    if min(rows, prompt_cols, completion_cols) < 1:
        raise ValueError(f"rows={rows}, prompt_cols={prompt_cols} and completion_cols="
                         f"{completion_cols} must all be >= 1")
    cols = prompt_cols + completion_cols
    batch = dict(tokens=np.zeros((rows, cols), np.int32),                   # [B, P+C]
                 positions=np.zeros((rows, cols), np.int32),                # [B, P+C]
                 completion_mask=np.zeros((rows, completion_cols), np.float32),  # [B, C]
                 old_logprobs=np.zeros((rows, completion_cols), np.float32),     # [B, C]
                 advantages=np.zeros((rows,), np.float32),                  # [B]
                 truncated=np.zeros((rows,), bool))                         # [B]
    batch = validate(model, batch, grpo_cfg, train_cfg, ref_params)
    _train_step_jit.lower(model, optimizer, batch, ref_params, grpo_cfg, train_cfg,
                          model_mesh(model)).compile()


def grpo_updates(model, optimizer: nnx.Optimizer, batch: dict, grpo_cfg: grpo.GRPOConfig,
                 train_cfg: TrainConfig, ref_params=None) -> list[dict]:
    """The mu = `grpo_cfg.num_iterations` updates of one sampled batch (one compiled step run mu
    times). Every update keeps the sampler's `old_logprobs`, so from the second on the ratio
    measures how far the policy has moved and the clip bounds it. Returns each update's metrics."""
    batch = validate(model, batch, grpo_cfg, train_cfg, ref_params)
    mesh = model_mesh(model)
    return [_train_step_jit(model, optimizer, batch, ref_params, grpo_cfg, train_cfg, mesh)
            for _ in range(grpo_cfg.num_iterations)]
