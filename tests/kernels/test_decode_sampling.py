"""The GPU token-draw kernel (`aha_utils.kernels.decode_sampling`), run in Pallas's interpreter on the
CPU: greedy tokens and log-probs against the XLA path, draws against `softmax(logits / T)`, the
same samples as XLA's greedy inside the sampler, and clear errors for shapes it cannot take."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils.kernels import decode_sampling as ds
from aha_utils.config import ModelConfig
from aha_utils.layers import capped_logits
from aha_utils.sampler import SampleConfig, left_pad, sample_tokens
from aha_utils.sampling import token_logprobs

INTERPRET = jax.default_backend() != "gpu"     # compiled on a GPU, interpreted elsewhere


def hidden_and_embedding(rows, vocab, width, dtype=jnp.float32, seed=0, scale=1.0):
    kh, ke = jax.random.split(jax.random.key(seed))
    h = jax.random.normal(kh, (rows, width), jnp.float32) * scale
    emb = jax.random.normal(ke, (vocab, width), jnp.float32) / np.sqrt(width)
    return h.astype(dtype), emb.astype(dtype)


@pytest.mark.parametrize("rows, vocab, width, softcap", [
    (5, 512, 64, None),      # rows padded to a program of 16, 4 tiles of 128 tokens
    (40, 384, 96, 3.0),      # 64 rows a program, 3 tiles; width in blocks of 32; a soft-cap
    (70, 256, 64, None),     # two programs of rows a tile
])
def test_greedy_is_the_argmax_with_log_softmax_logprobs(rows, vocab, width, softcap):
    h, emb = hidden_and_embedding(rows, vocab, width, scale=3.0)
    tokens, logprobs = ds.draw(h, emb, jax.random.key(1), 1.0, greedy=True, softcap=softcap,
                               interpret=INTERPRET)
    logits = capped_logits(h, emb, softcap)
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))
    np.testing.assert_allclose(logprobs, token_logprobs(logits, tokens), atol=1e-5, rtol=1e-5)


def test_greedy_ties_go_to_the_first_token_as_argmax():
    """Equal logits in two tiles, and twice inside one: `jnp.argmax` takes the first."""
    h = jnp.ones((2, 16), jnp.float32)
    emb = jnp.zeros((256, 16), jnp.float32).at[jnp.array([40, 200, 201])].set(1.0)
    tokens, _ = ds.draw(h, emb, jax.random.key(0), 1.0, greedy=True, softcap=None,
                        interpret=INTERPRET, block=128)
    np.testing.assert_array_equal(tokens, [40, 40])


@pytest.mark.parametrize("t", [0.6, 1.0])    # 1.0: the logsumexp from the draw's own sums
def test_tile_statistics_are_the_logits_reductions(t):
    """Per row and tile of 128 (soft-capped logits, T = t): the logsumexp at T = 1; the token
    drawn by inverse CDF with the hash's uniform `u` (the first whose running mass at T passes
    `u` of the tile's), its logit, and the key `log mass + Gumbel`, against the same from
    XLA's logits."""
    h, emb = hidden_and_embedding(20, 512, 64, scale=3.0, seed=4)
    words = jnp.array([9, 4], jnp.uint32)
    stats = ds._tiles(words, jnp.array([t], jnp.float32), jnp.arange(20, dtype=jnp.int32), h,
                      emb, greedy=False, softcap=5.0, interpret=INTERPRET, block=128, k_block=64,
                      num_warps=4, num_stages=1)
    lse, key, cand, cand_logit = (np.asarray(x)[:20].T for x in stats)  # rows padded to 32
    z = np.asarray(capped_logits(h, emb, 5.0), np.float64).reshape(20, 4, 128)  # [R, tile, C]
    seed = ds.key_seed(words)
    noise = lambda k: np.asarray(ds.hash_uniform(seed, jnp.arange(20),
                                                 jnp.broadcast_to(2 * jnp.arange(4) + k, (20, 4))))
    u, g = noise(0), -np.log(-np.log(noise(1)))                                 # [R, tile]
    cdf = np.cumsum(np.exp((z - z.max(-1, keepdims=True)) / t), -1)            # [R, tile, C]
    drawn = (cdf <= u[..., None] * cdf[..., -1:]).sum(-1)                       # [R, tile]
    np.testing.assert_allclose(lse.T, np.log(np.exp(z).sum(-1)), rtol=1e-5)
    np.testing.assert_allclose(key.T, np.log(np.exp(z / t).sum(-1)) + g, rtol=1e-5)
    np.testing.assert_array_equal(cand.T, drawn + np.arange(4) * 128)
    np.testing.assert_allclose(cand_logit.T, np.take_along_axis(z, drawn[..., None], -1)[..., 0],
                               rtol=1e-6)


@pytest.mark.parametrize("temperature, block", [(1.0, 128), (0.6, 128), (0.6, 16)])
def test_draws_follow_the_tempered_softmax(temperature, block):
    """4096 rows with the same logits (a vocabulary of 512 in tiles of `block`): the drawn
    tokens' frequencies against `softmax(logits / T)`, by a chi-square test over the tokens
    expected at least 10 times; the log-prob returned is at temperature 1 whatever T."""
    rows, vocab = 4096, 512
    h1, emb = hidden_and_embedding(1, vocab, 32, scale=2.0, seed=3)
    h = jnp.broadcast_to(h1, (rows, 32))
    tokens, logprobs = ds.draw(h, emb, jax.random.key(7), temperature, greedy=False,
                               softcap=None, interpret=INTERPRET, block=block)
    logits = capped_logits(h1, emb, None)[0]
    p = np.asarray(jax.nn.softmax(logits / temperature), np.float64)
    counts = np.bincount(np.asarray(tokens), minlength=vocab)
    common = p * rows >= 10
    assert common.sum() >= 10 and p[common].sum() > 0.8       # a test with some power
    expected = np.append(p[common] * rows, p[~common].sum() * rows)
    observed = np.append(counts[common], counts[~common].sum())
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = len(expected) - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)   # ~4 sigma of chi-square(dof)
    np.testing.assert_allclose(logprobs, jax.nn.log_softmax(logits)[tokens], atol=1e-5)


def test_the_noise_is_uniform_and_differs_by_row_counter_and_seed():
    """The kernel's noise: inside (0, 1), mean 1/2, variance 1/12, flat over ten bins, and
    nothing shared between neighbouring rows, counters or seeds."""
    rows, counters = jnp.arange(64), jnp.broadcast_to(jnp.arange(1024), (64, 1024))
    u = np.asarray(ds.hash_uniform(jnp.uint32(12345), rows, counters))
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
    assert np.abs(np.histogram(u, bins=10, range=(0, 1))[0] / u.size - 0.1).max() < 0.004
    other_seed = np.asarray(ds.hash_uniform(jnp.uint32(12346), rows, counters))
    for a, b in ((u, other_seed), (u[1:], u[:-1]), (u[:, 1:], u[:, :-1])):
        assert (a != b).mean() > 0.999 and abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    np.testing.assert_array_equal(ds.hash_uniform(jnp.uint32(12345), rows, counters[:, 7]),
                                  u[:, 7])                       # [R] counters: the same noise


def test_the_sampler_with_the_kernel_decodes_what_xla_decodes():
    """The tiny model (a vocabulary of 512: the interpreter runs tiles one by one) decoding
    left-padded prompts, 2 samples each: greedy tokens identical with the GPU wing
    (`kernels=True`, interpreted) and without, log-probs equal to float32 rounding; sampling
    draws other tokens, and a prompt's two samples differ."""
    from tests.test_sampler import tiny_model

    model = tiny_model(cfg=ModelConfig.tiny())
    prompts = [[2, 150, 270, 31], list(range(100, 111)), list(range(200, 400, 10))]
    tokens, positions = left_pad(prompts, 32, 4)
    outs = {}
    for use in (False, True):
        for greedy in (True,) if not use else (True, False):
            config = SampleConfig(max_new_tokens=12, greedy=greedy, num_samples=2, kernels=use)
            outs[use, greedy] = jax.device_get(sample_tokens(
                model, tokens, positions, jax.random.key(0), config, temperature=0.8))
    xla, kernel = outs[False, True], outs[True, True]
    np.testing.assert_array_equal(kernel.tokens, xla.tokens)
    np.testing.assert_allclose(kernel.logprobs, xla.logprobs, atol=1e-5)
    sampled = outs[True, False]
    assert (sampled.tokens != kernel.tokens).any()
    assert np.isfinite(sampled.logprobs).all() and (sampled.logprobs <= 0).all()
    assert (sampled.tokens[0::2] != sampled.tokens[1::2]).any()   # a prompt's two samples differ


def test_the_wing_takes_the_kernel_up_to_64_rows_a_device():
    assert ds.fits(1152, 262_144, 64) and not ds.fits(1152, 262_144, 128)
    assert not ds.fits(1152, 500, 8)                     # no tile of 16 tokens divides 500


def test_shapes_it_cannot_take_are_errors():
    h, emb = hidden_and_embedding(4, 512, 64)
    with pytest.raises(ValueError, match="do not fit"):
        ds.draw(h, emb[:, :32], jax.random.key(0), 1.0, greedy=True, softcap=None,
                interpret=INTERPRET)
    with pytest.raises(ValueError, match="power-of-two"):
        ds.draw(h, jnp.zeros((500, 64)), jax.random.key(0), 1.0, greedy=True, softcap=None,
                interpret=INTERPRET)
