"""Programmatic dependent launch for the decode kernels: each Pallas (Triton) kernel of a decode
step tells the GPU, as it starts, that the next kernel in the stream may be scheduled.

A decode step of the 1B at 64 rows is about 10 kernels a layer of 2-15 us each, so the time
between one kernel's end and the next one's start is a real share of the step. Hopper (compute
capability 9.0) can overlap it: a kernel launched with programmatic stream serialisation (XLA
launches its kernels so on Hopper, `xla_gpu_enable_pdl`, on by default in jax 0.11) may start
as soon as every program of the kernel before it has executed
`griddepcontrol.launch_dependents`, or ended, and its `griddepcontrol.wait` holds it until that
kernel has finished and its writes are visible. XLA's own kernels issue the trigger; a Pallas
kernel issues it only if it says so: `launch_dependents()` does, and `first(kernel,
interpret=...)` puts it at the start of a kernel body.

Design decisions:
- Issued first thing in each program, and never a hazard: it only lets the next kernel's
  programs be scheduled early, not read early. The trigger fires once all of this kernel's
  programs have started, so the next kernel's programs fill SMs that this one no longer needs.
  `tests/test_early_launch.py` (GPU only) checks on the device that a Pallas kernel, an XLA
  fusion and a cuBLAS GEMM after a triggering kernel that spins before it writes all read its
  final output.
- Measured (H100, 1B, greedy, 512 new tokens, one process, with and without): 38,285 and
  38,278 tokens/s against 37,755 and 37,815 at 64 rows (+1.3%); 10,641 and 10,632 against
  10,615 and 10,607 at 16 (+0.2%); the same tokens in every run.
- Pallas exposes inline assembly only as a pure elementwise op, which the compiler may drop
  when its result is unused or move next to its first use. So this module registers a small
  primitive of its own, lowered to Triton's inline assembly with side effects, through
  Pallas's lowering registry (`jax._src`, stable across the jax versions `requirements.txt`
  allows: 0.10 and 0.11). It is registered on first use (a GPU trace, or
  the CPU test that lowers it for CUDA).
- Off Hopper (older GPUs have no `griddepcontrol`), in Pallas's interpreter (CPU tests) and
  with `ENABLED = False` it does nothing, so the kernels' numbers never depend on it.
"""

from __future__ import annotations

import functools

import jax

ENABLED: bool | None = None   # None: on GPUs of compute capability 9.0 or above. False: never
                              # (an A/B of the trigger); True: on any GPU (fails before Hopper).
MIN_CAPABILITY = 9.0


def enabled(interpret: bool) -> bool:
    """Whether a decode kernel traced now, interpreted or not, issues the trigger."""
    if interpret or ENABLED is False or jax.default_backend() != "gpu":
        return False
    if ENABLED:
        return True
    capability = getattr(jax.devices()[0], "compute_capability", None)
    return capability is not None and float(capability) >= MIN_CAPABILITY


def first(kernel, *, interpret: bool):
    """`kernel` (a Pallas kernel body), issuing `launch_dependents()` before anything else
    where `enabled(interpret)`; else `kernel` itself."""
    if not enabled(interpret):
        return kernel

    @keeps_name(kernel)
    def triggered(*refs):
        launch_dependents()
        return kernel(*refs)
    return triggered


def keeps_name(kernel):
    """A decorator for a wrapper of the Pallas kernel body `kernel` (or a partial of one): the
    wrapper takes the body's name, by which profiles name the kernel."""
    return functools.wraps(getattr(kernel, "func", kernel))


def launch_dependents() -> None:
    """Inside a Pallas (Triton) kernel on a GPU: let the next kernel in the stream be
    scheduled once every program of this one has passed this point."""
    _primitive().bind()


@functools.cache
def _primitive():
    return inline_asm_primitive("launch_dependents", "griddepcontrol.launch_dependents; // $0",
                                "=r")


def inline_asm_primitive(name: str, asm: str, constraints: str, operands=None):
    """A primitive to bind inside a Pallas (Triton) kernel that lowers to inline PTX `asm` with
    side effects, so the compiler keeps it where it is (also `l2_prefetch`'s). `$0` is a
    dummy int32 output (the op needs a result). `operands(*lowered_args)`, given the bound
    arguments as lowered, returns the asm's operands and their common shape; none by default."""
    from jax._src import core as jax_core
    from jax._src.interpreters import mlir
    from jax._src.lib.triton import dialect as tt_dialect
    from jax._src.pallas.triton import lowering as triton_lowering
    from jax._src.pallas.triton import primitives as triton_primitives
    import jax.numpy as jnp

    prim = jax_core.Primitive(name)
    prim.multiple_results = True
    # An effect, so that tracing keeps it though it returns nothing (Pallas allows this one,
    # its barrier's, inside kernels and loops).
    prim.def_effectful_abstract_eval(lambda *avals: ([], {triton_primitives.barrier_effect}))

    @triton_lowering.register_lowering(prim)
    def _lower(ctx, *args):
        del ctx
        asm_args, shape = operands(*args) if operands else ([], ())
        out = mlir.dtype_to_ir_type(jnp.dtype(jnp.int32))
        if shape:
            out = triton_lowering.ir.RankedTensorType.get(shape, out)
        tt_dialect.elementwise_inline_asm([out], asm, constraints=constraints, pure=False,
                                          packed_element=1, args=asm_args)
        return []

    return prim
