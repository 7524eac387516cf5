"""`l2_prefetch`: how a kernel's programs split an array into prefetch runs, that the prefetch
lowers to Hopper's bulk L2 prefetch, where the attention kernel issues it, and (on a Hopper GPU)
that a prefetching attention kernel computes exactly what it computes without."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from aha_utils.kernels import decode_attention, early_launch, l2_prefetch
from tests.kernels.test_decode_attention import Q_POS, kernel_step, layer_and_inputs


@pytest.mark.parametrize("n, itemsize, parts", [
    (1152 * 13824, 2, 128),     # the 1B's gate/up from 64 rows x 2 slices
    (1_000_003, 2, 7),          # no multiple of anything
    (4096, 4, 132),             # fewer lines than lanes
    (24, 2, 3),                 # less than a line
])
def test_lanes_cover_the_array_once_in_whole_lines(n, itemsize, parts):
    runs = []
    for part in range(parts):
        start, size = l2_prefetch.lane_ranges(n, itemsize, part, parts, xp=np)
        assert start.shape == size.shape == (l2_prefetch.LANES,)
        assert np.all(size % 16 == 0) and np.all(size >= 0)
        runs += [(s * itemsize, z) for s, z in zip(start.tolist(), size.tolist()) if z]
    assert all(b % l2_prefetch.LINE == 0 for b, _ in runs)        # each run starts a line
    runs.sort()
    covered = 0
    for begin, size in runs:                                         # no gaps, no overlaps
        assert begin == covered
        covered += size
    assert covered == n * itemsize // 16 * 16                        # all but a last < 16 bytes


def test_prefetch_lowers_to_the_bulk_l2_prefetch():
    """Lowered for CUDA (no GPU needed): a kernel wrapped by `at_end` with an array to prefetch
    carries the instruction; the same kernel with none does not."""
    def lowered(count: int) -> str:
        def kernel(x_ref, o_ref):
            o_ref[...] = x_ref[...] * 2.0

        def f(x, w):
            ahead = (w,)[:count]
            return pl.pallas_call(
                l2_prefetch.at_end(kernel, count, grid_rank=1), grid=(4,),
                in_specs=[*map(l2_prefetch.spec, ahead), pl.BlockSpec((16,), lambda i: (i,))],
                out_specs=pl.BlockSpec((16,), lambda i: (i,)),
                out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                compiler_params=pl_triton.CompilerParams(num_warps=4))(*ahead, x)
        return jax.jit(f).trace(jnp.ones((64,), jnp.float32), jnp.ones((4096,), jnp.bfloat16)
                                ).lower(lowering_platforms=("cuda",)).as_text()

    assert "cp.async.bulk.prefetch.L2.global" in lowered(1)
    assert "cp.async.bulk.prefetch.L2.global" not in lowered(0)


def test_issued_on_the_gpus_and_at_the_rows_where_it_paid(monkeypatch):
    assert not l2_prefetch.wanted(64, interpret=True)
    if jax.default_backend() != "gpu":
        assert not l2_prefetch.wanted(64, interpret=False)          # no GPU: never
    monkeypatch.setattr(early_launch, "enabled", lambda interpret: not interpret)
    monkeypatch.setattr(l2_prefetch, "device_kind", lambda: "NVIDIA H100 80GB HBM3")
    assert [l2_prefetch.wanted(r, interpret=False) for r in (1, 8, 16, 64, 128, 256)] == [
        False, False, True, True, True, False]
    for other in ("NVIDIA H200", "NVIDIA H100 PCIe"):    # slower there; not measured there
        monkeypatch.setattr(l2_prefetch, "device_kind", lambda: other)
        assert not l2_prefetch.wanted(64, interpret=False)
    monkeypatch.setattr(l2_prefetch, "device_kind", lambda: "NVIDIA H200")
    monkeypatch.setattr(l2_prefetch, "DEVICES", ("H200",))           # to measure another GPU
    assert l2_prefetch.wanted(64, interpret=False)
    assert not l2_prefetch.wanted(1, interpret=False)


def test_the_interpreted_kernel_ignores_what_it_is_given_to_prefetch():
    attn, x, positions, cache = layer_and_inputs("gemma3", 1, jnp.float32, Q_POS)
    plain = kernel_step(attn, x, positions, cache, block=16, programs=24)
    ahead = kernel_step(attn, x, positions, cache, prefetch=(jnp.ones((1000,), jnp.float32),),
                        block=16, programs=24)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ahead)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(not early_launch.enabled(interpret=False),
                    reason="needs a GPU of compute capability 9.0+ (Hopper)")
def test_a_prefetching_attention_kernel_computes_the_same_step(monkeypatch):
    """Compiled, at 16 rows (where the kernel prefetches): a gate/up-sized array and one of an
    odd size prefetched, against no prefetch: the same output and cache, bit for bit."""
    monkeypatch.setattr(l2_prefetch, "DEVICES", (l2_prefetch.device_kind(),))  # any Hopper GPU
    q_pos = np.resize(Q_POS, 16)
    attn, x, positions, cache = layer_and_inputs("gemma3", 1, jnp.bfloat16, q_pos)
    assert l2_prefetch.wanted(16, interpret=False)
    weights = (jnp.ones((1152, 13824), jnp.bfloat16), jnp.ones((1_000_003,), jnp.float32))
    copy = lambda c: jax.tree.map(jnp.copy, c)            # the kernel updates its cache in place
    plain = kernel_step(attn, x, positions, copy(cache))
    ahead = kernel_step(attn, x, positions, copy(cache), prefetch=weights)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ahead)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
