"""Decode attention as one GPU kernel (Pallas on Triton) that reads only the filled part of each
row's KV cache: one query token per row, softmax(q k^T) v over that row's cache.

`model.Attention._decode` calls `decode_attention(...)` on GPUs where `kernel_available()`: one
device, or rows split over a data-parallel mesh; elsewhere it keeps its XLA path. Both compute
the same softmax(q k^T) v.

Design decisions:
- Why a kernel: XLA's static shapes make every decode step read the whole cache, `P + M`
  slots on global layers and the window on local ones, though a row at position `t` has only
  `min(t + 1, slots)` of them filled: slot `pos % slots`, written in order from slot 0, so the
  filled ones are a prefix until a ring buffer wraps. In a GRPO step (Countdown prompts of
  ~144 tokens in a 256-column bucket, 256 new tokens) that is half of the 512 slots on average,
  and XLA also splits the attention into five kernels (scores, max, sum, normalise,
  probabilities x values). Here each program stops at its row's last filled block: a loop
  whose trip count is a traced number, which a Triton kernel allows and an XLA program does not.
- Flash-decoding: each program takes one (row, kv head, slice of the slots), runs an online
  softmax over blocks of `block` slots, and writes its unnormalised output with its running max
  and sum; a few XLA ops merge the slices. Slicing gives the GPU enough programs when rows are
  few (64 rows x 1 kv head would fill half of an H100's 132 SMs).
- Masks inside a block come from the slots' stored positions, as in the model: filled
  (`pos >= 0`), not in the future, inside the sliding window. So the last partial block, left
  padding and the ring buffer need no other bookkeeping. A padding row (position -1) reads
  nothing and gets zeros.
- The `G` query heads that share a kv head are the rows of one small matmul, padded to 16 rows
  (Triton's smallest dot tile). The extra multiplies are free: the kernel is memory-bound.
- Slots must be a multiple of 16: `model.cache_slots` rounds up (spare slots stay empty).
- Several devices: XLA cannot partition a Pallas call, so under a mesh the call is wrapped in a
  `shard_map` over the `data` axis: each device runs the kernel on its own rows, which is all
  data parallelism needs (attention never mixes rows). The sampler traces its loop under its
  mesh (`sharding.traced_under`), which is how the call learns it. A mesh that also
  splits heads (`model_parallel > 1`) keeps the XLA path, as does a multi-device process with
  no mesh in context (its arrays might be split in ways the call cannot see).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils.sharding import DATA, rows_split_only

F32 = jnp.float32
NEG_INF = float(jnp.finfo(jnp.float32).min)   # finite, as in the model
SLOT_MULTIPLE = 16
MIN_QUERY_ROWS = 16        # Triton's smallest matmul tile
TARGET_PROGRAMS = 132      # one program per SM on an H100 (132 SMs)

USE_KERNEL: bool | None = None   # None: on GPUs. Tests set True to run the kernel,
                                 # interpreted, inside the model on a CPU.


def kernel_available() -> bool:
    """Whether a decode step traced now uses this kernel: on GPUs (or with `USE_KERNEL`), when
    the rows are on one device (no mesh in context, one device) or split over the `data` axis
    of the mesh in context with every other axis of size 1 (see the design notes above)."""
    use = jax.default_backend() == "gpu" if USE_KERNEL is None else USE_KERNEL
    return use and rows_split_only()


def _block(slots: int, largest: int) -> int:
    for b in (128, 64, 32, 16):
        if b <= largest and slots % b == 0:
            return b
    raise ValueError(f"the KV cache has {slots} slots; the decode kernel needs a multiple of "
                     f"{SLOT_MULTIPLE}: build the cache with model.init_cache, which rounds up")


def _splits(programs: int, slots: int, block: int, target: int) -> int:
    """Slices per (row, kv head): a power of two, enough for about `target` programs."""
    n = 1
    while programs * n < target and slots % (2 * n * block) == 0:
        n *= 2
    return n


def _kernel(q_pos_ref, q_ref, k_ref, v_ref, k_pos_ref, acc_ref, max_ref, sum_ref, *,
            block: int, slots: int, window: int | None, softcap: float | None):
    """One (row, kv head, slice): online softmax over the slice's filled blocks, unnormalised."""
    q = q_ref[...]                                                   # [Gp, hd]
    q_pos = q_pos_ref[0]                                             # []
    part = k_ref.shape[0]
    # Filled slots are 0..min(q_pos, slots - 1); this slice holds slots [start, start + part).
    filled = jnp.minimum(q_pos + 1, slots) - pl.program_id(2) * part
    n_blocks = (jnp.clip(filled, 0, part) + block - 1) // block

    def step(i, carry):
        acc, run_max, run_sum = carry
        sl = pl.ds(i * block, block)
        s = jnp.dot(q, k_ref[sl, :].T, preferred_element_type=F32)   # [Gp, block]
        if softcap is not None:
            s = jnp.tanh(s / softcap) * softcap
        k_pos = k_pos_ref[sl]                                        # [block]
        ok = (k_pos >= 0) & (k_pos <= q_pos)
        if window is not None:
            ok &= q_pos - k_pos < window
        s = jnp.where(ok[None, :], s, NEG_INF)
        new_max = jnp.maximum(run_max, jnp.max(s, axis=1))           # [Gp]
        scale = jnp.exp(run_max - new_max)                           # [Gp]
        p = jnp.where(ok[None, :], jnp.exp(s - new_max[:, None]), 0.0)   # [Gp, block]
        v = v_ref[sl, :]                                             # [block, hd]
        acc = acc * scale[:, None] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=F32)
        return acc, new_max, run_sum * scale + jnp.sum(p, axis=1)

    rows, hd = q.shape
    init = (jnp.zeros((rows, hd), F32), jnp.full((rows,), NEG_INF, F32), jnp.zeros((rows,), F32))
    acc, run_max, run_sum = jax.lax.fori_loop(0, n_blocks, step, init)
    acc_ref[...] = acc
    max_ref[...] = run_max
    sum_ref[...] = run_sum


@functools.partial(jax.jit, static_argnames=("window", "softcap", "interpret", "block",
                                             "programs", "num_warps", "num_stages"))
def decode_attention(q: jax.Array, k: jax.Array, v: jax.Array, k_pos: jax.Array,
                     q_pos: jax.Array, *, window: int | None, softcap: float | None,
                     interpret: bool = False, block: int = 64, programs: int = TARGET_PROGRAMS,
                     num_warps: int = 4, num_stages: int = 2) -> jax.Array:
    """softmax(q k^T) v for one query token per row: `[B, K, G, hd]` in `q`'s dtype.

    q: `[B, K, G, hd]`, already scaled and rotated; k, v: `[B, S, K, hd]` (the layer's cache with
    this step's token written at slot `q_pos % S`); k_pos: `[B, S]` int32, the position in each
    slot (-1 = empty); q_pos: `[B]` int32 (-1 = padding row). `window`: sliding window or None;
    `softcap`: attention logit soft-cap or None. `interpret=True` runs the kernel in Pallas's
    interpreter (CPU tests). Tuning: `block`, the largest block of slots per loop step;
    `programs`, how many programs to aim for (per device); Triton's warps and stages. Under a
    mesh in context, each device takes its own rows (a `shard_map` over `data`)."""
    b, n_kv, g, hd = q.shape
    slots = k.shape[1]
    if k.shape != (b, slots, n_kv, hd) or v.shape != k.shape or k_pos.shape != (b, slots):
        raise ValueError(f"decode_attention: q {q.shape}, k {k.shape}, v {v.shape}, k_pos "
                         f"{k_pos.shape} do not fit [B, K, G, hd], [B, S, K, hd] and [B, S]")
    local = functools.partial(_attend, window=window, softcap=softcap, interpret=interpret,
                              block=_block(slots, block), programs=programs,
                              num_warps=num_warps, num_stages=num_stages)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return local(q, k, v, k_pos, q_pos)
    if b % mesh.shape[DATA]:
        raise ValueError(f"decode_attention: {b} rows do not split over the mesh's "
                         f"{mesh.shape[DATA]} data-parallel devices; pad the batch")
    rows = P(DATA)     # every argument and the output: rows split, the rest whole on each device
    # check_vma=False: pallas_call's output shapes carry no varying-axes annotation to check.
    return jax.shard_map(local, in_specs=(rows,) * 5, out_specs=rows,
                         check_vma=False)(q, k, v, k_pos, q_pos)


def _attend(q, k, v, k_pos, q_pos, *, window, softcap, interpret, block, programs, num_warps,
            num_stages):
    """`decode_attention` on the rows of one device: the kernel, then the merge of its slices."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    b, n_kv, g, hd = q.shape
    slots = k.shape[1]
    splits = _splits(b * n_kv, slots, block, programs)
    part = slots // splits
    rows = max(MIN_QUERY_ROWS, g)
    q_pad = jnp.pad(q, ((0, 0), (0, 0), (0, rows - g), (0, 0)))     # [B, K, Gp, hd]
    sq = pl.squeezed
    kernel = functools.partial(_kernel, block=block, slots=slots, window=window, softcap=softcap)
    acc, run_max, run_sum = pl.pallas_call(
        kernel,
        grid=(b, n_kv, splits),
        in_specs=[
            pl.BlockSpec((sq, 1), lambda i, h, j: (i, 0)),                      # q_pos
            pl.BlockSpec((sq, sq, rows, hd), lambda i, h, j: (i, h, 0, 0)),     # q
            pl.BlockSpec((sq, part, sq, hd), lambda i, h, j: (i, j, h, 0)),     # k
            pl.BlockSpec((sq, part, sq, hd), lambda i, h, j: (i, j, h, 0)),     # v
            pl.BlockSpec((sq, part), lambda i, h, j: (i, j)),                   # k_pos
        ],
        out_specs=[
            pl.BlockSpec((sq, sq, sq, rows, hd), lambda i, h, j: (i, h, j, 0, 0)),
            pl.BlockSpec((sq, sq, sq, rows), lambda i, h, j: (i, h, j, 0)),
            pl.BlockSpec((sq, sq, sq, rows), lambda i, h, j: (i, h, j, 0)),
        ],
        out_shape=[jax.ShapeDtypeStruct((b, n_kv, splits, rows, hd), F32),
                   jax.ShapeDtypeStruct((b, n_kv, splits, rows), F32),
                   jax.ShapeDtypeStruct((b, n_kv, splits, rows), F32)],
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
    )(q_pos.astype(jnp.int32)[:, None], q_pad, k, v, k_pos.astype(jnp.int32))
    # Merge the slices: rescale each to the largest running max, then normalise once. A slice
    # that read nothing has sum 0 and weighs nothing; a row that read nothing gets zeros.
    top = jnp.max(run_max, axis=2, keepdims=True)                   # [B, K, 1, Gp]
    w = jnp.exp(run_max - top)                                       # [B, K, splits, Gp]
    total = jnp.sum(run_sum * w, axis=2)                             # [B, K, Gp]
    out = jnp.sum(acc * w[..., None], axis=2) / jnp.maximum(total, 1e-30)[..., None]
    return out[:, :, :g].astype(q.dtype)                             # [B, K, G, hd]
