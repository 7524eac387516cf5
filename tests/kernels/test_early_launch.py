"""`early_launch`: where the decode kernels' trigger is issued, that it lowers to Triton's
`griddepcontrol.launch_dependents`, and (on a Hopper GPU) that kernels after a triggering
kernel still read its final output."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from aha_utils.kernels import early_launch

PROGRAMS, WIDTH = 256, 128


def _producer_kernel(step_ref, out_ref, *, spin: int):
    """Each program spins for a while, then writes `step + program id` to its 128 lanes."""
    pid = pl.program_id(0)
    x = jax.lax.fori_loop(0, spin, lambda i, x: x * 0.999 + 0.001,
                          jnp.full((WIDTH,), 1.0, jnp.float32) + pid.astype(jnp.float32))
    # x stays near 1, so this adds 0; the compiler cannot know that and keeps the spin.
    out_ref[pl.ds(pid * WIDTH, WIDTH)] = (jnp.where(x > 1e30, x, 0.0)
                                          + (step_ref[0] + pid).astype(jnp.float32))


def _producer(step, *, interpret: bool, spin: int = 4000):
    kernel = early_launch.first(functools.partial(_producer_kernel, spin=spin),
                                interpret=interpret)
    return pl.pallas_call(
        kernel, grid=(PROGRAMS,), out_shape=jax.ShapeDtypeStruct((PROGRAMS * WIDTH,), jnp.float32),
        interpret=interpret, compiler_params=pl_triton.CompilerParams(num_warps=4),
    )(jnp.asarray(step, jnp.int32)[None])


def _add_one_kernel(x_ref, o_ref):
    sl = pl.ds(pl.program_id(0) * WIDTH, WIDTH)
    o_ref[sl] = x_ref[sl] + 1.0


def test_trigger_only_where_it_can_run():
    kernel = lambda *refs: None
    assert early_launch.first(kernel, interpret=True) is kernel        # interpreter: never
    assert not early_launch.enabled(interpret=True)
    if jax.default_backend() != "gpu":
        assert not early_launch.enabled(interpret=False)               # no GPU: never
        assert early_launch.first(kernel, interpret=False) is kernel


def test_trigger_lowers_to_griddepcontrol():
    """Lowered for CUDA (no GPU needed): the Triton module of a kernel that calls
    `launch_dependents` carries the instruction; without the call it does not. (Only the
    instruction is searched for: the module also holds the kernel's name, this test's.)"""
    def lowered(trigger: bool) -> str:
        def kernel(x_ref, o_ref):
            if trigger:
                early_launch.launch_dependents()
            o_ref[...] = x_ref[...] * 2.0
        f = lambda x: pl.pallas_call(
            kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
            compiler_params=pl_triton.CompilerParams(num_warps=4))(x)
        return jax.jit(f).trace(jnp.ones((16,), jnp.float32)).lower(
            lowering_platforms=("cuda",)).as_text()

    assert "griddepcontrol.launch_dependents" in lowered(True)
    assert "griddepcontrol.launch_dependents" not in lowered(False)


def test_interpreted_kernel_is_unchanged():
    out = _producer(3, interpret=True, spin=4)
    np.testing.assert_array_equal(np.asarray(out), 3 + np.arange(PROGRAMS * WIDTH) // WIDTH)


@pytest.mark.skipif(not early_launch.enabled(interpret=False),
                    reason="needs a GPU of compute capability 9.0+ (Hopper)")
@pytest.mark.parametrize("options", [None, "command_buffers"])
def test_consumers_read_the_final_output(options):
    """A Pallas kernel, an XLA fusion and a cuBLAS GEMM after a kernel that triggers at once,
    then spins (a few us) before it writes: none of them may see an older value. 200 steps of
    a loop, each writing new values over the same buffer's previous ones."""
    opts = (None if options is None else
            {"xla_gpu_enable_command_buffer": "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE"})
    eye = jnp.eye(WIDTH, dtype=jnp.float32)

    @functools.partial(jax.jit, compiler_options=opts)
    def mismatches():
        def body(i, bad):
            x = _producer(i, interpret=False)
            pallas = pl.pallas_call(
                _add_one_kernel, grid=(PROGRAMS,), out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                compiler_params=pl_triton.CompilerParams(num_warps=4))(x)
            fusion = x * 2.0
            gemm = jnp.dot(x.reshape(PROGRAMS, WIDTH), eye, precision="highest").reshape(-1)
            want = (i + jnp.arange(PROGRAMS * WIDTH) // WIDTH).astype(jnp.float32)
            return bad + jnp.stack([jnp.sum(pallas != want + 1), jnp.sum(fusion != 2 * want),
                                    jnp.sum(gemm != want)])
        return jax.lax.fori_loop(0, 200, body, jnp.zeros(3, jnp.int32))

    assert np.asarray(mismatches()).tolist() == [0, 0, 0]
