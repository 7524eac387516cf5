"""Programmatic dependent launch for the decode kernels: each Pallas (Triton) kernel of a decode
step tells the GPU, as it starts, that the next kernel in the stream may be scheduled.

Why: a decode step is many short kernels, so the gap between one's end and the next one's start
is a real share of it. On Hopper (compute capability 9.0+) XLA launches kernels so that the next
may start once every program of this one has executed `griddepcontrol.launch_dependents`; its
`griddepcontrol.wait` still holds it until this one's writes are visible, so the trigger is never
a hazard. `first(kernel, interpret=...)` issues it at the start of a kernel body. Pallas has no
such op and may drop a pure inline asm, so a side-effecting primitive is registered through
Pallas's Triton lowering (`jax._src`). Off Hopper and in the interpreter it does nothing, so the
kernels' numbers never depend on it. Measurements: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import functools

import jax

MIN_CAPABILITY = 9.0


def enabled(interpret: bool) -> bool:
    """Whether a decode kernel traced now, interpreted or not, issues the trigger: compiled,
    on GPUs of compute capability 9.0 (Hopper) or above."""
    if interpret or jax.default_backend() != "gpu":
        return False
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
