"""The GPU decode-attention kernel (`aha_utils.kernels.decode_attention`), run in Pallas's interpreter on
the CPU: the model's XLA decode step (norm, rotate, write the cache, attend) as the reference,
blocks past a row's filled slots never read, the same greedy samples inside the model, and clear
errors for shapes it cannot take."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

from aha_utils import kernels
from aha_utils.config import ModelConfig
from aha_utils.kernels import decode_attention as fused
from aha_utils.kernels import decode_step
from aha_utils.kernels.decode_residual import split_matmul
from aha_utils.kernels.decode_weights import qkv_weights
from aha_utils.kv_cache import LayerCache, cache_slots
from aha_utils.model import Attention, Gemma
from aha_utils.sampler import SampleConfig, left_pad, sample_tokens
from tests.test_model import CONFIGS

INTERPRET = jax.default_backend() != "gpu"     # compiled on a GPU, interpreted elsewhere


def kernel_step(attn, x, positions, cache, **kw):
    """The wing's attention step (`decode_step.attention`) for `x [B, 1, D]` at `positions
    [B, 1]`, from the model's own q/k/v projection (one partial, rounded as XLA rounds it)."""
    qkv = jnp.concatenate(attn._project(x), axis=2)[None, :, 0]         # [1, B, H + 2K, hd]
    return decode_step.attention(attn, qkv, positions[:, 0], cache, interpret=INTERPRET, **kw)


def ring_cache(q_pos, slots, n_kv, hd, dtype, seed=0):
    """The cache of rows that have decoded up to `q_pos` (slot = pos % slots), random k and v."""
    rng = np.random.default_rng(seed)
    k_pos = np.full((len(q_pos), slots), -1, np.int32)
    for r, last in enumerate(q_pos):
        for p in range(max(0, last - slots + 1), last + 1):
            k_pos[r, p % slots] = p
    k, v = (jnp.asarray(rng.standard_normal((len(q_pos), slots, n_kv, hd)), dtype)
            for _ in range(2))
    return LayerCache(k, v, jnp.asarray(k_pos))


def layer_and_inputs(name, layer, dtype, q_pos, seed=0, max_len=64):
    """Layer `layer` of a tiny model (random qk-norm weights), a cache `max_len` positions long
    holding every position before `q_pos` (ring buffers wrapped), and this step's input
    `[B, 1, D]`."""
    cfg = CONFIGS[name]
    attn = Gemma(cfg, dtype=dtype, rngs=nnx.Rngs(seed)).layers[layer].attn
    if attn.use_qk_norm:     # the initial scales (0: Gemma multiplies by 1 + w) hide no bug
        for i, norm in enumerate((attn.q_norm, attn.k_norm)):
            norm.scale.set_value(jax.random.normal(jax.random.key(seed + 5 + i),
                                                   norm.scale.shape, dtype) * 0.5)
    cache = ring_cache(q_pos - 1, cache_slots(cfg, attn.kind, max_len), cfg.num_kv_heads,
                       cfg.head_dim, dtype, seed)
    x = jax.random.normal(jax.random.key(seed + 1), (len(q_pos), 1, cfg.d_model), dtype)
    return attn, x, jnp.asarray(q_pos)[:, None], cache


# Rows: the first token, mid-way, the last slot of a 64-slot cache, wrapped twice, a padding
# row, wrapped once.
Q_POS = np.array([0, 30, 63, 140, -1, 90], np.int32)


@pytest.mark.parametrize("name, layer, block, programs, max_len", [
    ("gemma3", 1, 16, 36, 64),    # global layer (64 slots, 4 blocks) in 3 slices: uneven shares
    ("gemma3", 0, 16, 6, 64),     # sliding window 8 (16 slots, a ring), one slice
    ("gemma2", 1, 16, 12, 64),    # soft-capped scores, no qk-norm
    ("mqa", 0, 16, 24, 64),       # one kv head, 4 query heads
    ("mqa", 2, 64, 132, 64),      # a global layer read in one block of 64
    ("mqa", 2, 16, 30, 80),       # 80 slots, 5 blocks in 5 slices: some empty early on
])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernel_step_equals_the_xla_step(name, layer, block, programs, max_len, dtype):
    """The kernel's output and the cache it writes in place against the model's XLA decode
    step, on rows that start, fill, wrap the ring buffer and pad."""
    attn, x, positions, cache = layer_and_inputs(name, layer, jnp.dtype(dtype), Q_POS,
                                                 max_len=max_len)
    want = attn._decode(x, positions, cache)                  # the XLA path
    assert_same_step(kernel_step(attn, x, positions, cache, block=block, programs=programs),
                     want, dtype)


@pytest.mark.parametrize("name, layer", [("gemma3", 1), ("mqa", 0)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernel_sums_the_projections_split_k_partials(name, layer, dtype):
    """With the wing's weights (`decode_weights`: q/k/v one matrix) the kernel takes the q/k/v
    projection as `QKV_SPLITS` float32 partials, sums and rounds them: the same step as XLA's."""
    attn, x, positions, cache = layer_and_inputs(name, layer, jnp.dtype(dtype), Q_POS)
    assert fused.QKV_SPLITS > 1 and x.shape[-1] % fused.QKV_SPLITS == 0
    want = attn._decode(x, positions, cache)
    qkv = split_matmul(x[:, 0], qkv_weights(attn), fused.QKV_SPLITS, interpret=INTERPRET)
    assert qkv.shape[0] == fused.QKV_SPLITS and qkv.dtype == jnp.float32
    got = decode_step.attention(attn, qkv, positions[:, 0], cache, interpret=INTERPRET, block=16,
                                programs=24)
    assert_same_step(got, want, dtype, v_exact=False)   # partials summed in another order


def test_slices_per_row_fill_the_target_programs_at_most_one_a_block():
    """As many slices of a row's filled blocks as `target` programs hold, at least one, at most
    one per block."""
    assert fused._splits(1, 640, 32, 132) == 20       # one row: every block its own program
    assert fused._splits(16, 640, 32, 132) == 8       # 128 programs
    assert fused._splits(64, 640, 32, 132) == 2       # 128 programs, not 192 (over 132)
    assert fused._splits(256, 512, 32, 132) == 1      # enough rows already
    assert fused._splits(30, 80, 16, 90) == 3         # 5 blocks in 3 shares: 1, 2, 2 when full


def assert_same_step(step, want_step, dtype, v_exact=True, rows=None):
    (got, got_cache), (want, want_cache) = step, want_step
    real = Q_POS >= 0 if rows is None else rows
    tol = dict(atol=2e-5, rtol=2e-5) if dtype == "float32" else dict(atol=0.03, rtol=0.03)
    np.testing.assert_allclose(np.asarray(got, np.float32)[real],
                               np.asarray(want, np.float32)[real], **tol)
    assert (np.asarray(got, np.float32)[~real] == 0).all()      # a padding row reads nothing
    np.testing.assert_array_equal(got_cache.pos, want_cache.pos)
    (np.testing.assert_array_equal if v_exact else
     functools.partial(np.testing.assert_allclose, **tol))(np.asarray(got_cache.v, np.float32),
                                                           np.asarray(want_cache.v, np.float32))
    np.testing.assert_allclose(np.asarray(got_cache.k, np.float32),
                               np.asarray(want_cache.k, np.float32), **tol)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the compiled kernel: GPU only")
@pytest.mark.parametrize("programs", [64, 132, 200])    # 1, 2 and 3 slices a row
def test_compiled_kernel_on_gemma3_1b_equals_the_xla_step(programs):
    """Compiled by Triton at Gemma 3 1B's shapes (64 rows, a global layer): with one slice a
    row the kernel normalises its output itself, with more the slices are merged after it.
    Two steps in a row, against XLA's."""
    cfg = ModelConfig.gemma3_1b()
    attn = Attention(cfg, "global", jnp.bfloat16, nnx.Rngs(0))
    q_pos = np.random.default_rng(1).integers(0, 600, 64).astype(np.int32)
    q_pos[[3, 40]] = -1                                                   # padding rows
    cache = want_cache = ring_cache(q_pos - 1, 640, cfg.num_kv_heads, cfg.head_dim,
                                    jnp.bfloat16)
    for step in range(2):
        x = jax.random.normal(jax.random.key(step), (64, 1, cfg.d_model), jnp.bfloat16)
        positions = jnp.asarray(np.where(q_pos >= 0, q_pos + step, -1))[:, None]
        got, cache = kernel_step(attn, x, positions, cache, programs=programs)
        want, want_cache = attn._decode(x, positions, want_cache)
        assert_same_step((got, cache), (want, want_cache), "bfloat16", rows=q_pos >= 0)


def test_blocks_past_the_filled_slots_are_never_read():
    """NaN in every block after a row's last filled one: the XLA path would return NaN
    (0 x NaN in probabilities x values); the kernel does not load those blocks."""
    q_pos = np.array([5, 20, 47, 3], np.int32)
    attn, x, positions, cache = layer_and_inputs("mqa", 2, jnp.float32, q_pos, seed=2)
    k, v = np.array(cache.k), np.array(cache.v)
    for r, last in enumerate(q_pos):
        first_unread = -(-(last + 1) // 16) * 16
        k[r, first_unread:] = v[r, first_unread:] = np.nan
    got, _ = kernel_step(attn, x, positions, cache._replace(k=jnp.asarray(k), v=jnp.asarray(v)),
                         block=16, programs=16)
    assert np.isfinite(np.asarray(got)).all()
    want, _ = attn._decode(x, positions, cache._replace(k=jnp.asarray(np.nan_to_num(k)),
                                                        v=jnp.asarray(np.nan_to_num(v))))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=2e-5)


# A vocabulary of 512 (the interpreter runs the draw's tiles one by one); ids below it.
SMALL_PROMPTS = [[2, 150, 270, 31], list(range(100, 111)), list(range(200, 400, 10))]


def test_sampler_with_the_kernels_samples_what_xla_samples():
    """The tiny model (window 8) decoding left-padded prompts past its window: greedy tokens
    identical with the GPU wing (`kernels=True`: attention, joins and draw, interpreted) and
    without, log-probs equal to float32 rounding."""
    from tests.test_sampler import tiny_model

    model = tiny_model(cfg=ModelConfig.tiny())
    tokens, positions = left_pad(SMALL_PROMPTS, 32, 4)
    outs = [jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0),
                                         SampleConfig(max_new_tokens=12, kernels=use)))
            for use in (False, True)]
    xla, kernel = outs
    np.testing.assert_array_equal(kernel.tokens, xla.tokens)
    np.testing.assert_allclose(kernel.logprobs, xla.logprobs, atol=1e-4)
    assert len(set(xla.tokens[0].tolist())) > 3


def test_shapes_it_cannot_take_are_errors():
    args = dict(heads=4, window=None, softcap=None, q_scale=0.25, interpret=True)
    qkv, q_pos, sin = jnp.zeros((1, 2, 6, 16)), jnp.zeros(2, jnp.int32), jnp.zeros((2, 8))
    k = jnp.zeros((2, 40, 1, 16))
    with pytest.raises(ValueError, match="multiple of 16"):
        fused.decode_attention(qkv, q_pos, k, k, jnp.zeros((2, 40), jnp.int32), sin, sin,
                               None, None, eps=None, **args)
    k = jnp.zeros((2, 48, 2, 16))                  # 2 kv heads: qkv would have 4 + 4 lines
    with pytest.raises(ValueError, match="do not fit"):
        fused.decode_attention(qkv, q_pos, k, k, jnp.zeros((2, 48), jnp.int32), sin, sin,
                               None, None, eps=None, **args)
    k = jnp.zeros((2, 48, 1, 16))
    with pytest.raises(ValueError, match="one cache"):
        fused.decode_attention(qkv, q_pos, k.astype(jnp.bfloat16), k, jnp.zeros((2, 48), jnp.int32),
                               sin, sin, None, None, eps=None, **args)
    with pytest.raises(ValueError, match=r"not \[n, B"):    # the partials' axis left out
        fused.decode_attention(qkv[0], q_pos, k, k, jnp.zeros((2, 48), jnp.int32), sin, sin,
                               None, None, eps=None, **args)
    with pytest.raises(ValueError, match="together"):
        fused.decode_attention(qkv, q_pos, k, k, jnp.zeros((2, 48), jnp.int32), sin, sin,
                               jnp.zeros(16), jnp.zeros(16), eps=None, **args)


def test_a_cache_in_another_dtype_than_the_model_is_an_error():
    attn, x, positions, cache = layer_and_inputs("gemma3", 1, jnp.bfloat16, Q_POS)
    f32 = cache._replace(k=cache.k.astype(jnp.float32), v=cache.v.astype(jnp.float32))
    with pytest.raises(ValueError, match="init_cache"):
        kernel_step(attn, x, positions, f32)


def test_the_wing_says_where_it_cannot_run(monkeypatch):
    """`kernels.unsupported`: one device or a data-parallel mesh is fine; heads split over a
    `model` axis, a multi-device process with no mesh, a TPU, and (compiled) heads under 32 are
    not, each with a sentence that says what to do."""
    from jax.sharding import AbstractMesh

    cfg = ModelConfig.gemma3_1b()
    assert kernels.unsupported(cfg, None) is None
    data = AbstractMesh((8, 1), ("data", "model"))
    assert kernels.unsupported(cfg, data) is None
    assert "kernels=False" in kernels.unsupported(cfg, AbstractMesh((4, 2), ("data", "model")))
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    assert "shard_model" in kernels.unsupported(cfg, None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert kernels.unsupported(cfg, data) is None
    assert "too small" in kernels.unsupported(ModelConfig.tiny(head_dim=16), data)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert "GPUs" in kernels.unsupported(cfg, data)


def test_the_sampler_option_is_checked_and_resolved_eagerly():
    """`SampleConfig.kernels`: True, False or "auto"; "auto" off a GPU is the XLA path."""
    from aha_utils import sampler
    from tests.test_sampler import tiny_model

    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="kernels must be"):
            SampleConfig(max_new_tokens=4, kernels=bad)
    model = tiny_model(cfg=ModelConfig.tiny())
    auto = sampler._resolve_kernels(SampleConfig(max_new_tokens=4), model, None)
    assert auto.kernels is (jax.default_backend() == "gpu")
    forced = sampler._resolve_kernels(SampleConfig(max_new_tokens=4, kernels=True), model, None)
    assert forced.kernels is True


def test_a_data_parallel_mesh_runs_the_kernel_on_each_devices_rows():
    """8 fake CPU devices: with every device on `data`, the sampler's decode steps through the
    wing (`kernels=True`) call the attention kernel inside a `shard_map` (each device's 1/8 of
    the rows), and the greedy tokens and log-probs equal the XLA path's on one device; so do
    the projections' partials (`decode_residual.matmul_partials`). With 2-way model
    parallelism (heads split) `kernels=True` is an error that says so, and "auto" runs XLA."""
    from tests.conftest import run_with_fake_devices
    from tests.test_sampler import tiny_model

    tokens, positions = left_pad(SMALL_PROMPTS * 3, 32, 16)       # 9 prompts, 7 padding rows
    one = jax.device_get(sample_tokens(tiny_model(cfg=ModelConfig.tiny()), tokens, positions,
                                       jax.random.key(0), SampleConfig(max_new_tokens=12,
                                                                       kernels=False)))
    out = run_with_fake_devices("""
        import json, jax
        import numpy as np
        from aha_utils.config import ModelConfig
        from aha_utils.kernels import decode_attention as fused
        from aha_utils.kernels import decode_residual as residual
        from aha_utils.sampler import SampleConfig, left_pad, sample_tokens
        from aha_utils.sharding import make_mesh, shard_model
        from tests.kernels.test_decode_attention import SMALL_PROMPTS
        from tests.test_sampler import tiny_model

        local_rows, partial_rows = [], []
        attend = fused._attend
        def counting(q, *args, **kw):         # called while tracing: one call per layer
            local_rows.append(q.shape[1])
            return attend(q, *args, **kw)
        fused._attend = counting
        partials = residual._partials_kernel
        def counting_partials(x_ref, *args, **kw):   # once per program (interpreted)
            partial_rows.append(x_ref.shape[0])
            return partials(x_ref, *args, **kw)
        residual._partials_kernel = counting_partials
        res = {}
        for mp, kernels in ((1, True), (2, True), (2, "auto")):
            local_rows.clear()
            partial_rows.clear()
            model = shard_model(tiny_model(cfg=ModelConfig.tiny()), make_mesh(model_parallel=mp))
            tokens, positions = left_pad(SMALL_PROMPTS * 3, 32, 16)
            try:
                s = jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0),
                                                 SampleConfig(max_new_tokens=12, kernels=kernels)))
            except ValueError as e:
                res[f"{mp}/{kernels}"] = dict(error=str(e))
                continue
            res[f"{mp}/{kernels}"] = dict(tokens=s.tokens.tolist(), logprobs=s.logprobs.tolist(),
                                          local_rows=sorted(set(local_rows)), calls=len(local_rows),
                                          partial_rows=sorted(set(partial_rows)))
        print("RESULT" + json.dumps(res))
    """)
    res = json.loads(out.split("RESULT", 1)[1])
    data_parallel, model_parallel = res["1/True"], res["2/auto"]
    assert data_parallel["calls"] > 0 and data_parallel["local_rows"] == [16 // 8]
    assert data_parallel["partial_rows"] == [16]      # each device's 2 rows, padded to 16
    assert model_parallel["calls"] == 0 and model_parallel["partial_rows"] == []
    assert "kernels=True, but the model is split over mesh axes" in res["2/True"]["error"]
    for r in (data_parallel, model_parallel):
        np.testing.assert_array_equal(r["tokens"], one.tokens)
        np.testing.assert_allclose(r["logprobs"], one.logprobs, atol=1e-4)
