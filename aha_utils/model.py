"""Gemma 2 / Gemma 3 text decoder in Flax NNX: attention, MLP, block, decoder, the decode
layout and the jitted forward (parts: `aha_utils.layers`; KV cache: `aha_utils.kv_cache`).

Design decisions (each one is load-bearing for a later notebook):
- Parameters are stored in the einsum-friendly layout of the official Flax checkpoints
  (q `[D, H, hd]`, k/v `[D, K, hd]`, o `[H, hd, D]`, MLP `[D, F]` / `[F, D]`), so loading is a
  transpose or a reshape and sharding specs name whole axes (heads, ffn, vocab).
- Every token carries an explicit position; position -1 marks padding. Masks are derived from
  positions (causal, sliding window, padding) rather than from array indices, so one forward
  serves left-padded batches, prefill, single-token decode, and a ring-buffer KV cache.
- A chunk of several tokens (prefill) reads the cache (`aha_utils.kv_cache`) and its own keys
  as two blocks under one softmax, so it never has to be written before it is read (a prompt
  longer than the window would overwrite keys its own early queries still need). A single
  token (decode) is written first and attends over the cache alone: fewer kernels per step,
  and an in-place write.
- Attention has three paths: decode (one token, cache) through one Pallas kernel on GPUs that
  also norms, rotates and writes the new token (`Attention._decode_kernel`,
  `aha_utils.decode_attention`); a cache-less forward (the update) through cuDNN's fused
  attention on GPUs (`Attention._fused`); everything else, and TPUs and CPUs, in plain XLA. The
  GPU paths take the same mask and are tested against the XLA one.
- The sampler decodes a copy in the decode layout (`fuse_projections`): q/k/v one matrix,
  gate/up one, down transposed. The modules read either layout.
- On GPUs a decode step runs its blocks through `Block.decode` (`Gemma._decode_hidden`): the
  attention kernel above, and each half of a block ending in one kernel that sums the
  projection's split-K partials, norms, adds the residual and norms for what comes next
  (`aha_utils.decode_residual`). Tests hold it to the XLA path.
- `model(tokens)` returns float32 logits `[B, T, V]`. Code that only needs a few log-probs
  (sampling, the GRPO loss) calls `model.hidden(...)` and projects chunks itself, so no
  `[B, T, 262144]` float32 buffer is ever materialised there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils import decode_attention as fused
from aha_utils import decode_residual as residual
from aha_utils.config import ModelConfig
from aha_utils.kv_cache import LayerCache, write_cache
from aha_utils.layers import (F32, NEG_INF, RMSNorm, attention_mask, capped_logits, einsum_f32,
                              init_param, projected_logprobs, rope, rope_angles)
from aha_utils.sharding import rows_split_only


def fuse_projections(model: Gemma) -> Gemma:
    """`model`, changed in place to the decode layout, and returned: in each layer q, k and v
    become one `qkv` matrix `[D, (H + 2K) hd]`, gate and up one `gate_up` `[D, 2F]`, and down is
    stored transposed, `down_t` `[D, F]`. The same function (tests compare the two layouts).

    Why (the sampler's decode copy, `sampler.decode_copy`): a decode step multiplies a few
    rows by every weight, so each matmul is a kernel that streams one matrix from memory, and
    the small ones (q, k, v) cost their launch and split-K reduction more than their bytes.
    One kernel per fused matrix, and a down projection read along its rows, took the 1B's
    decode at 64 rows from 26.4k to 27.5k tokens/s on an H100. Weights split over a `model`
    mesh axis keep their own layout (a concatenation across split heads would be resharded).
    Costs one copy of the fused weights while the copy lives (`aha_utils.memory`)."""
    for layer in model.layers:
        layer.attn.fuse()
        layer.mlp.fuse()
    return model


CUDNN_ATTENTION: bool | None = None   # None: on GPUs. Tests set True to run the same call
                                      # (`jax.nn.dot_product_attention`) in XLA on a CPU.


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, kind: str, dtype, rngs: nnx.Rngs):
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

    def _scores(self, q, k):
        s = einsum_f32("btkgh,bskh->bkgts", q, k)                   # [B, K, G, T, S]
        if self.softcap is not None:
            s = jnp.tanh(s / self.softcap) * self.softcap
        return s

    def fuse(self) -> None:
        """In place: q, k and v as one `qkv` matrix `[D, (H + 2K) hd]` (`fuse_projections`)."""
        d = self.q_proj.shape[0]
        self.qkv = nnx.Param(jnp.concatenate(
            [self.q_proj[...].reshape(d, -1), self.k_proj[...].reshape(d, -1),
             self.v_proj[...].reshape(d, -1)], axis=1))                   # [D, (H + 2K) hd]
        del self.q_proj, self.k_proj, self.v_proj

    def _project(self, x):
        """q `[B, T, H, hd]`, k and v `[B, T, K, hd]`: three matmuls, or one with the decode
        layout's `qkv` (`fuse_projections`)."""
        if not hasattr(self, "qkv"):
            return (jnp.einsum("btd,dhk->bthk", x, self.q_proj[...]),
                    jnp.einsum("btd,dnk->btnk", x, self.k_proj[...]),
                    jnp.einsum("btd,dnk->btnk", x, self.v_proj[...]))
        qkv = self._qkv(x)                                      # [B, T, H + 2K, hd]
        h, n_kv, _ = self.heads
        return qkv[:, :, :h], qkv[:, :, h:h + n_kv], qkv[:, :, h + n_kv:]

    def _qkv(self, x):
        """`[B, T, H + 2K, hd]`: the heads of q, then k, then v, as the kernel takes them."""
        h, n_kv, hd = self.heads
        if hasattr(self, "qkv"):
            return (x @ self.qkv[...]).reshape(*x.shape[:2], h + 2 * n_kv, hd)
        return jnp.concatenate(self._project(x), axis=2)

    def _prepare(self, x, positions):
        """q `[B, T, K, G, hd]` (normed, rotated, scaled), k `[B, T, K, hd]` (normed, rotated)
        and v `[B, T, K, hd]`: what every attention path but `_decode_kernel` starts from."""
        b, t, _ = x.shape
        q, k, v = self._project(x)                              # [B, T, H|K, hd]
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rope(q, positions, self.rope_base, self.rope_scale) * jnp.asarray(self.q_scale, q.dtype)
        k = rope(k, positions, self.rope_base, self.rope_scale)
        return q.reshape(b, t, k.shape[2], -1, q.shape[-1]), k, v

    def __call__(self, x, positions, cache: LayerCache | None):
        b, t, _ = x.shape
        if cache is not None and t == 1:   # decode: one kernel on GPUs, XLA elsewhere
            decode = (self._decode_kernel if fused.kernel_available(self.heads[2])
                      else self._decode)
            out, new_cache = decode(x, positions, cache)                 # [B, K, G, hd]
            out = out[:, None]                                           # [B, 1, K, G, hd]
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
        """Whether a cache-less forward (the train step's) goes to cuDNN's fused attention: on
        GPUs (or with `CUDNN_ATTENTION`), in bfloat16 / float16, with no logit soft-cap (cuDNN
        has none: Gemma 2 keeps the XLA path), a head dim cuDNN takes (<= 256, x 8), and rows
        the only split axis (`sharding.rows_split_only`: JAX partitions the cuDNN call by
        batch, but not when q's heads are split and the single kv head is not)."""
        use = jax.default_backend() == "gpu" if CUDNN_ATTENTION is None else CUDNN_ATTENTION
        return (use and self.softcap is None and q.dtype in (jnp.bfloat16, jnp.float16)
                and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0 and rows_split_only())

    def _fused(self, q, k, v, positions):
        """softmax(q k^T) v as one fused (flash) kernel and its backward, never writing the
        `[B, K, G, T, T]` float32 scores: in a 270M GRPO update the XLA path's score, softmax
        and transpose kernels took about a fifth of the update. The mask is the model's own
        (positions: padding, causal, window), passed as a bias; `is_causal` only lets cuDNN skip
        blocks above the diagonal, which the mask excludes too (real tokens' positions rise
        with their columns). Off a GPU, the same call in XLA (tests)."""
        b, t, n_kv, g, hd = q.shape
        out = jax.nn.dot_product_attention(
            q.reshape(b, t, n_kv * g, hd), k, v,                      # head n reads kv n // G
            mask=attention_mask(positions, positions, self.window)[:, None],   # [B, 1, T, T]
            scale=1.0, is_causal=True,                                  # q is already scaled
            implementation="cudnn" if jax.default_backend() == "gpu" else None)
        return out.reshape(b, t, n_kv, g, hd)                          # [B, T, K, G, hd]

    def _decode_kernel(self, x, positions, cache: LayerCache, prefetch=(), **tuning):
        """One token per row on GPUs: qk-norm, rotary embedding, the cache write and the
        attention over only each row's filled slots in one kernel
        (`aha_utils.decode_attention`; `prefetch` and `tuning`: its keyword arguments), instead
        of about eight small XLA kernels. Off a GPU (tests) the kernel runs in Pallas's
        interpreter."""
        h, n_kv, hd = self.heads
        sin, cos = rope_angles(positions, hd, self.rope_base, self.rope_scale)  # [B, 1, hd/2]
        norms = ((self.q_norm.scale[...], self.k_norm.scale[...]) if self.use_qk_norm
                 else (None, None))
        if cache.k.dtype != x.dtype:
            raise ValueError(f"the KV cache is {cache.k.dtype} and the model computes in "
                             f"{x.dtype}; build it with kv_cache.init_cache(..., model.dtype)")
        if hasattr(self, "qkv"):   # the decode layout: partials, summed inside the kernel
            qkv = residual.split_matmul(x[:, 0], self.qkv[...], fused.QKV_SPLITS)
        else:
            qkv = self._qkv(x)[None, :, 0]                                # [1, B, H + 2K, hd]
        qkv = qkv.reshape(*qkv.shape[:2], h + 2 * n_kv, hd)                # [n, B, H + 2K, hd]
        out, k, v, pos = fused.decode_attention(
            qkv, positions[:, 0], cache.k, cache.v, cache.pos, sin[:, 0],
            cos[:, 0], *norms, heads=h, window=self.window, softcap=self.softcap,
            q_scale=float(np.asarray(self.q_scale, x.dtype)),   # rounded as the XLA path rounds it
            eps=self.q_norm.eps if self.use_qk_norm else None, prefetch=prefetch,
            **{"interpret": jax.default_backend() != "gpu", **tuning})
        return out, LayerCache(k, v, pos)

    def decode_partials(self, x, positions, cache: LayerCache, prefetch=()):
        """One token per row `x [B, D]` on GPUs (`Block.decode`): the output projection as
        `[S, B, D]` float32 split-K partials (`decode_residual`, S from `o_splits`), and the
        cache. `prefetch`: weights read soon after, for the attention kernel to bring into L2
        (`aha_utils.l2_prefetch`)."""
        out, cache = self._decode_kernel(x[:, None], positions, cache, prefetch)  # [B, K, G, hd]
        o = self.o_proj[...]
        o = o.reshape(-1, o.shape[-1])                                   # [H hd, D]
        splits = residual.o_splits(x.shape[0], *o.shape)
        return residual.split_matmul(out.reshape(out.shape[0], -1), o, splits), cache

    def _decode(self, x, positions, cache: LayerCache):
        """One token per row in XLA: `(out [B, K, G, hd], cache)`, as `_decode_kernel`. The
        token is written into the cache first, then attends over the cache alone. Its slot held
        position `pos - S`, outside the window, so nothing still needed is lost, and reading
        only the updated cache lets XLA write the cache in place and skip the concatenation the
        chunk path needs (one fewer kernel per layer and token)."""
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

    def fuse(self) -> None:
        """In place: gate and up as one `gate_up` `[D, 2F]`, down stored transposed `down_t`
        `[D, F]` (`fuse_projections`)."""
        self.gate_up = nnx.Param(jnp.concatenate([self.gate_proj[...], self.up_proj[...]], axis=1))
        self.down_t = nnx.Param(self.down_proj[...].T)                    # [D, F]
        del self.gate_proj, self.up_proj, self.down_proj

    def first_weights(self) -> tuple[jax.Array, ...]:
        """The weights the MLP reads first: gate and up (one matrix in the decode layout)."""
        if hasattr(self, "gate_up"):
            return (self.gate_up[...],)
        return self.gate_proj[...], self.up_proj[...]

    def _hidden(self, x):
        """gelu(x @ gate) * (x @ up), `[..., F]`, in either layout."""
        if hasattr(self, "gate_up"):   # the decode layout (`fuse_projections`)
            gate, up = jnp.split(x @ self.gate_up[...], 2, axis=-1)    # [..., F] each
        else:
            gate, up = x @ self.gate_proj[...], x @ self.up_proj[...]
        return jax.nn.gelu(gate, approximate=True) * up

    def __call__(self, x):
        if hasattr(self, "down_t"):
            return jnp.einsum("btf,df->btd", self._hidden(x), self.down_t[...])  # [B, T, D]
        return self._hidden(x) @ self.down_proj[...]                           # [B, T, D]

    def partials(self, x, splits: int):
        """`[S, B, D]` float32: the output for one token per row `x [B, D]` as the down
        projection's split-K partials, for `decode_residual.residual_norms` to sum."""
        if hasattr(self, "down_t"):
            return residual.split_matmul(self._hidden(x), self.down_t[...], splits,
                                         transposed=True)
        return residual.split_matmul(self._hidden(x), self.down_proj[...], splits)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, kind: str, dtype, rngs: nnx.Rngs):
        eps, d = cfg.norm_eps, cfg.d_model
        self.pre_attn_norm = RMSNorm(d, eps, dtype)
        self.attn = Attention(cfg, kind, dtype, rngs)
        self.post_attn_norm = RMSNorm(d, eps, dtype)
        self.pre_ffw_norm = RMSNorm(d, eps, dtype)
        self.mlp = MLP(cfg, dtype, rngs)
        self.post_ffw_norm = RMSNorm(d, eps, dtype)

    def __call__(self, x, positions, cache):
        a, cache = self.attn(self.pre_attn_norm(x), positions, cache)
        x = x + self.post_attn_norm(a)
        x = x + self.post_ffw_norm(self.mlp(self.pre_ffw_norm(x)))
        return x, cache

    def decode(self, x, h, positions, cache: LayerCache, next_norm: RMSNorm):
        """One token per row on GPUs (`Gemma.hidden`): `x [B, D]` the residual stream, `h`
        this block's pre-attention norm of it, computed by the block before. Returns the new
        `x`, `next_norm(x)` (the next block's pre-norm, or the final norm) and the cache. Each
        half ends in one kernel that sums the projection's split-K partials, norms, adds and
        norms again (`decode_residual`), instead of XLA's three or four. The attention kernel
        asks L2 for the MLP's gate/up weights as it ends (`aha_utils.l2_prefetch`)."""
        join = functools.partial(residual.residual_norms, eps=self.pre_attn_norm.eps,
                                 interpret=jax.default_backend() != "gpu")
        parts, cache = self.attn.decode_partials(h, positions, cache,
                                                 self.mlp.first_weights())  # [S, B, D]
        x, h = join(parts, x, self.post_attn_norm.scale[...], self.pre_ffw_norm.scale[...])
        parts = self.mlp.partials(h, residual.DOWN_SPLITS)             # [S, B, D]
        x, h = join(parts, x, self.post_ffw_norm.scale[...], next_norm.scale[...])
        return x, h, cache


class Gemma(nnx.Module):
    """The decoder. `Gemma(cfg, rngs=nnx.Rngs(0))` gives random weights (tests, benchmarks);
    `aha_utils.weights.load_model` gives real ones."""

    def __init__(self, cfg: ModelConfig, *, dtype=jnp.bfloat16, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = dtype
        self.embedding = nnx.Param(
            jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), F32).astype(dtype)
        )                                                        # [V, D], tied with the output
        self.layers = nnx.List([Block(cfg, kind, dtype, rngs) for kind in cfg.layer_kinds])
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, dtype)

    def hidden(self, tokens, positions=None, cache=None, *, remat: bool = False):
        """Final-normed hidden states `[B, T, D]` (and the updated cache when one is given).
        `remat=True` (training only) recomputes each block's activations in the backward pass."""
        check_tokens(tokens, self.config.vocab_size)
        if remat and cache is not None:
            raise ValueError("remat=True is for training forwards; decoding with a cache has no "
                             "backward pass to save memory for")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        emb = self.embedding[...]
        x = emb[tokens] * jnp.asarray(math.sqrt(self.config.d_model), emb.dtype)  # [B, T, D]
        if cache is not None and tokens.shape[1] == 1 and fused.kernel_available(
                self.config.head_dim):
            return self._decode_hidden(x[:, 0], positions, cache)
        new_cache = []
        for i, layer in enumerate(self.layers):
            if remat:
                x, c = nnx.remat(lambda blk, x, p: blk(x, p, None))(layer, x, positions)
            else:
                x, c = layer(x, positions, None if cache is None else cache[i])
            new_cache.append(c)
        x = self.final_norm(x)
        return (x, None) if cache is None else (x, new_cache)

    def _decode_hidden(self, x, positions, cache):
        """`hidden` for one token per row on GPUs, from the embedded `x [B, D]`: the blocks'
        `decode` steps, each handing the next its normed input (`decode_residual`'s kernels
        join a block's halves across the norms, and blocks across theirs)."""
        h = self.layers[0].pre_attn_norm(x)                              # [B, D]
        new_cache = []
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1].pre_attn_norm if i + 1 < len(self.layers) else self.final_norm
            x, h, c = layer.decode(x, h, positions, cache[i], nxt)
            new_cache.append(c)
        return h[:, None], new_cache                                     # [B, 1, D]

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
