"""The decoder's building blocks on their own: `einsum_f32`'s backward multiplies in the
operands' dtype and still gives the exact gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils.layers import einsum_f32
from tests.conftest import jaxpr_eqns


def _dot_operand_dtypes(fn, *args):
    """The operand dtypes of every dot_general in the jaxpr of `fn(*args)` (sub-jaxprs too)."""
    return [tuple(str(v.aval.dtype) for v in eqn.invars)
            for eqn in jaxpr_eqns(jax.make_jaxpr(fn)(*args).jaxpr)
            if eqn.primitive.name == "dot_general"]


@pytest.mark.parametrize("spec,x_shape,y_shape", [
    ("...d,vd->...v", (2, 3, 8), (16, 8)),                  # the logits
    ("btkgh,bskh->bkgts", (2, 5, 1, 4, 8), (2, 7, 1, 8)),   # attention scores
])
def test_einsum_f32_backward_multiplies_in_bf16(spec, x_shape, y_shape):
    kx, ky, kw = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape).astype(jnp.bfloat16)
    y = jax.random.normal(ky, y_shape).astype(jnp.bfloat16)
    w = jax.random.normal(kw, jnp.einsum(spec, x, y).shape)
    ours = jax.grad(lambda a, b: jnp.sum(w * einsum_f32(spec, a, b)), (0, 1))
    plain = jax.grad(lambda a, b: jnp.sum(w * jnp.einsum(spec, a, b,
                                                         preferred_element_type=jnp.float32)),
                     (0, 1))
    # JAX's own transpose multiplies the float32 cotangent by a bf16 operand, which XLA upcasts
    # to a float32 matmul ...
    assert any("float32" in ops for ops in _dot_operand_dtypes(plain, x, y))
    # ... ours rounds the cotangent instead: every backward matmul is a bf16 one.
    assert set(_dot_operand_dtypes(ours, x, y)) == {("bfloat16", "bfloat16")}
    exact = jax.grad(lambda a, b: jnp.sum(w * jnp.einsum(spec, a.astype(jnp.float32),
                                                         b.astype(jnp.float32))), (0, 1))
    for got, want in zip(ours(x, y), exact(x, y)):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want),
                                   atol=2e-2 * float(jnp.max(jnp.abs(want))))
    # Forward: the float32 product itself; float32 operands: the exact gradient.
    np.testing.assert_array_equal(einsum_f32(spec, x, y),
                                  jnp.einsum(spec, x, y, preferred_element_type=jnp.float32))
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    for got, want in zip(jax.grad(lambda a, b: jnp.sum(w * einsum_f32(spec, a, b)), (0, 1))(
            x32, y32), exact(x32, y32)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
