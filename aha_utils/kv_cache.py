"""The KV cache's layout: one `LayerCache(k, v, pos)` a layer, the slots a layer needs
(`cache_slots`), an empty cache (`init_cache`) and the write of new keys and values into it
(`write_cache`). `aha_utils.model` reads and writes it; the sampler builds it; the GPU wing's decode
kernel (`aha_utils.kernels.decode_attention`) writes the same layout itself.

Design decisions:
- The KV cache is a list of `LayerCache(k, v, pos)` per layer. Sliding-window layers keep only
  `window` slots, written at `pos % window` (a ring buffer); global layers keep the full length.
- Each slot keeps its token's position (-1: empty), so the model masks the cache from positions
  as it masks its own keys (`layers.attention_mask`), however often a ring buffer has wrapped.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from aha_utils.config import ModelConfig

SLOT_MULTIPLE = 16   # slots per layer round up to this: the GPU decode kernel reads blocks of 16


class LayerCache(NamedTuple):
    k: jax.Array    # [B, S, K, hd]
    v: jax.Array    # [B, S, K, hd]
    pos: jax.Array  # [B, S] int32, position stored in each slot; -1 = empty


def cache_slots(cfg: ModelConfig, kind: str, max_len: int) -> int:
    """Slots a layer needs to serve sequences up to `max_len` tokens long, rounded up to a
    multiple of 16 for the GPU decode kernel (spare slots stay empty and are masked)."""
    need = min(cfg.sliding_window, max_len) if kind == "local" else max_len
    return -(-need // SLOT_MULTIPLE) * SLOT_MULTIPLE


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.bfloat16) -> list[LayerCache]:
    """An empty cache for `batch` rows of up to `max_len` positions (prompt + generation)."""
    caches = []
    for kind in cfg.layer_kinds:
        s = cache_slots(cfg, kind, max_len)
        caches.append(LayerCache(
            k=jnp.zeros((batch, s, cfg.num_kv_heads, cfg.head_dim), dtype),
            v=jnp.zeros((batch, s, cfg.num_kv_heads, cfg.head_dim), dtype),
            pos=jnp.full((batch, s), -1, jnp.int32),
        ))
    return caches


def write_cache(cache: LayerCache, k, v, positions) -> LayerCache:
    """`cache` with a chunk's k, v `[B, T, K, hd]` stored at slot `pos % S` (positions
    `[B, T]`). Only the last S tokens can matter later, and their positions are consecutive, so
    their slots never collide. Padding (pos < 0) is dropped."""
    slots = cache.pos.shape[1]
    n = min(k.shape[1], slots)
    k, v, pos = k[:, -n:], v[:, -n:], positions[:, -n:]
    idx = jnp.where(pos >= 0, pos % slots, slots)           # [B, n]; `slots` is out of range
    rows = jnp.arange(k.shape[0])[:, None]
    return LayerCache(
        k=cache.k.at[rows, idx].set(k.astype(cache.k.dtype), mode="drop"),
        v=cache.v.at[rows, idx].set(v.astype(cache.v.dtype), mode="drop"),
        pos=cache.pos.at[rows, idx].set(pos, mode="drop"),
    )
