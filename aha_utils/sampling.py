"""Token selection: the maths of one decoding step, on a `[N, V]` row of float32 logits.

Pure functions, no model, no loop: `aha_utils.sampler` calls `select_tokens` once per generated
token inside its jitted `lax.while_loop`, and the notebook checks them on toy rows.

Design decisions:
- Two different distributions are in play. The token is *drawn* from the processed distribution
  (logits / temperature, then top-k, then top-p), but the *log-prob that is returned* is always
  `log_softmax(logits)[token]` at temperature 1 with no truncation: that is the policy's own
  probability, the quantity GRPO's importance ratio and KL term need. A sampler that returned the
  log-prob of the truncated, tempered distribution would bias every ratio by a constant per row.
- Sampling is Gumbel-max (`argmax(logits / T + Gumbel)`, what `jax.random.categorical` does):
  exact, one pass over the vocabulary, no cumulative sums. Removed tokens get `-inf`, so they
  can never win. Without top-k/top-p (GRPO's rollouts) it is done in two levels, a block of the
  vocabulary and then a token inside it (`two_level_sample`): the same distribution with
  1,024 Gumbels a row instead of 262,144, because generating the random bits was the costliest
  part of a step's token choice (94 of 2600 us a decode step of the 1B at 64 rows, H100).
- top-k uses `lax.top_k` and then works on the k survivors only (sorted, small). top-p alone
  needs the whole vocabulary in sorted order; that is one full sort per step, exact but the
  costliest option (262144 entries a row): prefer `top_k` (e.g. 64) together with `top_p`.
- top-p keeps the smallest set of most-probable tokens whose mass reaches `top_p`: a token stays
  when the mass of the tokens strictly before it in sorted order is below `top_p`, so the most
  probable token always stays and `top_p=1` keeps everything.
- What is static (changes the compiled program) and what is traced (a new value re-uses it):
  greedy or not, `top_k` and whether top-p is on are static; `temperature` and `top_p` values are
  traced arrays, so a notebook can sweep temperatures without recompiling.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """`log_softmax(logits)[tokens]` at temperature 1: float32 `[N]` for logits `[N, V]`.

    Computed as `logit - logsumexp`, so no `[N, V]` log-prob array is kept."""
    logits = logits.astype(F32)
    picked = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0]   # [N]
    return picked - jax.nn.logsumexp(logits, axis=-1)                      # [N]


def top_p_mask(sorted_logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Which entries of descending-sorted logits `[N, K]` lie in the nucleus of mass `top_p`."""
    probs = jax.nn.softmax(sorted_logits, axis=-1)                         # [N, K]
    mass_before = jnp.cumsum(probs, axis=-1) - probs                       # [N, K] exclusive
    return mass_before < top_p


def select_tokens(logits: jax.Array, rng: jax.Array, *, greedy: bool, temperature=1.0,
                  top_k: int | None = None, top_p=None) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row of `logits` `[N, V]`; return `(tokens int32 [N], logprobs f32 [N])`.

    `greedy=True` takes the argmax (temperature, top-k and top-p are then irrelevant). Otherwise
    the token is drawn from softmax(logits / temperature) restricted to the `top_k` largest and
    then to the top-`top_p` nucleus (`None` = no restriction). The returned log-prob is always
    under the untempered, untruncated softmax (see the module docstring).
    """
    logits = logits.astype(F32)                                            # [N, V]
    if greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)             # [N]
        return tokens, token_logprobs(logits, tokens)

    if top_k is None and top_p is None:   # GRPO's rollouts: the whole vocabulary, two levels
        return two_level_sample(logits, temperature, rng)

    scaled = logits / jnp.asarray(temperature, F32)                        # [N, V]
    if top_k is not None:
        cand, cand_ids = jax.lax.top_k(scaled, top_k)                      # [N, k], descending
    else:
        cand_ids = jnp.argsort(-scaled, axis=-1)                           # [N, V] full sort
        cand = jnp.take_along_axis(scaled, cand_ids, axis=-1)              # [N, V]
    if top_p is not None:
        cand = jnp.where(top_p_mask(cand, jnp.asarray(top_p, F32)), cand, -jnp.inf)
    gumbel = jax.random.gumbel(rng, cand.shape, F32)                       # [N, V] or [N, k]
    choice = jnp.argmax(cand + gumbel, axis=-1)                            # [N]
    tokens = jnp.take_along_axis(cand_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return tokens, token_logprobs(logits, tokens)


def block_size(vocab_size: int) -> int:
    """The largest power of two <= sqrt(V) that divides V (512 for Gemma's 262144; 1 = none)."""
    c = 1
    while (2 * c) ** 2 <= vocab_size and vocab_size % (2 * c) == 0:
        c *= 2
    return c


def two_level_sample(logits: jax.Array, temperature, rng: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
    """An exact draw from `softmax(logits / temperature)` `[N, V]` with about `2 sqrt(V)` Gumbels
    a row, and the drawn tokens' log-probs at temperature 1: `(tokens int32 [N], logprobs [N])`.

    P(token) = P(its block) P(token | block): draw a block of `c` tokens by Gumbel-max over the
    blocks' logsumexps, then a token inside it by Gumbel-max over its `c` scores. Same
    distribution as one Gumbel per token, but the random bits, which cost more than reading the
    logits (16.7M threefry draws a step at 64 rows), shrink 256-fold for Gemma's vocabulary.
    Both distributions' normalisers come from the same two passes over the logits (each block's
    max, then its sums of `exp` at temperature 1 and at `temperature`), not from one logsumexp
    each: the `[N, V]` row is read twice instead of four times (64 MB a read at 64 rows)."""
    n, v = logits.shape
    c = block_size(v)
    t = jnp.asarray(temperature, F32)
    k_block, k_token = jax.random.split(rng)
    blocks = logits.astype(F32).reshape(n, v // c, c)                      # [N, V/c, c]
    top = jnp.max(blocks, axis=-1)                                         # [N, V/c]
    top = jnp.where(jnp.isneginf(top), 0.0, top)   # an all -inf block: exp(-inf) = 0, not NaN
    z = blocks - top[..., None]                                            # [N, V/c, c] <= 0
    lse_blocks = top + jnp.log(jnp.sum(jnp.exp(z), axis=-1))               # [N, V/c] at T=1
    mass = top / t + jnp.log(jnp.sum(jnp.exp(z / t), axis=-1))             # [N, V/c] at T
    b = jnp.argmax(mass + jax.random.gumbel(k_block, mass.shape, F32), axis=-1)      # [N]
    inner = jnp.take_along_axis(blocks, b[:, None, None], axis=1)[:, 0]    # [N, c]
    j = jnp.argmax(inner / t + jax.random.gumbel(k_token, inner.shape, F32), axis=-1)  # [N]
    picked = jnp.take_along_axis(inner, j[:, None], axis=-1)[:, 0]         # [N]
    tokens = (b * c + j).astype(jnp.int32)
    return tokens, picked - jax.nn.logsumexp(lse_blocks, axis=-1)


def two_level_gumbel_max(scores: jax.Array, rng: jax.Array) -> jax.Array:
    """The tokens of `two_level_sample(scores, 1.0, rng)`: an exact draw from `softmax(scores)`."""
    return two_level_sample(scores, 1.0, rng)[0]
