"""One decode step (one token per row) through the GPU kernels: what `model.Gemma.hidden` does
with a cache, computed from the model's norms and embedding and the wing's `DecodeWeights`.

Per block: the q/k/v projection as split-K partials, the attention kernel (which sums them,
norms, rotates, writes the cache and attends), the o projection's partials, then one kernel that
sums them, norms, adds the residual and norms for the MLP (`decode_residual.residual_norms`);
the MLP's gate/up, its down projection's partials, and the same join into the next block's
pre-norm (or the final norm). So each block hands the next its normed input, and XLA's three or
four small kernels around each norm become one. Tests hold it to the model's XLA step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from aha_utils.kernels.decode_attention import QKV_SPLITS, decode_attention
from aha_utils.kernels.decode_residual import DOWN_SPLITS, o_splits, residual_norms, split_matmul
from aha_utils.kernels.decode_weights import DecodeWeights, LayerWeights
from aha_utils.kv_cache import LayerCache
from aha_utils.layers import rope_angles


def hidden(model, weights: DecodeWeights, tokens, positions, cache, *, interpret: bool):
    """`(h [N, D], cache)`: the final-normed hidden state of one token per row (`tokens`,
    `positions` `[N]` int32, -1 for a padding row) and the cache with it written, as
    `model.hidden(tokens[:, None], positions[:, None], cache)` gives them (there `[N, 1, D]`).
    `interpret`: the kernels in Pallas's interpreter (off GPUs: tests)."""
    layers = model.layers
    x = model.embed(tokens[:, None])[:, 0]                               # [N, D]
    h = layers[0].pre_attn_norm(x)                                       # [N, D]
    new_cache = []
    for i, (layer, w) in enumerate(zip(layers, weights.layers)):
        nxt = layers[i + 1].pre_attn_norm if i + 1 < len(layers) else model.final_norm
        x, h, c = block(layer, w, x, h, positions, cache[i], nxt, interpret=interpret)
        new_cache.append(c)
    return h, new_cache


def block(layer, w: LayerWeights, x, h, positions, cache: LayerCache, next_norm, *,
          interpret: bool):
    """One `model.Block` for one token per row: `x [N, D]` the residual stream, `h` its
    pre-attention norm (computed by the block before). Returns the new `x`, `next_norm(x)` and
    the cache. The attention kernel asks L2 for gate/up as it ends (`l2_prefetch`)."""
    n = x.shape[0]
    join = functools.partial(residual_norms, eps=layer.pre_attn_norm.eps, interpret=interpret)
    qkv = split_matmul(h, w.qkv, QKV_SPLITS, interpret=interpret)       # [S, N, (H + 2K) hd]
    out, cache = attention(layer.attn, qkv, positions, cache, prefetch=(w.gate_up,),
                           interpret=interpret)                          # [N, K, G, hd]
    splits = o_splits(n, *w.o.shape, interpret=interpret)
    parts = split_matmul(out.reshape(n, -1), w.o, splits, interpret=interpret)  # [S, N, D]
    x, h = join(parts, x, layer.post_attn_norm.scale[...], layer.pre_ffw_norm.scale[...])
    gate, up = jnp.split(h @ w.gate_up, 2, axis=-1)                     # [N, F] each
    parts = split_matmul(jax.nn.gelu(gate, approximate=True) * up, w.down_t, DOWN_SPLITS,
                         transposed=True, interpret=interpret)           # [S, N, D]
    x, h = join(parts, x, layer.post_ffw_norm.scale[...], next_norm.scale[...])
    return x, h, cache


def attention(attn, qkv, positions, cache: LayerCache, *, interpret: bool, prefetch=(),
              **tuning):
    """`(out [N, K, G, hd], cache)`: a `model.Attention` layer's decode step in one kernel
    (`decode_attention`: qk-norm, rotary embedding, the cache write and the attention over
    each row's filled slots). `qkv`: the projection `[n, N, (H + 2K) hd]` as n float32 split-K
    partials, or (n = 1) the projection itself in the model's dtype; `positions` `[N]`.
    `prefetch` and `tuning`: `decode_attention`'s keyword arguments."""
    h, n_kv, hd = attn.heads
    dtype = attn.o_proj[...].dtype
    if cache.k.dtype != dtype:
        raise ValueError(f"the KV cache is {cache.k.dtype} and the model computes in {dtype}; "
                         "build it with kv_cache.init_cache(..., model.dtype)")
    sin, cos = rope_angles(positions[:, None], hd, attn.rope_base, attn.rope_scale)  # [N, 1, hd/2]
    norms = ((attn.q_norm.scale[...], attn.k_norm.scale[...]) if attn.use_qk_norm
             else (None, None))
    qkv = qkv.reshape(*qkv.shape[:2], h + 2 * n_kv, hd)                  # [n, N, H + 2K, hd]
    out, k, v, pos = decode_attention(
        qkv, positions, cache.k, cache.v, cache.pos, sin[:, 0], cos[:, 0], *norms, heads=h,
        window=attn.window, softcap=attn.softcap,
        q_scale=float(np.asarray(attn.q_scale, dtype)),   # rounded as the XLA path rounds it
        eps=attn.q_norm.eps if attn.use_qk_norm else None, prefetch=prefetch,
        interpret=interpret, **tuning)
    return out, LayerCache(k, v, pos)
