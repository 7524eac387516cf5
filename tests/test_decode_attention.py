"""The GPU decode-attention kernel (`aha_utils.decode_attention`), run in Pallas's interpreter on
the CPU: the model's XLA attention as the reference, blocks past a row's filled slots never
read, the same greedy samples inside the model, and clear errors for shapes it cannot take."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils import decode_attention as fused
from aha_utils.model import NEG_INF
from aha_utils.sampler import SampleConfig, left_pad, sample_tokens


def reference(q, k, v, k_pos, q_pos, window, softcap):
    """`model.Attention._decode`'s XLA path, in float32."""
    s = jnp.einsum("bkgh,bskh->bkgs", q, k, preferred_element_type=jnp.float32)
    if softcap is not None:
        s = jnp.tanh(s / softcap) * softcap
    ok = (k_pos >= 0) & (k_pos <= q_pos[:, None])
    if window is not None:
        ok &= q_pos[:, None] - k_pos < window
    p = jax.nn.softmax(jnp.where(ok[:, None, None], s, NEG_INF), axis=-1)
    return jnp.einsum("bkgs,bskh->bkgh", p, v.astype(jnp.float32))


def ring_cache(q_pos, slots, n_kv, hd, seed=0):
    """k, v and slot positions of rows that have decoded up to `q_pos` (slot = pos % slots)."""
    rng = np.random.default_rng(seed)
    k_pos = np.full((len(q_pos), slots), -1, np.int32)
    for r, last in enumerate(q_pos):
        for p in range(max(0, last - slots + 1), last + 1):
            k_pos[r, p % slots] = p
    k = rng.standard_normal((len(q_pos), slots, n_kv, hd)).astype(np.float32)
    v = rng.standard_normal((len(q_pos), slots, n_kv, hd)).astype(np.float32)
    return k, v, k_pos


# Rows: just started, mid-way, the last slot, wrapped twice, a padding row, wrapped once.
Q_POS = np.array([0, 30, 63, 140, -1, 90], np.int32)


@pytest.mark.parametrize("window, softcap, g, programs", [
    (None, None, 2, 24),      # global layer, 4 slices per (row, kv head)
    (48, None, 2, 6),         # sliding window, one slice
    (None, 50.0, 1, 12),      # Gemma 2's soft-cap, one query head per kv head
    (40, 50.0, 4, 48),
])
def test_kernel_equals_xla_attention(window, softcap, g, programs):
    k, v, k_pos = ring_cache(Q_POS, 64, 2, 16)
    q = jax.random.normal(jax.random.key(1), (len(Q_POS), 2, g, 16))
    got = fused.decode_attention(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(k_pos),
                                 jnp.asarray(Q_POS), window=window, softcap=softcap,
                                 interpret=True, block=16, programs=programs)
    want = reference(q, k, v, k_pos, Q_POS, window, softcap)
    real = Q_POS >= 0
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-6)
    assert (np.asarray(got)[~real] == 0).all()            # a padding row reads nothing


def test_blocks_past_the_filled_slots_are_never_read():
    """NaN in every block after a row's last filled one: the XLA path would return NaN
    (0 x NaN in probabilities x values); the kernel does not load those blocks."""
    q_pos = np.array([5, 20, 47, 3], np.int32)
    k, v, k_pos = ring_cache(q_pos, 64, 1, 16, seed=2)
    for r, last in enumerate(q_pos):
        first_unread = -(-(last + 1) // 16) * 16
        k[r, first_unread:] = v[r, first_unread:] = np.nan
    q = jax.random.normal(jax.random.key(3), (4, 1, 4, 16))
    got = fused.decode_attention(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(k_pos),
                                 jnp.asarray(q_pos), window=None, softcap=None,
                                 interpret=True, block=16, programs=16)
    assert np.isfinite(np.asarray(got)).all()
    want = reference(q, np.nan_to_num(k), np.nan_to_num(v), k_pos, q_pos, None, None)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_sampler_with_the_kernel_samples_what_xla_samples(monkeypatch):
    """The tiny model (window 8) decoding left-padded prompts past its window: greedy tokens
    identical with the kernel (interpreted) and without, log-probs equal to float32 rounding."""
    from tests.test_sampler import PROMPTS, tiny_model

    model = tiny_model()
    tokens, positions = left_pad(PROMPTS, 32, 4)
    config = SampleConfig(max_new_tokens=12)
    outs = []
    for use in (False, True):
        monkeypatch.setattr(fused, "USE_KERNEL", use)
        jax.clear_caches()        # the flag is read while tracing
        outs.append(jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0),
                                                 config)))
    xla, kernel = outs
    np.testing.assert_array_equal(kernel.tokens, xla.tokens)
    np.testing.assert_allclose(kernel.logprobs, xla.logprobs, atol=1e-4)
    assert len(set(xla.tokens[0].tolist())) > 3


def test_shapes_it_cannot_take_are_errors():
    q = jnp.zeros((2, 1, 4, 16))
    k = jnp.zeros((2, 40, 1, 16))
    with pytest.raises(ValueError, match="multiple of 16"):
        fused.decode_attention(q, k, k, jnp.zeros((2, 40), jnp.int32), jnp.zeros(2, jnp.int32),
                               window=None, softcap=None, interpret=True)
    k = jnp.zeros((2, 48, 2, 16))
    with pytest.raises(ValueError, match="do not fit"):
        fused.decode_attention(q, k, k, jnp.zeros((2, 48), jnp.int32), jnp.zeros(2, jnp.int32),
                               window=None, softcap=None, interpret=True)


def test_the_kernel_runs_on_gpus_with_one_device_or_a_data_parallel_mesh():
    assert fused.USE_KERNEL is None
    assert fused.kernel_available() == (jax.default_backend() == "gpu"
                                        and jax.device_count() == 1)


def test_a_data_parallel_mesh_runs_the_kernel_on_each_devices_rows():
    """8 fake CPU devices: with every device on `data`, the sampler's decode steps call the
    kernel inside a `shard_map` (each device's 1/8 of the rows), and the greedy tokens and
    log-probs equal the XLA path's on one device. With 2-way model parallelism (heads split)
    the kernel is not called and the XLA path runs."""
    from tests.conftest import run_with_fake_devices
    from tests.test_sampler import PROMPTS, tiny_model

    tokens, positions = left_pad(PROMPTS * 3, 32, 16)       # 9 prompts, 7 padding rows
    one = jax.device_get(sample_tokens(tiny_model(), tokens, positions, jax.random.key(0),
                                       SampleConfig(max_new_tokens=12)))
    out = run_with_fake_devices("""
        import json, jax
        import numpy as np
        from aha_utils import decode_attention as fused
        from aha_utils.sampler import SampleConfig, left_pad, sample_tokens
        from aha_utils.sharding import make_mesh, shard_model
        from tests.test_sampler import PROMPTS, tiny_model

        fused.USE_KERNEL = True
        local_rows = []
        attend = fused._attend
        def counting(q, *args, **kw):         # called while tracing: one call per layer
            local_rows.append(q.shape[0])
            return attend(q, *args, **kw)
        fused._attend = counting
        res = {}
        for mp in (1, 2):
            local_rows.clear()
            jax.clear_caches()
            model = shard_model(tiny_model(), make_mesh(model_parallel=mp))
            tokens, positions = left_pad(PROMPTS * 3, 32, 16)
            s = jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0),
                                             SampleConfig(max_new_tokens=12)))
            res[mp] = dict(tokens=s.tokens.tolist(), logprobs=s.logprobs.tolist(),
                           local_rows=sorted(set(local_rows)), calls=len(local_rows))
        print("RESULT" + json.dumps(res))
    """)
    res = json.loads(out.split("RESULT", 1)[1])
    data_parallel, model_parallel = res["1"], res["2"]
    assert data_parallel["calls"] > 0 and data_parallel["local_rows"] == [16 // 8]
    assert model_parallel["calls"] == 0
    for r in (data_parallel, model_parallel):
        np.testing.assert_array_equal(r["tokens"], one.tokens)
        np.testing.assert_allclose(r["logprobs"], one.logprobs, atol=1e-4)
