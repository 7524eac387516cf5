"""L2 prefetch from a decode kernel: the attention kernel, as each of its programs ends, asks the
GPU to bring the MLP's gate/up weights into L2, so that the MLP's first matmul reads them there.

Why: between the attention kernel and the gate/up GEMM run small kernels that leave HBM idle;
Hopper's `cp.async.bulk.prefetch.L2.global` (fire and forget) fills that time. Each program
takes an equal share of the array in whole 128-byte lines (`lane_ranges`), issued as it ends
(at the start the copies competed with the attention's own reads). Only where it was measured
to pay: the GPU kinds in `DEVICES` (on an H200 it cost time) and `ROWS` rows a device. A
side-effecting primitive registered through Pallas's Triton lowering, as in `early_launch`.
Off Hopper and in the interpreter nothing is issued. Measurements: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from aha_utils.kernels import early_launch
from aha_utils.sharding import rows_per_device

DEVICES = ("H100 80GB HBM3",)  # device kinds (substrings) where it was measured to pay: the
                               # H100 SXM (PCIe and NVL parts have other HBM: not measured)
ROWS = (16, 128)               # rows a device for which the attention kernel prefetches
LANES = 128                    # threads of a program that issue prefetches (4 warps)
LINE = 128                     # bytes in a cache line: each lane's run is whole lines


def wanted(rows: int, interpret: bool) -> bool:
    """Whether a decode kernel traced now for `rows` rows prefetches: on Hopper GPUs
    (`early_launch.enabled`) of the `DEVICES` kinds, at `ROWS` rows a device."""
    if not early_launch.enabled(interpret):
        return False
    return (any(kind in device_kind() for kind in DEVICES)
            and ROWS[0] <= rows_per_device(rows) <= ROWS[1])


def device_kind() -> str:
    """The first device's kind, as JAX names it (e.g. "NVIDIA H100 80GB HBM3")."""
    return jax.devices()[0].device_kind


def lane_ranges(n: int, itemsize: int, part, parts: int, xp=jnp):
    """`(start, size)` `[LANES]`: the element offset and the bytes each lane of program `part`
    (of `parts`) prefetches from a flat array of `n` items. The lanes of all programs cover the
    array once, in runs of whole lines, but its last bytes past a multiple of 16 (the
    instruction's unit). `xp=np` computes them on the host (tests)."""
    line = LINE // itemsize                                   # items in a line
    per = -(-n // (parts * LANES * line)) * line              # items a lane
    lane = xp.arange(LANES, dtype=np.int32)
    start = (part * LANES + lane) * per
    size = xp.clip(n - start, 0, per) * itemsize // 16 * 16
    return xp.minimum(start, n - 1), size


def share(ref, part, parts: int) -> None:
    """Inside a Pallas (Triton) kernel: prefetch program `part`'s share (of `parts`) of the flat
    array behind the whole-array `ref` into L2."""
    start, size = lane_ranges(ref.shape[0], jnp.dtype(ref.dtype).itemsize, part, parts)
    _primitive().bind(ref, start, size)


def at_end(kernel, count: int, grid_rank: int):
    """`kernel` (a Pallas kernel body of a `grid_rank`-dimensional grid) taking `count` more
    leading refs, flat arrays (`spec`), whose shares its programs prefetch after its own work."""
    if not count:
        return kernel

    @early_launch.keeps_name(kernel)
    def prefetching(*refs):
        targets, rest = refs[:count], refs[count:]
        part, parts = 0, 1
        for d in range(grid_rank):
            part, parts = part * pl.num_programs(d) + pl.program_id(d), parts * pl.num_programs(d)
        kernel(*rest)
        for ref in targets:
            share(ref, part, parts)
    return prefetching


def spec(array: jax.Array) -> pl.BlockSpec:
    """The block spec of a flat array to prefetch: the whole array, never loaded."""
    return pl.BlockSpec(array.shape, lambda *_: (0,))


@functools.cache
def _primitive():
    from jax._src.pallas.triton import lowering as triton_lowering

    def operands(ptr, start, size):   # the lanes' addresses (the ref's pointer + offsets)
        shape = triton_lowering.ir.RankedTensorType(start.type).shape
        return [triton_lowering._add(triton_lowering._bcast_to(ptr, shape), start), size], shape

    return early_launch.inline_asm_primitive(
        "prefetch_l2", "{ .reg .pred p; setp.gt.s32 p, $2, 0; "
        "@p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }", "=r,l,r", operands)
