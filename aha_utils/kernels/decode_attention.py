"""A layer's attention for one decode step as one GPU kernel (Pallas on Triton): qk-norm and
rotary embedding of this step's q and k, the write of k, v and the position into the KV cache,
and softmax(q k^T) v over only the filled part of each row's cache.

Why: XLA's static shapes make every step read every slot of the cache, and around the attention
XLA runs about eight small kernels a layer; here each program stops at its row's last filled
block (a traced trip count) and does the rest in registers. How, in short:
- flash-decoding: one program per (row, kv head, slice), an online softmax over blocks of
  slots, a slice being an equal share of the row's *filled* blocks; several slices are merged
  by a few XLA ops after the kernel, one slice a row is normalised in the kernel;
- the q/k/v projection comes in as split-K partials (`decode_residual.split_matmul`) that the
  kernel sums and rounds as XLA would; the new token enters the softmax from registers, and the
  program owning its slot writes it into the cache, donated and updated in place;
- masks come from the slots' stored positions, as in the model (padding, ring buffer, window);
- the G query heads of a kv head are the rows of one dot tile padded to 16 (Triton's smallest);
- under a data-parallel mesh each device runs the kernel on its own rows (`shard_map`).
Tests hold output and cache to `model.Attention._decode`. Measurements: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils.kernels import early_launch, l2_prefetch
from aha_utils.kernels.decode_residual import largest_tile
from aha_utils.kv_cache import SLOT_MULTIPLE
from aha_utils.layers import NEG_INF   # the model's finite mask value: masked rows stay NaN-free
from aha_utils.sharding import DATA, on_each_devices_rows

F32 = jnp.float32
MIN_QUERY_ROWS = 16        # Triton's smallest matmul tile
MIN_HEAD_DIM = 32          # q k^T is two dots over half a head: 16 each at least
TARGET_PROGRAMS = 132      # one program per SM on an H100 (132 SMs)
QKV_SPLITS = 2             # the q/k/v projection's split-K slices (tuned: docs/SAMPLER_TUNING.md)

def _block(slots: int, largest: int) -> int:
    if b := largest_tile(slots, largest):
        return b
    raise ValueError(f"the KV cache has {slots} slots; the decode kernel needs a multiple of "
                     f"{SLOT_MULTIPLE}: build the cache with kv_cache.init_cache, which rounds up")


def _splits(programs: int, slots: int, block: int, target: int) -> int:
    """Slices per (row, kv head): as many as `target` programs hold (at least one), at most one
    per block. Each slice takes an equal share of its row's *filled* blocks, so every program of
    a step has work: slices of fixed slots left the programs past a row's last filled block
    empty while others read two blocks (1B, 64 rows, a local layer at 384 of 512 slots: 192 of
    256 programs read; in launch order about one SM in two gets two of them)."""
    return max(1, min(slots // block, target // programs))


def _kernel(q_pos_ref, sin_ref, cos_ref, *refs, heads: int, n_kv: int, row_pad: int, block: int,
            slots: int, window: int | None, softcap: float | None, q_scale: float,
            eps: float | None):
    """One (row, kv head, slice): this step's q and k normed and rotated, an online softmax over
    the slice's share of the row's filled blocks of the old cache plus (in the slice whose
    blocks hold its slot) the new token; that slice's program also writes the new k, v and
    position into the cache. The refs hold the whole row's cache. Output: with one slice a row
    (`out_ref` alone), normalised by the program itself; else the slice's unnormalised output,
    running max and sum, for the merge after the kernel."""
    n_norms = 0 if eps is None else 2
    q_norm_ref, k_norm_ref = refs[:n_norms] if n_norms else (None, None)
    qkv_ref, k_ref, v_ref, k_pos_ref, *out_refs, k_out, v_out, pos_out = refs[n_norms:]
    from jax.experimental.pallas import triton as pl_triton

    hd = k_ref.shape[-1]
    half = hd // 2
    b, h, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    q_pos = q_pos_ref[0]                                             # []
    sin, cos = sin_ref[...], cos_ref[...]                           # [hd/2] float32
    dtype = k_ref.dtype                        # the model's: q, k and v are rounded to it
    first = b * (heads + 2 * n_kv)             # this row's first line of the flat qkv

    def rounded(x):
        return x.astype(dtype).astype(F32)

    def projected(line, cols, n=None, mask=None):
        """One line of the projection's output (`n` lines from it: `[n, cols]`) as float32:
        the split-K partials summed and rounded as a dot rounds; lanes outside `mask` 0."""
        lines = first + line if n is None else pl.ds(first + line, n)
        at = lambda s: qkv_ref.at[jnp.int32(s), lines, cols]
        return rounded(sum(pl_triton.load(at(s), mask=mask, other=None if mask is None else 0)
                           .astype(F32) for s in range(qkv_ref.shape[0])))

    def norm_rotate(x1, x2, norm_ref):
        """Heads as float32 halves (`[hd/2]` or `[G, hd/2]`), RMS-normed (`norm_ref`: Gemma's
        1 + w) and rotated, each step rounded to the model's dtype as the XLA path rounds it."""
        if norm_ref is not None:
            inv = jax.lax.rsqrt((jnp.sum(x1 * x1, axis=-1) + jnp.sum(x2 * x2, axis=-1)) / hd
                                + eps)
            inv = inv if x1.ndim == 1 else inv[:, None]
            x1 = rounded(x1 * inv * (1.0 + norm_ref[pl.ds(0, half)].astype(F32)))
            x2 = rounded(x2 * inv * (1.0 + norm_ref[pl.ds(half, half)].astype(F32)))
        return rounded(x1 * cos - x2 * sin), rounded(x2 * cos + x1 * sin)

    # The G query heads of kv head h as the first G rows of a [row_pad, hd/2] x 2 tile (Triton's
    # dots need 16 rows; the rest are masked to 0), loaded, normed and rotated as one tile: a
    # head at a time, the preparation's chain of loads and reductions was G times as long (H100,
    # 1B, 64 rows: 36.2k -> 37.0k tokens/s).
    g = heads // n_kv
    real = jax.lax.broadcasted_iota(jnp.int32, (row_pad, half), 0) < g          # [Gp, hd/2]
    q1, q2 = norm_rotate(projected(h * g, pl.ds(0, half), row_pad, real),
                         projected(h * g, pl.ds(half, half), row_pad, real), q_norm_ref)
    q1 = jnp.where(real, rounded(q1 * q_scale), 0.0).astype(dtype)                # [Gp, hd/2]
    q2 = jnp.where(real, rounded(q2 * q_scale), 0.0).astype(dtype)
    k1, k2 = norm_rotate(projected(heads + h, pl.ds(0, half)),                 # the new key
                         projected(heads + h, pl.ds(half, half)), k_norm_ref)
    v_new = projected(heads + n_kv + h, pl.ds(0, hd))                # [hd], float32

    own = jnp.where(q_pos >= 0, q_pos % slots, -1)                   # the new token's slot
    # Filled slots are 0..min(q_pos, slots - 1) (none for a padding row): blocks
    # 0..filled_blocks - 1, of which this slice reads [start, end), its share.
    filled_blocks = (jnp.maximum(jnp.minimum(q_pos + 1, slots), 0) + block - 1) // block
    splits = pl.num_programs(2)
    start, end = j * filled_blocks // splits, (j + 1) * filled_blocks // splits

    def scores(s):
        return s if softcap is None else jnp.tanh(s / softcap) * softcap

    def step(i, carry):
        acc, run_max, run_sum = carry
        sl = pl.ds(i * block, block)
        s = scores(jnp.dot(q1, k_ref[sl, pl.ds(0, half)].T, preferred_element_type=F32)
                   + jnp.dot(q2, k_ref[sl, pl.ds(half, half)].T, preferred_element_type=F32))
        k_pos = k_pos_ref[sl]                                        # [block]
        slot = i * block + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
        # The own slot holds an older token (or nothing): the new one replaces it below.
        ok = (k_pos >= 0) & (k_pos <= q_pos) & (slot != own)
        if window is not None:
            ok &= q_pos - k_pos < window
        s = jnp.where(ok[None, :], s, NEG_INF)                       # [Gp, block]
        new_max = jnp.maximum(run_max, jnp.max(s, axis=1))           # [Gp]
        scale = jnp.exp(run_max - new_max)                           # [Gp]
        p = jnp.where(ok[None, :], jnp.exp(s - new_max[:, None]), 0.0)   # [Gp, block]
        v = v_ref[sl, :]                                             # [block, hd]
        acc = acc * scale[:, None] + jnp.dot(p.astype(v.dtype), v, preferred_element_type=F32)
        return acc, new_max, run_sum * scale + jnp.sum(p, axis=1)

    init = (jnp.zeros((row_pad, hd), F32), jnp.full((row_pad,), NEG_INF, F32),
            jnp.zeros((row_pad,), F32))
    acc, run_max, run_sum = jax.lax.fori_loop(start, end, step, init)

    # The new token, in the slice whose blocks hold its slot (a padding row owns none).
    owner = (own >= 0) & (own // block >= start) & (own // block < end)
    s_new = scores(jnp.sum(q1.astype(F32) * k1[None, :], axis=1)
                   + jnp.sum(q2.astype(F32) * k2[None, :], axis=1))  # [Gp]
    s_new = jnp.where(owner, s_new, NEG_INF)
    new_max = jnp.maximum(run_max, s_new)
    scale = jnp.exp(run_max - new_max)
    p_new = jnp.where(owner, jnp.exp(s_new - new_max), 0.0)          # [Gp]
    p_new = p_new.astype(dtype).astype(F32)
    acc = acc * scale[:, None] + p_new[:, None] * v_new[None, :]
    run_sum = run_sum * scale + p_new
    # Only the G real query rows are stored: the padded rows would be three quarters of the
    # bytes the kernel writes (and the merge reads), at G = 4.
    real = jax.lax.broadcasted_iota(jnp.int32, acc.shape, 0) < g                 # [Gp, hd]
    if len(out_refs) == 1:   # whole rows: a line per (row, query head), normalised here
        lines = out_refs[0].at[pl.ds((b * n_kv + h) * g, row_pad), :]
        out = acc / jnp.maximum(run_sum, 1e-30)[:, None]
        pl_triton.store(lines, out.astype(lines.dtype), mask=real)
    else:
        acc_ref, max_ref, sum_ref = out_refs
        pl_triton.store(acc_ref, acc, mask=real)
        max_ref[...] = new_max
        sum_ref[...] = run_sum

    @pl.when(owner)
    def _write():
        k_out[own, pl.ds(0, half)] = k1.astype(k_out.dtype)
        k_out[own, pl.ds(half, half)] = k2.astype(k_out.dtype)
        v_out[own, :] = v_new.astype(v_out.dtype)
        pos_out[pl.ds(own, 1)] = jnp.full((1,), q_pos, jnp.int32)


@functools.partial(jax.jit, static_argnames=(
    "heads", "window", "softcap", "q_scale", "eps", "interpret", "block", "programs",
    "num_warps", "num_stages"))
def decode_attention(qkv: jax.Array, q_pos: jax.Array, k: jax.Array, v: jax.Array,
                     k_pos: jax.Array, sin: jax.Array, cos: jax.Array,
                     q_norm: jax.Array | None, k_norm: jax.Array | None, *, heads: int,
                     window: int | None, softcap: float | None, q_scale: float,
                     eps: float | None, interpret: bool = False, block: int = 32,
                     programs: int = TARGET_PROGRAMS, num_warps: int = 4, num_stages: int = 3,
                     prefetch: tuple[jax.Array, ...] = ()
                     ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One decode step's attention for one layer: `(out [B, K, G, hd], k, v, k_pos)`.

    qkv: `[n, B, H + 2K, hd]`, this step's projections (H query heads, then K keys, then K
    values) before qk-norm and rotary embedding, as n split-K partials (float32,
    `decode_residual.split_matmul`) that the kernel sums and rounds to the cache's dtype, the
    model's (n = 1: the projection itself); q_pos: `[B]` int32 (-1 = padding row); k, v:
    `[B, S, K, hd]` and k_pos `[B, S]` int32, the layer's cache before this step; sin, cos:
    `[B, hd / 2]` float32, the rotary angles of q_pos (`layers.rope_angles`); q_norm, k_norm:
    `[hd]` RMSNorm weights (Gemma scales by 1 + w) with `eps`, or None and `eps=None` (no
    qk-norm); `q_scale`: the query scaling; `prefetch`: arrays whose bytes the programs ask L2
    for as they end, where `l2_prefetch.wanted` (the MLP's first weights, in the model).
    Returns the attention output in the cache's dtype and the cache with this token written at
    slot `q_pos % S` (donated: updated in place), as `model.Attention` computes them in XLA.
    `interpret=True` runs the kernel in Pallas's interpreter (CPU tests). Tuning: `block`, the
    largest block of slots per loop step; `programs`, the most programs to aim for per device
    (`_splits`); Triton's warps and stages. Under a mesh in context, each device takes its own
    rows (a `shard_map` over `data`)."""
    if qkv.ndim != 4:
        raise ValueError(f"decode_attention: qkv {qkv.shape} is not [n, B, H + 2K, hd]")
    _, b, lines, hd = qkv.shape
    slots, n_kv = k.shape[1], k.shape[2]
    if (lines != heads + 2 * n_kv or heads % n_kv or k.shape != (b, slots, n_kv, hd)
            or v.shape != k.shape or k_pos.shape != (b, slots) or q_pos.shape != (b,)
            or sin.shape != (b, hd // 2) or cos.shape != sin.shape):
        raise ValueError(f"decode_attention: qkv {qkv.shape}, q_pos {q_pos.shape}, k {k.shape}, "
                         f"v {v.shape}, k_pos {k_pos.shape}, sin {sin.shape} do not fit [n, B, H "
                         f"+ 2K, hd], [B], [B, S, K, hd] and [B, S], [B, hd / 2] with H = {heads}")
    if (q_norm is None) != (eps is None):
        raise ValueError("decode_attention: pass q_norm, k_norm and eps together, or none")
    if v.dtype != k.dtype:
        raise ValueError(f"decode_attention: k ({k.dtype}) and v ({v.dtype}) of one cache")
    local = functools.partial(
        _attend, heads=heads, window=window, softcap=softcap, q_scale=q_scale, eps=eps,
        interpret=interpret, block=_block(slots, block), programs=programs,
        num_warps=num_warps, num_stages=num_stages)
    norms = () if q_norm is None else (q_norm, k_norm)
    ahead = (tuple(a.reshape(-1) for a in prefetch) if l2_prefetch.wanted(b, interpret)
             else ())                                  # flat: each program takes a share
    rows = P(DATA)     # per-row arguments and outputs split; weights whole everywhere
    return on_each_devices_rows(
        functools.partial(local, n_ahead=len(ahead)),
        (*ahead, qkv, q_pos, k, v, k_pos, sin, cos, *norms),
        in_specs=(P(),) * len(ahead) + (P(None, DATA),) + (rows,) * 6 + (P(),) * len(norms),
        out_specs=(rows,) * 4, rows=b, what="decode_attention")


def _attend(*args, n_ahead, heads, window, softcap, q_scale, eps, interpret, block, programs,
            num_warps, num_stages):
    """`decode_attention` on the rows of one device: the kernel, then (rows in several slices)
    the merge of its slices. `args`: `n_ahead` flat arrays to prefetch, then
    `decode_attention`'s arrays."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    ahead, (qkv, q_pos, k, v, k_pos, sin, cos, *norms) = args[:n_ahead], args[n_ahead:]
    n_parts, b, lines, hd = qkv.shape
    slots, n_kv = k.shape[1], k.shape[2]
    g = heads // n_kv
    splits = _splits(b * n_kv, slots, block, programs)
    rows = max(MIN_QUERY_ROWS, g)
    sq = pl.squeezed
    kernel = early_launch.first(l2_prefetch.at_end(functools.partial(
        _kernel, heads=heads, n_kv=n_kv, row_pad=rows, block=block, slots=slots, window=window,
        softcap=softcap, q_scale=q_scale, eps=eps), n_ahead, grid_rank=3), interpret=interpret)
    cache_block = pl.BlockSpec((sq, slots, sq, hd), lambda i, h, j: (i, 0, h, 0))  # whole rows
    pos_block = pl.BlockSpec((sq, slots), lambda i, h, j: (i, 0))
    whole = lambda *shape: pl.BlockSpec(shape, lambda i, h, j: (0,) * len(shape))
    in_specs = [*map(l2_prefetch.spec, ahead),                                   # prefetch
                pl.BlockSpec((sq, 1), lambda i, h, j: (i, 0)),                   # q_pos
                pl.BlockSpec((sq, hd // 2), lambda i, h, j: (i, 0)),              # sin
                pl.BlockSpec((sq, hd // 2), lambda i, h, j: (i, 0)),              # cos
                *[whole(hd)] * len(norms),                                        # norms
                whole(n_parts, b * lines, hd),                                    # qkv
                cache_block, cache_block, pos_block]                              # k, v, k_pos
    if splits == 1:
        # The output itself: the merge kernel XLA ran after the kernel cost more than its
        # bytes (H100, 1B, 128 rows, one slice a row: 56,888 / 56,957 -> 58,723 / 58,699
        # tokens/s without it).
        out_specs = [whole(b * heads, hd)]                      # a line per (row, query head)
        out_shape = [jax.ShapeDtypeStruct((b * heads, hd), k.dtype)]
    else:
        per_slice = (b, n_kv, splits, rows)
        out_specs = [pl.BlockSpec((sq, sq, sq, rows, hd), lambda i, h, j: (i, h, j, 0, 0)),
                     *[pl.BlockSpec((sq, sq, sq, rows), lambda i, h, j: (i, h, j, 0))] * 2]
        out_shape = [jax.ShapeDtypeStruct((*per_slice, hd), F32),
                     *[jax.ShapeDtypeStruct(per_slice, F32)] * 2]
    first_cache = n_ahead + 4 + len(norms)
    *out, k, v, k_pos = pl.pallas_call(
        kernel,
        grid=(b, n_kv, splits),
        in_specs=in_specs,
        out_specs=[*out_specs, cache_block, cache_block, pos_block],
        out_shape=[*out_shape, jax.ShapeDtypeStruct(k.shape, k.dtype),
                   jax.ShapeDtypeStruct(v.shape, v.dtype),
                   jax.ShapeDtypeStruct(k_pos.shape, jnp.int32)],
        input_output_aliases={first_cache + i: len(out_shape) + i for i in range(3)},
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
    )(*ahead, q_pos.astype(jnp.int32)[:, None], sin.astype(F32), cos.astype(F32), *norms,
      qkv.reshape(n_parts, b * lines, hd), k, v, k_pos.astype(jnp.int32))
    if splits == 1:
        return out[0].reshape(b, n_kv, g, hd), k, v, k_pos                 # [B, K, G, hd]
    # Merge the slices: rescale each to the largest running max, then normalise once. A slice
    # that read nothing has sum 0 and weighs nothing; a row that read nothing gets zeros.
    # The padded rows past G were never stored.
    acc, run_max, run_sum = (x[:, :, :, :g] for x in out)
    top = jnp.max(run_max, axis=2, keepdims=True)                   # [B, K, 1, G]
    w = jnp.exp(run_max - top)                                       # [B, K, splits, G]
    total = jnp.sum(run_sum * w, axis=2)                             # [B, K, G]
    merged = jnp.sum(acc * w[..., None], axis=2) / jnp.maximum(total, 1e-30)[..., None]
    return merged.astype(k.dtype), k, v, k_pos                       # [B, K, G, hd]
