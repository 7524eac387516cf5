"""The decode step's residual-join kernel (`aha_utils.kernels.decode_residual`), run in Pallas's
interpreter on the CPU: a numpy reference (matmul, RMSNorm, add, RMSNorm, each rounded),
split-K partials that sum to the product, the whole decode step of a model against its XLA
path, and clear errors; and the split-K partials kernel against XLA's batched matmul."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.kernels import decode_residual as residual
from aha_utils.kernels import decode_step
from aha_utils.kernels.decode_weights import DecodeWeights
from aha_utils.kv_cache import init_cache
from aha_utils.model import Gemma
from tests.test_model import CONFIGS

INTERPRET = jax.default_backend() != "gpu"     # compiled on a GPU, interpreted elsewhere


def reference_join(a, w, x, post_scale, next_scale, eps=1e-6):
    """numpy: x + post_norm(a @ w), then next_norm of that, rounded to x's dtype after each
    step as the model's XLA path is written (on GPUs XLA may skip some of those roundings
    inside its fusions, so XLA itself is no bit-level reference there)."""
    dtype = np.asarray(x).dtype
    f32 = lambda v: np.asarray(v).astype(np.float32)
    rnd = lambda v: v.astype(dtype).astype(np.float32)

    def norm(v, scale):
        inv = 1.0 / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)
        return rnd(v * inv * (1.0 + f32(scale)))

    new_x = rnd(f32(x) + norm(rnd(f32(a) @ f32(w)), post_scale))
    return new_x, norm(new_x, next_scale)


@pytest.mark.parametrize("dtype, width, max_splits", [
    (jnp.float32, 96, 4),      # a width padded to a block of 128
    (jnp.bfloat16, 384, 8),    # padded to 512, the 1B's case (1152 -> 2048) in small
    (jnp.bfloat16, 256, 1),    # a power of two, one partial
])
def test_join_equals_a_reference(dtype, width, max_splits):
    rows, k = 6, 64
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (rows, width), dtype) * 3.0             # [B, D]
    a = jax.random.normal(keys[1], (rows, k), dtype)                       # [B, K]
    w = (jax.random.normal(keys[2], (k, width)) / 8).astype(dtype)         # [K, D]
    post, nxt = (jax.random.normal(key, (width,), dtype) * 0.5 for key in keys[3:])

    want_x, want_h = reference_join(a, w, x, post, nxt)
    parts = residual.split_matmul(a, w, max_splits, interpret=INTERPRET)
    got_x, got_h = residual.residual_norms(parts, x, post, nxt, eps=1e-6, interpret=INTERPRET)
    assert got_x.dtype == dtype and got_h.shape == (rows, width)
    for got, want in ((got_x, want_x), (got_h, want_h)):
        got = np.asarray(got, np.float32)
        if dtype == jnp.float32:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        else:   # rounded where the reference rounds: only float32 sum orders differ, so at
            np.testing.assert_allclose(got, want, rtol=2 ** -7, atol=1e-6)  # most one bf16
            assert (got != want).mean() < 0.01                             # step, rarely


@pytest.mark.parametrize("transposed", [False, True])
def test_split_matmul_partials_sum_to_the_product(transposed):
    x = jax.random.normal(jax.random.key(0), (5, 96))
    w = jax.random.normal(jax.random.key(1), (96, 40))
    for max_splits, splits in ((8, 8), (64, 32), (5, 4), (1, 1)):  # 96 = 32 x 3: powers of 2
        parts = residual.split_matmul(x, w.T if transposed else w, max_splits,
                                      transposed=transposed, interpret=INTERPRET)
        assert parts.shape == (splits, 5, 40) and parts.dtype == jnp.float32
        np.testing.assert_allclose(parts.sum(0), x @ w, rtol=1e-5, atol=1e-4)
    # each partial is one slice of K, not a share of the whole product
    parts = residual.split_matmul(x, w.T if transposed else w, 2, transposed=transposed,
                                  interpret=INTERPRET)
    np.testing.assert_allclose(parts[0], x[:, :48] @ w[:48], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, rows, k, n, splits", [
    (jnp.float32, 5, 96, 64, 2),      # rows padded to 16; K slices of 48: steps of 16
    (jnp.float32, 70, 256, 32, 1),    # two row blocks of 64, the second padded
    (jnp.bfloat16, 16, 512, 96, 4),   # three column tiles, slices of 128: one step
])
def test_partials_kernel_equals_the_batched_matmul(dtype, rows, k, n, splits):
    """Each slice's product, not only the sum: the join and the attention kernel sum them."""
    x = jax.random.normal(jax.random.key(0), (rows, k), dtype)
    w = (jax.random.normal(jax.random.key(1), (k, n)) / 8).astype(dtype)
    got = residual.matmul_partials(x, w, splits, interpret=INTERPRET)
    assert got.shape == (splits, rows, n) and got.dtype == jnp.float32
    xs = np.asarray(x, np.float32).reshape(rows, splits, k // splits)
    ws = np.asarray(w, np.float32).reshape(splits, k // splits, n)
    want = np.einsum("bsk,skn->sbn", xs, ws)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_split_matmul_uses_the_kernel_where_it_is_available(monkeypatch):
    """In the interpreter, `split_matmul` of `w [K, N]` goes through the kernel at any row
    count (counted while tracing) and gives the batched matmul's partials; transposed weights,
    widths the tiles do not divide and mixed dtypes keep the XLA path. Compiled, the kernel
    takes 16-64 rows a device (`PARTIALS_ROWS`): at 3 rows nothing is counted."""
    calls = []
    kernel = residual.matmul_partials
    monkeypatch.setattr(residual, "matmul_partials",
                        lambda *a, **kw: calls.append(a[1].shape) or kernel(*a, **kw))
    x = jax.random.normal(jax.random.key(0), (3, 64))
    w = jax.random.normal(jax.random.key(1), (64, 32))
    want = residual.split_matmul(x, w, 2, interpret=False)     # 3 rows: XLA's, even on GPUs
    assert calls == []
    np.testing.assert_allclose(residual.split_matmul(x, w, 2, interpret=True), want, rtol=1e-5,
                               atol=1e-5)
    assert calls == [(64, 32)]
    residual.split_matmul(x, w.T, 2, transposed=True, interpret=True)
    residual.split_matmul(x, jnp.zeros((64, 40)), 2, interpret=True)   # 40 columns: no tile of 32
    residual.split_matmul(x.astype(jnp.bfloat16), w, 2, interpret=True)     # two dtypes
    assert calls == [(64, 32)]
    assert residual.partials_kernel_available(3, 32, 32, interpret=True)
    assert [residual.partials_kernel_available(r, 576, 1536, interpret=False)
            for r in (1, 16, 64, 128)] == [False, True, True, False]


def test_o_splits_follow_the_path_that_takes_them():
    """The o projection hands over 2 slices where the partials kernel takes them (faster
    there) and 4 where XLA's batched matmul does (2 were slower there: `O_SPLITS`)."""
    assert residual.o_splits(64, 1024, 1152, interpret=True) == residual.O_SPLITS_KERNEL == 2
    assert residual.o_splits(64, 1024, 1000, interpret=True) == residual.O_SPLITS == 4  # no tile of 32
    assert residual.o_splits(8, 1024, 1152, interpret=True) == 2      # interpreted: any rows
    assert [residual.o_splits(r, 1024, 1152, interpret=False) for r in (1, 16, 64, 128)] == [
        4, 2, 2, 4]


def test_largest_tile():
    assert [residual.largest_tile(n, 128) for n in (1152, 6912, 864, 96, 640, 8)] == [
        128, 128, 32, 32, 128, 0]
    assert residual.largest_tile(1152, 64) == 64 and residual.largest_tile(24, 128) == 0
    assert residual.largest_tile(0, 128) == 0


def test_inputs_that_do_not_fit_are_errors():
    with pytest.raises(ValueError, match="do not fit"):
        residual.split_matmul(jnp.zeros((2, 8)), jnp.zeros((6, 4)), 2, interpret=True)
    with pytest.raises(ValueError, match="do not fit"):
        residual.split_matmul(jnp.zeros((2, 8)), jnp.zeros((8, 4)), 2, transposed=True,
                              interpret=True)
    for x, w, splits in ((jnp.zeros((2, 64)), jnp.zeros((64, 40)), 2),    # N not of 32
                         (jnp.zeros((2, 64)), jnp.zeros((64, 32)), 8),    # slices of 8
                         (jnp.zeros((2, 64)), jnp.zeros((64, 32)), 3),    # 3 does not divide
                         (jnp.zeros((2, 64)), jnp.zeros((64, 32), jnp.bfloat16), 2)):
        with pytest.raises(ValueError, match="do not fit"):
            residual.matmul_partials(x, w, splits, interpret=True)
    scale = jnp.zeros(32)
    with pytest.raises(ValueError, match="do not fit"):
        residual.residual_norms(jnp.zeros((2, 3, 32)), jnp.zeros((4, 32)), scale, scale,
                                eps=1e-6, interpret=True)
    with pytest.raises(ValueError, match="do not fit"):
        residual.residual_norms(jnp.zeros((2, 4, 32)), jnp.zeros((4, 32)), jnp.zeros(16),
                                scale, eps=1e-6, interpret=True)


@pytest.mark.parametrize("name", ["gemma3", "gemma2", "wide"])
def test_model_decode_step_with_the_kernels_equals_the_xla_step(name, monkeypatch):
    """The wing's decode step (`decode_step.hidden`: attention kernel + joins, interpreted on a
    CPU, from `DecodeWeights`) against the model's XLA step `Gemma.hidden` on one token per row
    after a prefill (padding row included), float32, hidden states and the written cache; the
    q/k/v and o projections' partials through their kernel too. "wide" has a width that is not
    a power of two, as the real models do (1,152 in the 1B), so the joins mask lanes."""
    cfg = CONFIGS[name] if name in CONFIGS else ModelConfig.tiny(d_model=96)
    model = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    # Random norm weights in every join: the initial 0 (Gemma scales by 1 + w) hides a dropped one.
    for j, layer in enumerate(model.layers):
        for i, norm in enumerate((layer.pre_attn_norm, layer.post_attn_norm,
                                  layer.pre_ffw_norm, layer.post_ffw_norm)):
            norm.scale.set_value(jax.random.normal(jax.random.key(10 * j + i),
                                                   norm.scale.shape) * 0.5)
    model.final_norm.scale.set_value(jnp.full(cfg.d_model, 0.3))
    rows, prompt = 4, 11
    tokens = jax.random.randint(jax.random.key(3), (rows, prompt), 0, cfg.vocab_size)
    positions = jnp.broadcast_to(jnp.arange(prompt, dtype=jnp.int32), (rows, prompt))
    positions = positions.at[2].set(-1)                                  # a padding row
    _, cache = model.hidden(tokens, positions, init_cache(cfg, rows, 32, jnp.float32))
    step = jnp.array([5, 7, 1, 9], jnp.int32)
    step_pos = jnp.where(positions[:, -1] >= 0, prompt, -1)

    partials = []
    kernel = residual.matmul_partials
    monkeypatch.setattr(residual, "matmul_partials",
                        lambda *a, **kw: partials.append(a[1].shape) or kernel(*a, **kw))
    want, want_cache = model.hidden(step[:, None], step_pos[:, None], cache)   # [N, 1, D]
    weights = DecodeWeights.build(model)
    got, got_cache = decode_step.hidden(model, weights, step, step_pos, cache,
                                        interpret=INTERPRET)                  # [N, D]
    assert len(partials) == 2 * cfg.num_layers       # q/k/v and o; down (transposed): XLA's
    assert got.shape == (rows, cfg.d_model)
    live = np.asarray(step_pos >= 0)
    np.testing.assert_allclose(np.asarray(got)[live], np.asarray(want[:, 0])[live], rtol=2e-5,
                               atol=2e-5)
    for g, w in zip(jax.tree.leaves(got_cache), jax.tree.leaves(want_cache)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["gemma3", "mqa"])
def test_decode_weights_hold_the_models_weights_and_leave_it(name):
    """`DecodeWeights`: q/k/v one matrix, gate/up one, down transposed, o reshaped; the same
    numbers, and the model keeps its own layout."""
    cfg = CONFIGS[name]
    model = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    w = DecodeWeights.build(model).layers[1]
    ref = model.layers[1]
    d, h, k, hd, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.ffn_dim
    assert w.qkv.shape == (d, (h + 2 * k) * hd) and w.gate_up.shape == (d, 2 * f)
    assert w.o.shape == (h * hd, d) and w.down_t.shape == (d, f)
    np.testing.assert_array_equal(w.qkv[:, h * hd:(h + k) * hd], ref.attn.k_proj[...].reshape(d, -1))
    np.testing.assert_array_equal(w.qkv[:, (h + k) * hd:], ref.attn.v_proj[...].reshape(d, -1))
    np.testing.assert_array_equal(w.gate_up[:, f:], ref.mlp.up_proj[...])
    np.testing.assert_array_equal(w.down_t, ref.mlp.down_proj[...].T)
    assert len(DecodeWeights.build(model).layers) == cfg.num_layers
    assert hasattr(ref.attn, "q_proj") and hasattr(ref.mlp, "down_proj")
