"""The decoder's building blocks, none of which knows how the decoder is put together:
float32 products with a mixed-precision backward (`einsum_f32`), the tied vocabulary projection
and the log-probs of chosen tokens through it (`capped_logits`, `projected_logprobs`), rotary
embedding (`rope_angles`, `rope`), the attention mask from positions (`attention_mask`),
`RMSNorm`, a random weight (`init_param`), and a parameter tree's cast to a compute dtype
(`cast_floats`, for the train step and the sampler). `aha_utils.model` builds the decoder from
them.

Design decisions:
- Numerics follow the reference implementations: RMSNorm, softmax, RoPE angles and logits in
  float32; matmuls in the parameter dtype (bfloat16 by default) with float32 accumulation.
  The two products whose outputs stay float32 (attention scores, logits) go through
  `einsum_f32`, whose backward rounds the float32 cotangent to the operands' dtype first:
  JAX's own transpose would multiply it by the bf16 operand upcast to float32, and float32
  matmuls run on an H100 at about a seventh of bf16's rate (the vocabulary projection's
  backward alone took 20% of a 1B GRPO update that way).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

F32 = jnp.float32
NEG_INF = float(jnp.finfo(jnp.float32).min)  # finite: a fully masked row (padding) stays NaN-free


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_f32(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, x, y)` accumulated and returned in float32, differentiated with matmuls
    in the operands' own dtype (see the module docstring). `spec` is explicit: "ab,bc->ac"."""
    return jnp.einsum(spec, x, y, preferred_element_type=F32)


def _einsum_f32_fwd(spec, x, y):
    return einsum_f32(spec, x, y), (x, y)


def _einsum_f32_bwd(spec, res, g):
    x, y = res
    inputs, out = spec.split("->")
    xs, ys = inputs.split(",")
    g = g.astype(jnp.result_type(x.dtype, y.dtype))   # float32 operands keep a float32 backward
    dx = jnp.einsum(f"{out},{ys}->{xs}", g, y, preferred_element_type=F32)
    dy = jnp.einsum(f"{out},{xs}->{ys}", g, x, preferred_element_type=F32)
    return dx.astype(x.dtype), dy.astype(y.dtype)


einsum_f32.defvjp(_einsum_f32_fwd, _einsum_f32_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def projected_logprobs(h: jax.Array, emb: jax.Array, targets: jax.Array,
                       softcap: float | None) -> jax.Array:
    """float32 `[...]`: log softmax(logits)[targets], logits = softcap(h @ emb^T) in float32.

    h `[..., D]`, emb `[V, D]` (the tied embedding), targets int32 `[...]`. The same numbers as
    `token_logprobs(model.logits(h), targets)`, with a backward written out: the forward keeps
    only the logsumexp `[...]` (no `[..., V]` residual), and the backward recomputes the logits
    once and forms d logits = g (onehot - softmax) in the operands' dtype in one elementwise
    pass. JAX's own derivative of the chunk took a scatter for the gather, a float32 cotangent
    and a separate cast, and `jax.checkpoint` recomputed the logsumexp as well: about 40% of a
    270M GRPO update's kernel time went to `[rows, chunk, V]` passes."""
    return _projected_logprobs_fwd(h, emb, targets, softcap)[0]


def capped_logits(h: jax.Array, emb: jax.Array, softcap: float | None) -> jax.Array:
    """float32 logits `[..., V]` = softcap(h @ emb^T): `Gemma.logits` and `projected_logprobs`."""
    z = einsum_f32("...d,vd->...v", h, emb)                             # [..., V]
    return z if softcap is None else jnp.tanh(z / softcap) * softcap


def _projected_logprobs_fwd(h, emb, targets, softcap):
    logits = capped_logits(h, emb, softcap)                             # [..., V]
    lse = jax.nn.logsumexp(logits, axis=-1)                             # [...]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - lse, (h, emb, targets, lse)


def _projected_logprobs_bwd(softcap, res, g):
    h, emb, targets, lse = res
    logits = capped_logits(h, emb, softcap)                             # [..., V]
    vocab = jnp.arange(logits.shape[-1], dtype=targets.dtype)
    d = g[..., None] * ((targets[..., None] == vocab) - jnp.exp(logits - lse[..., None]))
    if softcap is not None:   # logits = c tanh(z / c): dz = dlogits (1 - (logits / c)^2)
        d = d * (1.0 - jnp.square(logits / softcap))
    d = d.astype(jnp.result_type(h.dtype, emb.dtype))                   # [..., V]
    dh = jnp.einsum("...v,vd->...d", d, emb, preferred_element_type=F32)
    demb = jnp.einsum("...v,...d->vd", d, h, preferred_element_type=F32)
    return (dh.astype(h.dtype), demb.astype(emb.dtype),
            np.zeros(targets.shape, jax.dtypes.float0))


projected_logprobs.defvjp(_projected_logprobs_fwd, _projected_logprobs_bwd)


def cast_floats(state, dtype):
    """Every floating-point array of `state` (an `nnx.State` or any pytree) in `dtype`, integer
    ones as they are: the train step's compute-dtype view and the sampler's decode copy."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, state)


def rope_angles(positions: jax.Array, head_dim: int, base: float, scale: float
                ) -> tuple[jax.Array, jax.Array]:
    """float32 (sin, cos) `[B, T, hd/2]` of the rotary angles at `positions` `[B, T]`."""
    half = head_dim // 2
    freq = base ** (-jnp.arange(half, dtype=F32) * 2 / head_dim)         # [hd/2]
    angle = (positions.astype(F32) / scale)[..., None] * freq            # [B, T, hd/2]
    return jnp.sin(angle), jnp.cos(angle)


def rope(x: jax.Array, positions: jax.Array, base: float, scale: float) -> jax.Array:
    """Rotary embedding, half-split convention (first half rotates against the second)."""
    sin, cos = rope_angles(positions, x.shape[-1], base, scale)
    sin, cos = sin[:, :, None, :], cos[:, :, None, :]                    # [B, T, 1, hd/2]
    x1, x2 = jnp.split(x.astype(F32), 2, axis=-1)                       # [B, T, N, hd/2] each
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention_mask(q_pos: jax.Array, k_pos: jax.Array, window: int | None) -> jax.Array:
    """[B, T, S] bool: key is real, not in the future, and (local layers) inside the window."""
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    mask = (k >= 0) & (k <= q)
    if window is not None:
        mask &= q - k < window
    return mask


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype):
        # Gemma scales by (1 + w), so zeros is the identity initialisation.
        self.scale = nnx.Param(jnp.zeros((dim,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(F32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.eps) * (1.0 + self.scale[...].astype(F32))
        return y.astype(x.dtype)


def init_param(rngs: nnx.Rngs, shape, dtype, fan_in: int) -> nnx.Param:
    """A random weight: standard normal draws rounded to `dtype`, divided by sqrt(fan_in)."""
    return nnx.Param(jax.random.normal(rngs.params(), shape, F32).astype(dtype) / math.sqrt(fan_in))
