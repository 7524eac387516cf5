"""A decode step's projections and residual joins as GPU kernels (Pallas on Triton): the
projections as split-K partials (`split_matmul`), and one kernel that sums a projection's
partials, norms, adds the residual and norms again (`residual_norms`).

Why: each Gemma block ends its two halves with `x = x + post_norm(proj)` followed by the next
part's `pre_norm(x)`; at one token per row XLA ran that as three or four small kernels a half
(the split-K reduction, one or two norm fusions), here one pass per row. The small projections'
partials (q/k/v, o) come from a Pallas kernel at the row counts where it beat XLA's batched
matmul (`PARTIALS_ROWS`), else from XLA. Rounding follows the XLA path step by step; only the
order of float32 sums differs. Rows split over a data-parallel mesh run on each device's own
rows. Tuned constants below; their measurements: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils.kernels import early_launch
from aha_utils.sharding import DATA, on_each_devices_rows, rows_per_device, rows_split_only

F32 = jnp.float32
MIN_TILE = 16      # Triton's smallest matmul tile
# Tuned on an H100 (the 1B; measurements: docs/SAMPLER_TUNING.md). How many slices of K the two
# projections before a join hand over (`split_matmul`): o's depends on the path that takes them.
O_SPLITS = 4            # o through XLA's batched matmul
O_SPLITS_KERNEL = 2     # o through the partials kernel (`o_splits`)
DOWN_SPLITS = 8
NUM_WARPS = 8              # per row, in the join kernel
PARTIALS_ROWS = (16, 64)   # rows a device for which `split_matmul` uses its kernel
# The partials kernel's tiling: 32 columns and 128 of K a step (4 warps, 4 stages).
BLOCK_N, BLOCK_K = 32, 128


def largest_tile(n: int, largest: int) -> int:
    """The largest power of two <= `largest` that divides `n`, 0 if that is below Triton's
    smallest tile (16): the decode kernels' block sizes."""
    b = largest
    while b >= MIN_TILE and n % b:
        b //= 2
    return b if b >= MIN_TILE and n > 0 else 0


def row_block(rows: int, largest: int = 64) -> int:
    """Rows one program of a decode kernel takes: `rows` rounded up to a power of two, at least
    Triton's smallest dot (16), at most `largest`. Callers pad the rows to a multiple of it."""
    return min(largest, max(MIN_TILE, pl.next_power_of_2(rows)))


def pad_rows(x: jax.Array, block: int) -> jax.Array:
    """`x` with zero rows appended up to a multiple of `block` (a kernel's row block); callers
    drop the padding rows' results."""
    extra = -x.shape[0] % block
    return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1)) if extra else x


def partials_kernel_available(rows: int, k_slice: int, n: int, *, interpret: bool) -> bool:
    """Whether `split_matmul` of `rows` rows, K slices of `k_slice` and `n` columns traced now
    runs `matmul_partials`: tiles that fit, the rows on one device or split over `data` only,
    and `PARTIALS_ROWS` rows a device where it was measured to win (in Pallas's interpreter,
    `interpret=True`, at any row count: the CPU tests reach it)."""
    return (largest_tile(k_slice, BLOCK_K) > 0 and n % BLOCK_N == 0 and rows_split_only()
            and (interpret or PARTIALS_ROWS[0] <= rows_per_device(rows) <= PARTIALS_ROWS[1]))


def o_splits(rows: int, k: int, n: int, *, interpret: bool) -> int:
    """The most split-K slices for the o projection (`[rows, k] @ [k, n]`): `O_SPLITS_KERNEL`
    where `matmul_partials` will take them, else `O_SPLITS` (see their tuning above)."""
    fewer = O_SPLITS_KERNEL
    return (fewer if k % fewer == 0
            and partials_kernel_available(rows, k // fewer, n, interpret=interpret) else O_SPLITS)


def split_matmul(x: jax.Array, w: jax.Array, max_splits: int, *, transposed: bool = False,
                 interpret: bool) -> jax.Array:
    """`[S, B, N]` float32 partials of `x [B, K] @ w [K, N]` (`w [N, K]` when `transposed`)
    over S equal slices of K, S the largest power of two up to `max_splits` that divides K:
    their sum is the product. No reduction kernel after it: `matmul_partials` where
    `partials_kernel_available` (`w [K, N]` only), else one batched matmul. The weights are
    not copied: their K axis is only reshaped into `[S, K / S]`. `interpret`: Pallas's
    interpreter (off GPUs)."""
    b, k = x.shape
    if w.ndim != 2 or w.shape[1 if transposed else 0] != k:
        raise ValueError(f"split_matmul: x {x.shape} and w {w.shape} (transposed={transposed}) "
                         "do not fit [B, K] @ [K, N] ([N, K] when transposed)")
    s = 1
    while 2 * s <= max_splits and k % (2 * s) == 0:
        s *= 2
    if not transposed and x.dtype == w.dtype and partials_kernel_available(
            b, k // s, w.shape[1], interpret=interpret):
        return matmul_partials(x, w, s, interpret=interpret)
    xs = x.reshape(b, s, k // s)                                        # [B, S, K/S]
    if transposed:
        return jnp.einsum("bsk,nsk->sbn", xs, w.reshape(w.shape[0], s, k // s),
                          preferred_element_type=F32)                  # [S, B, N]
    return jnp.einsum("bsk,skn->sbn", xs, w.reshape(s, k // s, w.shape[1]),
                      preferred_element_type=F32)                      # [S, B, N]


def _partials_kernel(x_ref, w_ref, out_ref, *, block_k: int):
    """One (row block, column tile, slice of K): that slice's product, accumulated in float32
    `block_k` at a time."""
    rows, cols = out_ref.shape

    def step(i, acc):
        ks = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
        return acc + jnp.dot(x_ref[:, ks], w_ref[ks, :], preferred_element_type=F32)

    out_ref[...] = jax.lax.fori_loop(0, x_ref.shape[1] // block_k, step,
                                     jnp.zeros((rows, cols), F32))


@functools.partial(jax.jit, static_argnames=("splits", "interpret", "block_n", "block_k",
                                             "num_warps", "num_stages"))
def matmul_partials(x: jax.Array, w: jax.Array, splits: int, *, interpret: bool = False,
                    block_n: int = BLOCK_N, block_k: int = BLOCK_K, num_warps: int = 4,
                    num_stages: int = 4) -> jax.Array:
    """`[S, B, N]` float32: the products of `x [B, K]` and `w [K, N]` (one dtype) over
    `splits` equal slices of K, one Pallas program per (up to 64 rows, `block_n` columns,
    slice). Rows are padded to a power of two of at least 16 (Triton's smallest dot), and the
    padding's partials dropped. `interpret=True` runs the kernel in Pallas's interpreter (CPU
    tests). Under a mesh in context each device takes its own rows (a `shard_map` over `data`)."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    b, k = x.shape
    n = w.shape[-1]
    k_slice = k // splits if splits > 0 and k % splits == 0 else 0
    tile_k = largest_tile(k_slice, block_k)
    if w.shape != (k, n) or x.dtype != w.dtype or not tile_k or n % block_n:
        raise ValueError(f"matmul_partials: x {x.dtype}{x.shape}, w {w.dtype}{w.shape} and "
                         f"{splits} slices do not fit [B, K] @ [K, N] of one dtype with N a "
                         f"multiple of {block_n} and K / slices a multiple of {MIN_TILE}; use "
                         "split_matmul, which falls back to XLA for such shapes")

    def local(x, w):
        rows = x.shape[0]
        block_m = row_block(rows)
        x = pad_rows(x, block_m)
        padded = x.shape[0]
        parts = pl.pallas_call(
            early_launch.first(functools.partial(_partials_kernel, block_k=tile_k),
                               interpret=interpret),
            grid=(padded // block_m, n // block_n, splits),
            in_specs=[pl.BlockSpec((block_m, k_slice), lambda m, j, s: (m, s)),
                      pl.BlockSpec((k_slice, block_n), lambda m, j, s: (s, j))],
            out_specs=pl.BlockSpec((pl.squeezed, block_m, block_n), lambda m, j, s: (s, m, j)),
            out_shape=jax.ShapeDtypeStruct((splits, padded, n), F32),
            interpret=interpret,
            compiler_params=pl_triton.CompilerParams(num_warps=num_warps,
                                                     num_stages=num_stages),
        )(x, w)                                                             # [S, B', N]
        return parts[:, :rows]

    return on_each_devices_rows(local, (x, w), in_specs=(P(DATA), P()),
                                out_specs=P(None, DATA), rows=b, what="matmul_partials")


def _kernel(parts_ref, x_ref, post_ref, next_ref, x_out, h_out, *, eps: float):
    """One row: x_out = x + post_norm(sum(parts)), h_out = next_norm(x_out). The refs hold the
    row as it is; loads and stores take a power-of-two block of lanes, masked past the width."""
    from jax.experimental.pallas import triton as pl_triton

    splits, width = parts_ref.shape
    dtype = x_ref.dtype
    lanes = jnp.arange(pl.next_power_of_2(width))                              # [Dp]
    valid = lanes < width
    load = lambda ref, *at: pl_triton.load(ref.at[(*at, lanes)], mask=valid,
                                           other=0).astype(F32)

    def norm(v, scale_ref):
        inv = jax.lax.rsqrt(jnp.sum(v * v) / width + eps)
        return (v * inv * (1.0 + load(scale_ref))).astype(dtype).astype(F32)

    proj = sum(load(parts_ref, s) for s in range(splits))                     # [Dp] float32
    proj = proj.astype(dtype).astype(F32)                  # the projection's output, rounded
    new_x = (load(x_ref) + norm(proj, post_ref)).astype(dtype)
    pl_triton.store(x_out.at[lanes], new_x, mask=valid)
    pl_triton.store(h_out.at[lanes], norm(new_x.astype(F32), next_ref).astype(dtype), mask=valid)


@functools.partial(jax.jit, static_argnames=("eps", "interpret", "num_warps"))
def residual_norms(parts: jax.Array, x: jax.Array, post_scale: jax.Array,
                   next_scale: jax.Array, *, eps: float, interpret: bool = False,
                   num_warps: int = NUM_WARPS) -> tuple[jax.Array, jax.Array]:
    """`(x + post_norm(sum(parts)), next_norm(that))`, both `[B, D]` in x's dtype.

    parts: `[S, B, D]` float32, a projection's split-K partials (`split_matmul`); x: `[B, D]`,
    the residual stream; post_scale, next_scale: `[D]` RMSNorm weights (Gemma scales by 1 + w)
    with `eps`. `interpret=True` runs the kernel in Pallas's interpreter (CPU tests)."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    b, d = x.shape
    if (parts.ndim != 3 or parts.shape[1:] != (b, d) or post_scale.shape != (d,)
            or next_scale.shape != (d,)):
        raise ValueError(f"residual_norms: parts {parts.shape}, x {x.shape}, scales "
                         f"{post_scale.shape}, {next_scale.shape} do not fit [S, B, D], [B, D], "
                         "[D], [D]")

    def local(parts, x, post_scale, next_scale):
        row = pl.BlockSpec((pl.squeezed, d), lambda i: (i, 0))
        scale = pl.BlockSpec((d,), lambda i: (0,))
        return pl.pallas_call(
            early_launch.first(functools.partial(_kernel, eps=eps), interpret=interpret),
            grid=(x.shape[0],),
            in_specs=[pl.BlockSpec((parts.shape[0], pl.squeezed, d), lambda i: (0, i, 0)),
                      row, scale, scale],
            out_specs=[row, row],
            out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype)] * 2,
            interpret=interpret,
            compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=1),
        )(parts.astype(F32), x, post_scale, next_scale)

    return tuple(on_each_devices_rows(
        local, (parts, x, post_scale, next_scale), in_specs=(P(None, DATA), P(DATA), P(), P()),
        out_specs=(P(DATA),) * 2, rows=b, what="residual_norms"))
