"""The GRPO objective: group-relative advantages and the clipped policy loss, as maths on arrays.

This module imports neither the model, the sampler nor the data: it takes per-token log-probs
`[B, C]` (B completions, C completion columns) and returns a scalar loss. `aha_utils.train_step`
computes the log-probs from the model and calls `policy_loss`; the notebook writes the same
formulas out in a cell and checks them equal to these.

The family it covers (field names follow TRL's `GRPOConfig` so readers can map them):
- Advantages (`group_advantages`): GRPO (DeepSeekMath, Shao et al. 2024) normalises each reward
  by its group's mean and standard deviation, `A_i = (r_i - mean_g) / (std_g + eps)`; Dr.GRPO
  (Liu et al. 2025, "Understanding R1-Zero-Like Training") drops the std (`scale_rewards=False`),
  because dividing by it up-weights groups that are nearly all right or all wrong. The std is the
  unbiased one (ddof=1), as in TRL, and `eps` keeps a constant group at advantage 0.
- Importance ratio (`importance_sampling_level`): "token" is PPO's per-token ratio
  `pi(y_t)/pi_old(y_t)`. "sequence" is GSPO (Zheng et al. 2025): one ratio per completion,
  `s_i = exp(mean_t(log pi - log pi_old))`, length-normalised so it stays near 1. "gspo-token" is
  GSPO-token: every token gets `sg[s_i] * pi(y_t) / sg[pi(y_t)]`, whose value is `s_i` and whose
  gradient is `s_i * grad log pi(y_t)` (the stop-gradient trick). With one advantage per
  completion, as here, "sequence" and "gspo-token" give the same loss and gradients;
  "gspo-token" is the form that would admit per-token advantages.
- Clipping: PPO's surrogate `min(w A, clip(w, 1 - epsilon, 1 + epsilon_high) A)`, with DAPO's
  clip-higher (Yu et al. 2025) as a separate `epsilon_high` (None = symmetric). Where the clipped
  branch is the minimum, the term is constant in the policy and its gradient is exactly zero.
- KL to a reference policy, added per token as `beta * kl_t` (DeepSeekMath puts it in the loss,
  not the reward). Estimators from Schulman, "Approximating KL Divergence" (2020), with
  `d = log pi_ref - log pi`: k1 = `-d` (unbiased, can be negative; its gradient as a loss term is
  zero in expectation on-policy, so it mostly serves as a metric) and k3 = `exp(d) - d - 1`
  (unbiased, always >= 0, 0 when the policies agree; GRPO's choice). `beta = 0` means no
  reference at all: `ref_logp` must then be None, so the caller never pays for its forward.
- Aggregation (`loss_type`): "grpo" averages tokens within each completion, then completions
  (DeepSeekMath; long completions get less weight per token). "bnpo" / "dapo" divide the sum over
  all valid tokens by their count (DAPO's token-mean; identical here, because the count is always
  that of the whole batch, see below). "dr_grpo" divides by a constant, rows x
  `max_completion_length` (Dr.GRPO), so no length bias enters through the normaliser.
- Masks: `mask` `[B, C]` is 1 on valid completion tokens (stop token included) and 0 on padding;
  prompts never reach this module. `mask_truncated_completions` (DAPO's overlong filtering) zeroes
  completions that hit the length limit without stopping; it needs `truncated` `[B]`.
- mu inner updates (`num_iterations`): `old_logp` is always the sampler's log-prob of the token, so
  the first update sees ratio ~1 and later updates on the same batch see the drift, as in GRPO's
  Algorithm 1. The train step runs the updates; this module only reads the field.

Micro-batches: every normaliser can be passed in (`num_sequences`, `num_tokens`), so the train
step gives each micro-batch the counts of the whole batch and the micro-batch losses (and every
metric) *sum* to the full-batch value exactly. Gradient accumulation is then a plain sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aha_utils.train_config import (GRPOConfig, IS_LEVELS, KL_ESTIMATORS,  # noqa: F401
                                     LOSS_TYPES)

F32 = jnp.float32


def group_advantages(rewards, group_size: int, *, scale_rewards: bool = True,
                     eps: float = 1e-4) -> jax.Array:
    """Group-relative advantages `[N]` for rewards `[N]`, the G samples of a prompt adjacent.

    `scale_rewards=True`: GRPO, `(r - mean) / (std + eps)` per group (std with ddof=1).
    `scale_rewards=False`: Dr.GRPO, `r - mean`.
    """
    rewards = jnp.asarray(rewards, F32)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [num_prompts * group_size]; got {rewards.shape}")
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: GRPO compares samples of the same prompt, so "
                         "it needs at least 2 per prompt (use num_samples >= 2, e.g. 8)")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}; "
                         "pass all group_size samples of every prompt, adjacent")
    groups = rewards.reshape(-1, group_size)                              # [N/G, G]
    centred = groups - groups.mean(axis=1, keepdims=True)                 # [N/G, G]
    if scale_rewards:
        centred = centred / (groups.std(axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)                                            # [N]


def loss_mask(mask, truncated, cfg: GRPOConfig) -> jax.Array:
    """The completion mask `[B, C]` the loss uses: with `mask_truncated_completions`, rows that
    hit the length limit without a stop (`truncated` `[B]` True) contribute nothing."""
    mask = jnp.asarray(mask, F32)                                         # [B, C]
    if not cfg.mask_truncated_completions:
        return mask
    if truncated is None:
        raise ValueError("mask_truncated_completions=True needs `truncated` ([B] bool: the "
                         "completion reached max_new_tokens without a stop token)")
    truncated = jnp.asarray(truncated)
    if truncated.shape != mask.shape[:1]:
        raise ValueError(f"truncated must be [B]={mask.shape[:1]}; got {truncated.shape}")
    return mask * (1.0 - truncated.astype(F32))[:, None]                  # [B, C]


def kl_per_token(logp, ref_logp, estimator: str) -> jax.Array:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1 / k3)."""
    d = ref_logp - logp                                                   # [B, C] log(pi_ref/pi)
    if estimator == "k1":
        return -d
    if estimator == "k3":
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"kl_estimator={estimator!r}; choose one of {KL_ESTIMATORS}")


def policy_loss(logp, old_logp, ref_logp, advantages, mask, cfg: GRPOConfig, *,
                truncated=None, num_sequences=None, num_tokens=None):
    """The GRPO-family loss (to minimise) and its metrics.

    logp: float `[B, C]` log-probs of the sampled tokens under the policy being trained (the only
    input that carries gradients). old_logp: `[B, C]` the same under the sampling policy.
    ref_logp: `[B, C]` under the reference policy, or None (required iff `cfg.beta > 0`).
    advantages: `[B]`. mask: `[B, C]` 1 on valid completion tokens. truncated: `[B]` bool, needed
    with `mask_truncated_completions`. num_sequences / num_tokens: the normalisers; default to
    this batch's rows and valid tokens. Pass the whole batch's counts when this is a micro-batch.

    Returns `(loss, metrics)`. Every metric is a token-mean over valid tokens with `num_tokens` as
    denominator (so micro-batch metrics sum to the batch's): `kl`, `ratio`, `clip_low`
    (ratio < 1 - epsilon with A < 0), `clip_high` (ratio > 1 + epsilon_high with A > 0) and
    `entropy` (`-log pi` of the sampled tokens, a Monte-Carlo entropy proxy).
    """
    logp = jnp.asarray(logp)
    if logp.ndim != 2:
        raise ValueError(f"logp must be [B, C]; got {logp.shape}")
    for name, x in (("old_logp", old_logp), ("mask", mask)) + (
            (("ref_logp", ref_logp),) if ref_logp is not None else ()):
        if jnp.shape(x) != logp.shape:
            raise ValueError(f"{name} must have logp's shape {logp.shape}; got {jnp.shape(x)}")
    if jnp.shape(advantages) != logp.shape[:1]:
        raise ValueError(f"advantages must be [B]={logp.shape[:1]}; got {jnp.shape(advantages)}")
    if cfg.beta > 0 and ref_logp is None:
        raise ValueError(f"beta={cfg.beta} > 0 needs ref_logp (the reference policy's log-probs)")
    if cfg.beta == 0 and ref_logp is not None:
        raise ValueError("beta == 0 uses no reference policy: pass ref_logp=None and skip its "
                         "forward pass")

    mask = loss_mask(mask, truncated, cfg)                                # [B, C]
    # Padding may hold anything (the sampler's 0s, a forward's junk); zero it before exp, so an
    # extreme value there cannot turn into inf * 0 = NaN in the loss or its gradient.
    valid = mask > 0                                                      # [B, C]
    logp = jnp.where(valid, logp, 0.0)
    old_logp = jnp.where(valid, old_logp, 0.0)
    ref_logp = None if ref_logp is None else jnp.where(valid, ref_logp, 0.0)
    rows, width = logp.shape
    n_seq = rows if num_sequences is None else num_sequences
    n_tok = jnp.maximum(mask.sum(), 1.0) if num_tokens is None else num_tokens
    lengths = jnp.maximum(mask.sum(axis=1), 1.0)                          # [B]
    adv = jnp.asarray(advantages, F32)[:, None]                           # [B, 1]

    log_ratio = logp - old_logp                                           # [B, C]
    if cfg.importance_sampling_level == "token":
        log_w = log_ratio                                                 # [B, C]
    else:
        seq = (log_ratio * mask).sum(axis=1) / lengths                    # [B] log s_i
        if cfg.importance_sampling_level == "sequence":
            log_w = jnp.broadcast_to(seq[:, None], logp.shape)            # [B, C]
        else:  # gspo-token: value s_i, gradient s_i * grad log pi(y_t)
            sg = jax.lax.stop_gradient
            log_w = sg(seq)[:, None] + logp - sg(logp)                    # [B, C]
    ratio = jnp.exp(log_w)                                                # [B, C]
    clipped = jnp.clip(ratio, 1.0 - cfg.epsilon, 1.0 + cfg.eps_high)      # [B, C]
    per_token = -jnp.minimum(ratio * adv, clipped * adv)                  # [B, C]

    def token_mean(x):  # additive over micro-batches: the denominator is the batch's
        return (x * mask).sum() / n_tok

    metrics = {}
    if cfg.beta > 0:
        kl = kl_per_token(logp, ref_logp, cfg.kl_estimator)               # [B, C]
        per_token = per_token + cfg.beta * kl
        metrics["kl"] = token_mean(kl)

    if cfg.loss_type == "grpo":
        loss = ((per_token * mask).sum(axis=1) / lengths).sum() / n_seq
    elif cfg.loss_type in ("bnpo", "dapo"):
        loss = (per_token * mask).sum() / n_tok
    else:  # dr_grpo
        max_len = cfg.max_completion_length or width
        loss = (per_token * mask).sum() / (n_seq * max_len)

    ratio_sg = jax.lax.stop_gradient(ratio)
    metrics.update(
        loss=loss,
        ratio=token_mean(ratio_sg),
        clip_low=token_mean(((ratio_sg < 1.0 - cfg.epsilon) & (adv < 0)).astype(F32)),
        clip_high=token_mean(((ratio_sg > 1.0 + cfg.eps_high) & (adv > 0)).astype(F32)),
        entropy=token_mean(-jax.lax.stop_gradient(logp)),
    )
    if "kl" in metrics:
        metrics["kl"] = jax.lax.stop_gradient(metrics["kl"])
    return loss, metrics
