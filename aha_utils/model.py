"""Gemma 2 / Gemma 3 text decoder in Flax NNX: attention, MLP, block, decoder and the jitted
forward (parts: `aha_utils.layers`; KV cache: `aha_utils.kv_cache`).

Design decisions (each one is load-bearing for a later notebook):
- Parameters are stored in the einsum-friendly layout of the official Flax checkpoints
  (q `[D, H, hd]`, k/v `[D, K, hd]`, o `[H, hd, D]`, MLP `[D, F]` / `[F, D]`), so loading is a
  transpose or a reshape and sharding specs name whole axes (heads, ffn, vocab).
- Every token carries an explicit position; position -1 marks padding. Masks are derived from
  positions (causal, sliding window, padding) rather than from array indices, so one forward
  serves left-padded batches, prefill, single-token decode, and a ring-buffer KV cache.
- A chunk of several tokens (prefill) reads the cache and its own keys as two blocks under one
  softmax, so it never has to be written before it is read (a prompt longer than the window
  would overwrite keys its own early queries still need). A single token (decode) is written
  first and attends over the cache alone: fewer kernels per step, and an in-place write.
- One forward in plain XLA for every device. The one fast path here: a cache-less forward (the
  update) calls `jax.nn.dot_product_attention`, cuDNN's fused attention, where `cudnn` is set
  (by default on GPUs). The GPU decode kernels live apart, in `aha_utils.kernels`, which the
  sampler alone enters; this module never imports them.
- `model(tokens)` returns float32 logits `[B, T, V]`. Code that only needs a few log-probs
  (sampling, the GRPO loss) calls `model.hidden(...)` and projects chunks itself, so no
  `[B, T, 262144]` float32 buffer is ever materialised there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.kv_cache import LayerCache, write_cache
from aha_utils.layers import (F32, NEG_INF, RMSNorm, attention_mask, capped_logits, einsum_f32,
                              init_param, projected_logprobs, rope)
from aha_utils.sharding import rows_split_only


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, kind: str, dtype, rngs: nnx.Rngs, *,
                 cudnn: bool = False):
        d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = init_param(rngs, (d, h, hd), dtype, d)
        self.k_proj = init_param(rngs, (d, k, hd), dtype, d)
        self.v_proj = init_param(rngs, (d, k, hd), dtype, d)
        self.o_proj = init_param(rngs, (h, hd, d), dtype, h * hd)
        if cfg.use_qk_norm:
            self.q_norm = RMSNorm(hd, cfg.norm_eps, dtype)
            self.k_norm = RMSNorm(hd, cfg.norm_eps, dtype)
        self.kind = kind
        self.heads = (h, k, hd)
        self.use_qk_norm = cfg.use_qk_norm
        self.window = cfg.sliding_window if kind == "local" else None
        self.rope_base = cfg.rope_local_base if kind == "local" else cfg.rope_global_base
        self.rope_scale = 1.0 if kind == "local" else cfg.rope_global_scale
        self.q_scale = cfg.query_pre_attn_scalar ** -0.5
        self.softcap = cfg.attn_softcap
        self.cudnn = cudnn   # cache-less forwards through `jax.nn.dot_product_attention`

    def _scores(self, q, k):
        s = einsum_f32("btkgh,bskh->bkgts", q, k)                   # [B, K, G, T, S]
        if self.softcap is not None:
            s = jnp.tanh(s / self.softcap) * self.softcap
        return s

    def _project(self, x):
        """q `[B, T, H, hd]`, k and v `[B, T, K, hd]`."""
        return (jnp.einsum("btd,dhk->bthk", x, self.q_proj[...]),
                jnp.einsum("btd,dnk->btnk", x, self.k_proj[...]),
                jnp.einsum("btd,dnk->btnk", x, self.v_proj[...]))

    def _prepare(self, x, positions):
        """q `[B, T, K, G, hd]` (normed, rotated, scaled), k `[B, T, K, hd]` (normed, rotated)
        and v `[B, T, K, hd]`: what every attention path starts from."""
        b, t, _ = x.shape
        q, k, v = self._project(x)                              # [B, T, H|K, hd]
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rope(q, positions, self.rope_base, self.rope_scale) * jnp.asarray(self.q_scale, q.dtype)
        k = rope(k, positions, self.rope_base, self.rope_scale)
        return q.reshape(b, t, k.shape[2], -1, q.shape[-1]), k, v

    def __call__(self, x, positions, cache: LayerCache | None):
        b, t, _ = x.shape
        if cache is not None and t == 1:                        # decode: one token per row
            out, new_cache = self._decode(x, positions, cache)  # [B, K, G, hd]
            out = out[:, None]                                  # [B, 1, K, G, hd]
        else:
            q, k, v = self._prepare(x, positions)
            if cache is None and self._cudnn_fits(q):
                out, new_cache = self._fused(q, k, v, positions), None
            else:
                out, new_cache = self._chunk(q, k, v, positions, cache)
        out = out.reshape(b, t, -1, out.shape[-1])              # [B, T, H, hd]
        y = jnp.einsum("bthk,hkd->btd", out, self.o_proj[...])  # [B, T, D]
        return y, new_cache

    def _chunk(self, q, k, v, positions, cache: LayerCache | None):
        """Several tokens (or no cache): the chunk's own keys, plus the cached ones when there
        is a cache, under one softmax; the chunk is written after it is read."""
        t = q.shape[1]
        s = self._scores(q, k)                                  # [B, K, G, T, T]
        m = attention_mask(positions, positions, self.window)   # [B, T, T]
        if cache is not None:
            s = jnp.concatenate([self._scores(q, cache.k), s], axis=-1)  # [B, K, G, T, S+T]
            m = jnp.concatenate([attention_mask(positions, cache.pos, self.window), m], axis=-1)
        p = jax.nn.softmax(jnp.where(m[:, None, None], s, NEG_INF), axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgts,bskh->btkgh", p[..., -t:], v)  # [B, T, K, G, hd]
        if cache is None:
            return out, None
        out += jnp.einsum("bkgts,bskh->btkgh", p[..., :-t], cache.v)
        return out, write_cache(cache, k, v, positions)

    def _cudnn_fits(self, q) -> bool:
        """Whether a cache-less forward (the train step's) goes to the fused attention call:
        `self.cudnn`, bfloat16 / float16, no logit soft-cap (cuDNN has none: Gemma 2 keeps the
        XLA path), a head dim cuDNN takes (<= 256, x 8), and rows the only split axis
        (`sharding.rows_split_only`: JAX partitions the cuDNN call by batch, but not when q's
        heads are split and the single kv head is not)."""
        return (self.cudnn and self.softcap is None and q.dtype in (jnp.bfloat16, jnp.float16)
                and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0 and rows_split_only())

    def _fused(self, q, k, v, positions):
        """softmax(q k^T) v as one fused (flash) kernel and its backward, never writing the
        `[B, K, G, T, T]` float32 scores (in a 270M GRPO update the XLA path's score, softmax
        and transpose kernels took about a fifth of the update). The mask is the model's own
        (positions: padding, causal, window), passed as a bias; `is_causal` only lets cuDNN skip
        blocks above the diagonal, which the mask excludes too. Off a GPU, the same call in XLA
        (tests)."""
        b, t, n_kv, g, hd = q.shape
        out = jax.nn.dot_product_attention(
            q.reshape(b, t, n_kv * g, hd), k, v,                      # head n reads kv n // G
            mask=attention_mask(positions, positions, self.window)[:, None],   # [B, 1, T, T]
            scale=1.0, is_causal=True,                                  # q is already scaled
            implementation="cudnn" if jax.default_backend() == "gpu" else None)
        return out.reshape(b, t, n_kv, g, hd)                          # [B, T, K, G, hd]

    def _decode(self, x, positions, cache: LayerCache):
        """One token per row: `(out [B, K, G, hd], cache)`. The token is written into the cache
        first, then attends over the cache alone. Its slot held position `pos - S`, outside the
        window, so nothing still needed is lost, and reading only the updated cache lets XLA
        write the cache in place and skip the concatenation the chunk path needs."""
        q, k, v = self._prepare(x, positions)
        cache = write_cache(cache, k, v, positions)
        s = self._scores(q, cache.k)                            # [B, K, G, 1, S]
        m = attention_mask(positions, cache.pos, self.window)   # [B, 1, S]
        p = jax.nn.softmax(jnp.where(m[:, None, None], s, NEG_INF), axis=-1).astype(v.dtype)
        return jnp.einsum("bkgts,bskh->bkgh", p, cache.v), cache    # [B, K, G, hd]


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.d_model, cfg.ffn_dim
        self.gate_proj = init_param(rngs, (d, f), dtype, d)
        self.up_proj = init_param(rngs, (d, f), dtype, d)
        self.down_proj = init_param(rngs, (f, d), dtype, f)

    def __call__(self, x):
        hidden = jax.nn.gelu(x @ self.gate_proj[...], approximate=True) * (x @ self.up_proj[...])
        return hidden @ self.down_proj[...]                     # [B, T, D]


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, kind: str, dtype, rngs: nnx.Rngs, *,
                 cudnn: bool = False):
        eps, d = cfg.norm_eps, cfg.d_model
        self.pre_attn_norm = RMSNorm(d, eps, dtype)
        self.attn = Attention(cfg, kind, dtype, rngs, cudnn=cudnn)
        self.post_attn_norm = RMSNorm(d, eps, dtype)
        self.pre_ffw_norm = RMSNorm(d, eps, dtype)
        self.mlp = MLP(cfg, dtype, rngs)
        self.post_ffw_norm = RMSNorm(d, eps, dtype)

    def __call__(self, x, positions, cache):
        a, cache = self.attn(self.pre_attn_norm(x), positions, cache)
        x = x + self.post_attn_norm(a)
        x = x + self.post_ffw_norm(self.mlp(self.pre_ffw_norm(x)))
        return x, cache


class Gemma(nnx.Module):
    """The decoder. `Gemma(cfg, rngs=nnx.Rngs(0))` gives random weights (tests, benchmarks);
    `aha_utils.weights.load_model` gives real ones. `cudnn_attention`: cache-less forwards call
    `jax.nn.dot_product_attention` (cuDNN's fused attention on GPUs, XLA's version of the same
    call elsewhere); None: on GPUs. Fixed when the model is built."""

    def __init__(self, cfg: ModelConfig, *, dtype=jnp.bfloat16, rngs: nnx.Rngs,
                 cudnn_attention: bool | None = None):
        if cudnn_attention is None:
            cudnn_attention = jax.default_backend() == "gpu"
        if not isinstance(cudnn_attention, bool):
            raise ValueError(f"cudnn_attention must be True, False or None (on GPUs); got "
                             f"{cudnn_attention!r}")
        self.config = cfg
        self.dtype = dtype
        self.embedding = nnx.Param(
            jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), F32).astype(dtype)
        )                                                        # [V, D], tied with the output
        self.layers = nnx.List([Block(cfg, kind, dtype, rngs, cudnn=cudnn_attention)
                                for kind in cfg.layer_kinds])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dtype)

    def embed(self, tokens):
        """Token ids `[B, T]` to the scaled embeddings `[B, T, D]` the first block reads."""
        emb = self.embedding[...]
        return emb[tokens] * jnp.asarray(math.sqrt(self.config.d_model), emb.dtype)

    def hidden(self, tokens, positions=None, cache=None, *, remat: bool = False):
        """Final-normed hidden states `[B, T, D]` (and the updated cache when one is given).
        `remat=True` (training only) recomputes each block's activations in the backward pass."""
        check_tokens(tokens, self.config.vocab_size)
        if remat and cache is not None:
            raise ValueError("remat=True is for training forwards; decoding with a cache has no "
                             "backward pass to save memory for")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        x = self.embed(tokens)                                   # [B, T, D]
        new_cache = []
        for i, layer in enumerate(self.layers):
            if remat:
                x, c = nnx.remat(lambda blk, x, p: blk(x, p, None))(layer, x, positions)
            else:
                x, c = layer(x, positions, None if cache is None else cache[i])
            new_cache.append(c)
        x = self.final_norm(x)
        return (x, None) if cache is None else (x, new_cache)

    def logits(self, h: jax.Array) -> jax.Array:
        """Project hidden states `[..., D]` to float32 logits `[..., V]` (tied embedding)."""
        return capped_logits(h, self.embedding[...], self.config.final_softcap)

    def token_logprobs(self, h: jax.Array, targets: jax.Array) -> jax.Array:
        """float32 `[...]`: log pi(targets | h) for hidden states `[..., D]`, without a `[..., V]`
        residual kept for the backward (`projected_logprobs`)."""
        return projected_logprobs(h, self.embedding[...], targets, self.config.final_softcap)

    def __call__(self, tokens, positions=None, cache=None):
        """`tokens` int32 `[B, T]`; `positions` int32 `[B, T]` (-1 = padding; default 0..T-1).
        Returns float32 logits `[B, T, V]`, or `(logits, new_cache)` when a cache is given."""
        h, new_cache = self.hidden(tokens, positions, cache)
        logits = self.logits(h)
        return logits if cache is None else (logits, new_cache)


def check_tokens(tokens, vocab_size: int) -> None:
    """Eager validation (skipped under jit, where values are not known)."""
    if getattr(tokens, "ndim", None) != 2:
        raise ValueError(f"tokens must be a 2-D int array [batch, time]; got shape "
                         f"{getattr(tokens, 'shape', None)}. Wrap a single sequence as tokens[None].")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers (token ids); got dtype {tokens.dtype}")
    if isinstance(tokens, jax.core.Tracer) or tokens.size == 0:
        return
    lo, hi = int(jnp.min(tokens)), int(jnp.max(tokens))
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got min {lo}, max {hi}. "
                         "Were they made by another model's tokenizer?")


@nnx.jit
def _forward(model: Gemma, tokens, positions):
    return model(tokens, positions)


def forward(model: Gemma, tokens, positions=None) -> jax.Array:
    """Jitted full forward (no cache): float32 logits `[B, T, V]`. Validates inputs eagerly."""
    tokens = jnp.asarray(tokens)
    check_tokens(tokens, model.config.vocab_size)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return _forward(model, tokens.astype(jnp.int32), jnp.asarray(positions, jnp.int32))
