"""L2 prefetch from a decode kernel: the attention kernel, as each of its programs ends, asks the
GPU to bring the MLP's gate/up weights into L2, so that the MLP's first matmul reads them from
there.

Why: a decode step of the 1B at 64 rows reads 32 MB of gate/up weights a layer in one GEMM, 12.5
us cold on an H100 and 10.3-10.7 us right after a kernel that prefetched them into L2 (50 MB on
an H100), timed alone. Between the attention kernel and that GEMM run the slice merge, the o
projection and the residual join: small kernels that mostly wait on latency and leave HBM idle.
Prefetched from there, the weights arrive while those kernels run. Sampler A/B (`.prof`-style
script, H100, 1B, greedy, 512 new tokens, one process each, without -> with): 64 rows 38,305 ->
39,039 tokens/s (+1.9%; in an earlier pair of runs 38,475 / 38,448 -> 39,345 / 39,272), 16 rows
10,706 -> 10,798; the same tokens.

Design decisions:
- Hopper's `cp.async.bulk.prefetch.L2.global [addr], bytes` is fire and forget: a thread issues
  it and goes on, holding no registers for the data, so the issuing kernel ends as fast as
  before. Each program takes an equal share of the array, spread over `LANES` threads, each a
  run of whole 128-byte lines (`lane_ranges`).
- Issued as a program ends, not as it starts: at the start the copies competed with the
  attention's own reads (36,707 tokens/s, against 39,366 at the end and 38,470 without).
- Only on the GPUs where it was measured to pay (`DEVICES`): on an NVIDIA H200 (4.8 TB/s of
  HBM against the H100's 3.35, the same 50 MB of L2) it cost 1.1% at 64 rows (44,439 / 44,416
  against 44,981 / 44,876 tokens/s without) and 1.8% at 16 (11,658 / 11,666 against 11,873 /
  11,875): the GEMM reads its weights fast enough from HBM there, and the copies only add
  traffic. `ENABLED = True` turns it on for any Hopper GPU, to measure another.
- Only the gate/up weights, and only at `ROWS` rows a device. Also tried (1B, 64 rows; the
  gate/up prefetch alone made 39,366-39,430 tokens/s in the same runs), all slower or no faster:
  the o projection's weights with them (39,135), the down projection's from the attention or
  from the join before gate/up (38,273, 36,475: 48 MB with gate/up's, most of L2, fetched while
  the gate/up GEMM reads), the next layer's q/k/v from the last join (39,258), the layer's whole
  KV cache from the q/k/v kernel or the join before it (38,177, 36,380); and, without the
  gate/up prefetch, each attention program's own cache blocks at its start (37,485 against
  38,710). At 1 row the prefetch cost 10% (774 -> 700 tokens/s: the one-row GEMV streams the
  weights at full bandwidth anyway), at 256 rows 1% (77,553 -> 76,648); at 16 rows it gained 1%
  (10,739 -> 10,835), at 128 (a GRPO step's rows) 1.3% (56,063 / 55,930 -> 56,776 / 56,739).
- Pallas has no prefetch, and its inline assembly is a pure elementwise op that the compiler
  may drop, so this module registers a side-effecting primitive through Pallas's Triton
  lowering registry (`jax._src`, as `early_launch` does; the CPU test lowers it for CUDA).
- Off Hopper, in Pallas's interpreter and with `ENABLED = False` nothing is issued, so the
  kernels' numbers never depend on it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from aha_utils import early_launch
from aha_utils.sharding import rows_per_device

ENABLED: bool | None = None    # None: on `DEVICES`; True: on any Hopper GPU; False: never
DEVICES = ("H100 80GB HBM3",)  # device kinds (substrings) where it was measured to pay: the
                               # H100 SXM (PCIe and NVL parts have other HBM: not measured)
ROWS = (16, 128)               # rows a device for which the attention kernel prefetches
LANES = 128                    # threads of a program that issue prefetches (4 warps)
LINE = 128                     # bytes in a cache line: each lane's run is whole lines


def wanted(rows: int, interpret: bool) -> bool:
    """Whether a decode kernel traced now for `rows` rows prefetches: on Hopper GPUs
    (`early_launch.enabled`) of the `DEVICES` kinds (any, with `ENABLED = True`; none with
    False), at `ROWS` rows a device."""
    if ENABLED is False or not early_launch.enabled(interpret):
        return False
    return ((ENABLED or any(kind in device_kind() for kind in DEVICES))
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
