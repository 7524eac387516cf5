"""A decode step's residual joins as one GPU kernel (Pallas on Triton): the sum of a
projection's split-K partials, its RMS norm, the residual add, and the next RMS norm.

Each Gemma block ends its two halves the same way: `x = x + post_norm(proj)`, then the next
part starts from `pre_norm(x)` (the MLP's pre-norm after attention; the next block's pre-norm, or
the final norm, after the MLP). At one token per row XLA ran this as three or four kernels a
half on an H100 (the split-K reduction of the projection, one or two norm fusions), 1.5-5 us
each for a few hundred KB. `residual_norms` does it in one pass per row.

Design decisions:
- The projection hands its split-K partials over unreduced (`split_matmul`: a batched matmul
  whose batch is the K split, `[S, B, N]` float32), and the kernel sums them: XLA would
  otherwise write the sum in its own kernel. The weights need no copy: `[K, N]` read as
  `[S, K / S, N]` is a reshape.
- Rounding follows the XLA path step by step: the summed projection rounded to the model's
  dtype (as a dot's output is), the norm in float32 rounded, the add rounded, the second norm
  rounded. Only the order of float32 sums differs.
- One program per row, the whole row in registers: Triton's blocks are powers of two, so the
  row (1,152 wide in the 1B) is loaded and stored as a block of the next power of two with the
  lanes past the width masked (loaded as 0, never stored). A block spec wider than the array
  instead compiled to wrong rows on an H100 (its interpreter on the CPU was right).
- Several devices: rows split over the `data` axis run the kernel on each device's own rows
  (`sharding.on_each_devices_rows`, as `decode_attention`); any other split keeps the XLA path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils.sharding import DATA, on_each_devices_rows

F32 = jnp.float32
# How many slices of K the two projections before a join hand over (`split_matmul`). XLA's own
# choice at one token per row was 4 for o and 16 for down (cuBLAS). On an H100 (1B, 64 rows)
# 4 and 8 sampled fastest of (o, down) = (4, 8), (4, 16), (2, 8), (8, 8): 32.4k tokens/s
# against 31.4k-31.9k.
O_SPLITS = 4
DOWN_SPLITS = 8
NUM_WARPS = 8      # per row (H100, 1B, 64 rows: 2, 4, 8 sampled 32.4k, 32.8k, 33.1k tokens/s)


def split_matmul(x: jax.Array, w: jax.Array, max_splits: int, *, transposed: bool = False
                 ) -> jax.Array:
    """`[S, B, N]` float32 partials of `x [B, K] @ w [K, N]` (`w [N, K]` when `transposed`)
    over S equal slices of K, S the largest power of two up to `max_splits` that divides K:
    their sum is the product. One batched matmul, and no reduction kernel after it. The
    weights are not copied: their K axis is only reshaped into `[S, K / S]`."""
    b, k = x.shape
    if w.ndim != 2 or w.shape[1 if transposed else 0] != k:
        raise ValueError(f"split_matmul: x {x.shape} and w {w.shape} (transposed={transposed}) "
                         "do not fit [B, K] @ [K, N] ([N, K] when transposed)")
    s = 1
    while 2 * s <= max_splits and k % (2 * s) == 0:
        s *= 2
    xs = x.reshape(b, s, k // s)                                        # [B, S, K/S]
    if transposed:
        return jnp.einsum("bsk,nsk->sbn", xs, w.reshape(w.shape[0], s, k // s),
                          preferred_element_type=F32)                  # [S, B, N]
    return jnp.einsum("bsk,skn->sbn", xs, w.reshape(s, k // s, w.shape[1]),
                      preferred_element_type=F32)                      # [S, B, N]


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
            functools.partial(_kernel, eps=eps),
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
