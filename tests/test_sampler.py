"""The sampler's contracts: greedy == a naive loop of full forwards (past the sliding window) and
== HF transformers; log-probs == a teacher-forced full forward; stop tokens and stop strings
(the stop-string table itself: tests/test_stop_strings.py);
top-k / top-p / temperature maths; no recompilation for a similar second call; 8 devices == 1.

Most tests use a tiny random model (window 8, so short prompts already cross it) with the full
262144-token vocabulary, so the real tokenizer (and `generate`) works with it."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.model import Gemma, forward
from aha_utils.sampler import (SampleConfig, batch_bucket, generate, left_pad, prompt_bucket,
                               sample_tokens)
from aha_utils.sampling import select_tokens as _select_tokens
from aha_utils.sampling import (block_size, token_logprobs, top_p_mask, two_level_gumbel_max,
                                two_level_sample)

# one compiled program per variant instead of dozens of op-by-op ones
select_tokens = jax.jit(_select_tokens, static_argnames=("greedy", "top_k"))
from tests.conftest import ROOT, backend_compiles, jaxpr_eqns, run_with_fake_devices

TINY = ModelConfig.tiny(vocab_size=262_144)
GOLDEN = ROOT / "tests" / "golden" / "hf_gemma3_270m.npz"


def tiny_model(seed=0, cfg=TINY):
    model = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(seed))
    # As initialised, the tied embedding dominates the residual stream and the model repeats its
    # input token whatever the context (a cache bug would go unseen). Smaller embeddings and
    # louder attention/MLP branches make every token depend on the context, with log-probs
    # far from 0.
    model.embedding.set_value(model.embedding[...] * 0.3)
    for layer in model.layers:
        for norm in (layer.post_attn_norm, layer.post_ffw_norm):
            norm.scale.set_value(jnp.full_like(norm.scale[...], 8.0))
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def right_padded(seq):
    """`seq` in a [1, T] row padded on the right to a multiple of 32, so that every length
    shares one compiled forward; causal attention makes the padding invisible to `seq`."""
    row = np.zeros((1, -(-len(seq) // 32) * 32), np.int32)
    row[0, :len(seq)] = seq
    return row


def naive_greedy(model, prompt, n):
    """Greedy decoding the slow way: a full forward over the whole sequence for every token,
    no cache."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(jnp.argmax(forward(model, right_padded(seq))[0, len(seq) - 1])))
    return seq[len(prompt):]


def teacher_forced_logprobs(model, prompt, completion):
    """log p(completion[i] | prompt, completion[:i]) from one full forward, float32."""
    seq = np.asarray(list(prompt) + list(completion))
    logp = jax.nn.log_softmax(forward(model, right_padded(seq))[0], axis=-1)   # [T, V]
    rows = np.arange(len(prompt) - 1, len(seq) - 1)
    return np.asarray(logp[rows, seq[len(prompt):]])


PROMPTS = [[2, 1500, 2700, 31], list(range(100, 111)), list(range(2000, 4000, 100))]  # 4, 11, 20
M = 12  # 20 + 12 = 32 positions: four windows of the tiny model


@pytest.fixture(scope="module")
def greedy_out(model):
    tokens, positions = left_pad(PROMPTS, 32, 4)
    return jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0),
                                        SampleConfig(max_new_tokens=M, num_samples=2)))


def test_greedy_equals_naive_loop_without_cache(model, greedy_out):
    """Greedy with num_samples=2: each prompt prefilled once, both copies equal the naive loop."""
    for r, prompt in enumerate(PROMPTS):
        want = naive_greedy(model, prompt, M)
        assert greedy_out.tokens[2 * r].tolist() == want, f"prompt {r}"
        assert greedy_out.tokens[2 * r + 1].tolist() == want, f"prompt {r}, second sample"
    assert greedy_out.lengths.tolist() == [M] * 6 + [0, 0]     # the 4th prompt is batch padding
    assert not greedy_out.stopped.any()
    assert (greedy_out.tokens[6:] == 0).all() and (greedy_out.logprobs[6:] == 0).all()


def test_greedy_logprobs_equal_full_forward(model, greedy_out):
    for r, prompt in enumerate(PROMPTS):
        ref = teacher_forced_logprobs(model, prompt, greedy_out.tokens[2 * r])
        assert ref.max() < -0.5  # the check is not trivially log(1) == 0
        assert len(set(greedy_out.tokens[2 * r].tolist())) > 3  # not one token repeated
        np.testing.assert_allclose(greedy_out.logprobs[2 * r], ref, atol=1e-3)


def test_sampled_logprobs_stops_and_padding(model):
    """Temperature + top-k + top-p with G samples: log-probs are the model's own at T=1; a token
    that ends a stop string ends its row (counted in the length), then only padding follows."""
    tokens, positions = left_pad(PROMPTS[:2], 16, 2)
    cfg = SampleConfig(max_new_tokens=M, num_samples=3, greedy=False, top_k=50, use_top_p=True)
    never = np.zeros((1, TINY.vocab_size), np.int32)
    free = jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(1), cfg,
                                        temperature=0.8, top_p=0.95, stop_table=never))
    assert len({tuple(r) for r in free.tokens}) == 6      # six different continuations
    assert not free.stopped.any() and (free.lengths == M).all()
    # The same draw again, now with one of the sampled tokens ending a (one-state) stop string.
    stop = int(free.tokens[4, 5])
    table = never.copy()
    table[0, stop] = -1
    cut = jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(1), cfg,
                                       temperature=0.8, top_p=0.95, stop_table=table))
    for r in range(6):
        hits = np.flatnonzero(free.tokens[r] == stop)
        n = hits[0] + 1 if len(hits) else M
        assert cut.lengths[r] == n and cut.stopped[r] == bool(len(hits))
        assert (cut.tokens[r, :n] == free.tokens[r, :n]).all()
        assert (cut.tokens[r, n:] == 0).all() and (cut.logprobs[r, n:] == 0).all()
        ref = teacher_forced_logprobs(model, PROMPTS[r // 3], free.tokens[r])
        np.testing.assert_allclose(free.logprobs[r], ref, atol=1e-3)



def _while_body_dots(fn, *args) -> list[int]:
    """Number of `dot_general`s in the body of every `while` in `fn`'s jaxpr."""
    loops = [eqn for eqn in jaxpr_eqns(jax.make_jaxpr(fn)(*args).jaxpr)
             if eqn.primitive.name == "while"]
    return [sum(e.primitive.name == "dot_general" for e in jaxpr_eqns(w.params["body_jaxpr"].jaxpr))
            for w in loops]


def test_decode_copy_merges_lora_casts_once_and_leaves_the_model(model):
    """LoRA adapters are merged and weights cast to `compute_dtype` before the loop: the same
    samples as a model merged and cast beforehand, no adapter matmul left in the decode loop's
    body, and the caller's model keeps its adapters and float32 weights."""
    from aha_utils.lora import apply_lora, has_lora, merge_lora

    adapted = apply_lora(nnx.clone(model), rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    for _, w in nnx.iter_graph(adapted):    # B = 0 would make the adapters a no-op
        if hasattr(w, "target"):
            w.lora_b.set_value(jax.random.normal(jax.random.key(2), w.lora_b[...].shape) * 0.05)
    tokens, positions = left_pad(PROMPTS[:2], 16, 2)
    cfg = SampleConfig(max_new_tokens=M, num_samples=2, greedy=False)

    def run(m, dtype=None):
        c = dataclasses.replace(cfg, compute_dtype=dtype)
        return jax.device_get(sample_tokens(m, tokens, positions, jax.random.key(4), c))

    merged = merge_lora(nnx.clone(adapted))
    for dtype in (None, "bfloat16"):
        ours = run(adapted, dtype)
        ref = merged if dtype is None else Gemma(TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        if dtype is not None:   # the merged model cast by hand, outside the sampler
            nnx.update(ref, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(merged)))
        want = run(ref)
        np.testing.assert_array_equal(ours.tokens, want.tokens)
        np.testing.assert_array_equal(ours.logprobs, want.logprobs)
    in_f32, in_bf16 = run(adapted), run(adapted, "bfloat16")
    same = np.cumprod(in_f32.tokens == in_bf16.tokens, axis=1).astype(bool)  # shared prefixes
    # Rounding can flip a near-tie of the draw even at the first token (one row of four on an
    # H100, where the draw is a kernel); the log-probs compare over the shared prefixes.
    assert same[:, 0].sum() >= 3
    diff = np.abs(in_f32.logprobs - in_bf16.logprobs)[same]
    assert 1e-4 < diff.max() < 0.2       # really cast, and only rounded
    assert has_lora(adapted) and not has_lora(merged)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(adapted))} == {jnp.dtype("float32")}

    # Per step the loop multiplies by each projection once; merging in the loop would add the
    # adapters' A @ B (7 per layer) on top. On the XLA path (a CPU) that is 7 matmuls a layer
    # (q, k, v, o, gate, up, down), 2 for the attention, and the logits. On GPUs the wing's
    # weights and kernels hold other dots (q/k/v one matrix, gate/up one).
    sample = lambda m: sample_tokens(m, tokens, positions, jax.random.key(4), cfg)
    dots = _while_body_dots(sample, adapted)
    assert dots == _while_body_dots(sample, merged)
    if jax.default_backend() == "cpu":
        assert dots == [TINY.num_layers * (7 + 2) + 1]
    with pytest.raises(ValueError, match="compute_dtype"):
        SampleConfig(max_new_tokens=4, compute_dtype="float16")

def test_a_call_inside_another_trace_compiles_without_per_program_options(model, monkeypatch):
    """`jax.make_jaxpr` / an outer `jax.jit` around `sample_tokens`: JAX refuses per-program
    compiler options on a nested jit (the GPU program has some), so the sampler asks for its
    program without them there, and with them (on GPUs) at top level."""
    from aha_utils import sampler

    asked = []
    program = sampler._sample_program
    monkeypatch.setattr(sampler, "_sample_program",
                        lambda backend, top_level=True: asked.append(top_level)
                        or program(backend, top_level))
    tokens, positions = left_pad(PROMPTS[:1], 16, 1)
    cfg = SampleConfig(max_new_tokens=2)
    sample = lambda m: sample_tokens(m, tokens, positions, jax.random.key(0), cfg).tokens
    top = sample(model)
    nested = jax.jit(sample)(model)
    closed_over = jax.jit(lambda: sample(model))()        # nothing traced is passed in
    assert asked == [True, False, False]
    np.testing.assert_array_equal(nested, top)
    np.testing.assert_array_equal(closed_over, top)


# ----- token selection maths ----------------------------------------------------------------
def test_select_tokens_distribution_and_truncation():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.15, 0.07, 0.03]] * 20000))   # [N, 5]
    keys = jax.random.key(3)
    tok, lp = select_tokens(logits, keys, greedy=False, temperature=1.0)
    freq = np.bincount(np.asarray(tok), minlength=5) / len(tok)
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.15, 0.07, 0.03], atol=0.015)
    np.testing.assert_allclose(lp, np.log([0.5, 0.25, 0.15, 0.07, 0.03])[tok], rtol=1e-5)
    # temperature 2: p ∝ sqrt(p); the returned log-prob is still the T=1 one
    tok, lp = select_tokens(logits, keys, greedy=False, temperature=2.0)
    want = np.sqrt([0.5, 0.25, 0.15, 0.07, 0.03]); want /= want.sum()
    np.testing.assert_allclose(np.bincount(np.asarray(tok), minlength=5) / len(tok), want, atol=0.015)
    np.testing.assert_allclose(lp, np.log([0.5, 0.25, 0.15, 0.07, 0.03])[tok], rtol=1e-5)
    # top-k 2: only the two largest, renormalised
    tok, _ = select_tokens(logits, keys, greedy=False, top_k=2)
    np.testing.assert_allclose(np.bincount(np.asarray(tok), minlength=5) / len(tok),
                               [2 / 3, 1 / 3, 0, 0, 0], atol=0.015)
    # top-p 0.8: 0.5 + 0.25 < 0.8, so 0.15 is still needed; 0.07 and 0.03 are not
    for top_k in (None, 4):
        tok, _ = select_tokens(logits, keys, greedy=False, top_k=top_k, top_p=0.8)
        np.testing.assert_allclose(np.bincount(np.asarray(tok), minlength=5) / len(tok),
                                   np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9, atol=0.015)
    tok, lp = select_tokens(logits[:3], keys, greedy=True)
    assert tok.tolist() == [0, 0, 0]


def test_two_level_gumbel_draws_the_softmax():
    assert [block_size(v) for v in (5, 64, 96, 262_144)] == [1, 8, 8, 512]
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(64, 0.3))
    p[8:16] = 0.0                                    # a whole block that must never be drawn
    p /= p.sum()
    scores = jnp.log(jnp.asarray(np.tile(p, (40000, 1)), jnp.float32))   # [N, 64], -inf inside
    tok = np.asarray(jax.jit(two_level_gumbel_max)(scores, jax.random.key(5)))
    freq = np.bincount(tok, minlength=64) / len(tok)
    assert freq[8:16].sum() == 0
    np.testing.assert_allclose(freq, p, atol=0.01)
    # At temperature 2 it draws from p^(1/2), and returns the log-probs at temperature 1, whose
    # normaliser it builds from the same block sums.
    tok, lp = jax.jit(two_level_sample)(scores, 2.0, jax.random.key(6))
    want = np.sqrt(p) / np.sqrt(p).sum()
    np.testing.assert_allclose(np.bincount(np.asarray(tok), minlength=64) / len(tok), want,
                               atol=0.01)
    np.testing.assert_allclose(lp, np.log(p)[np.asarray(tok)], rtol=1e-5, atol=1e-6)


def test_top_p_keeps_the_top_token_and_everything_at_one():
    sorted_logits = jnp.log(jnp.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]]))
    assert top_p_mask(sorted_logits, 0.1).tolist() == [[True, False, False], [True, False, False]]
    assert top_p_mask(sorted_logits, 1.0).all()
    assert token_logprobs(sorted_logits, jnp.array([1, 2])).tolist() == pytest.approx(
        np.log([0.05, 0.3]), rel=1e-5)


# ----- generate: text, stop strings, buckets, errors --------------------------------------------
SAMPLED = dict(max_new_tokens=8, temperature=1.0, top_k=40, top_p=0.9, num_samples=2)  # one program


def test_generate_stop_string_cuts_text_keeps_tag(model, tokenizer):
    prompts = ["The answer is", "Hello", "One two"]
    free = generate(model, tokenizer, prompts, seed=5, **SAMPLED)
    assert len(free.texts) == 6 and free.tokens.shape == (6, 8)
    assert free.texts[0] == tokenizer.decode(free.tokens[0])
    # Declare a piece of the first completion's text a stop string: generation must end on the
    # token that completes it, and the text must end with it.
    piece = tokenizer.decode(free.tokens[0, 3:5])
    cut = generate(model, tokenizer, prompts, seed=5, stop_strings=[piece], **SAMPLED)
    first = next(k for k in range(8) if piece in tokenizer.decode(free.tokens[0, :k + 1]))
    assert cut.lengths[0] == first + 1 and cut.stopped[0]
    assert cut.texts[0].endswith(piece) and free.texts[0].startswith(cut.texts[0])
    assert (cut.tokens[0, :first + 1] == free.tokens[0, :first + 1]).all()
    assert (cut.tokens[1:] == free.tokens[1:])[~cut.stopped[1:]].all()
    assert cut.prompt_tokens.shape[0] == 6 and cut.prompt_lengths[0] == len(
        tokenizer.encode(prompts[0]))


def test_second_similar_call_does_not_compile(model, tokenizer):
    generate(model, tokenizer, ["Question: 2 + 2 =", "Name a colour:", "Hi"], seed=1, **SAMPLED)
    second = {}
    assert backend_compiles(lambda: second.update(out=generate(
        model, tokenizer, ["What is 9 * 9?", "Say hello.", "One two three", "x"], seed=2,
        stop_strings=["</answer>"], **{**SAMPLED, "temperature": 0.7}))) == 0, \
        "the second call compiled again"
    out = second["out"]
    assert len(out.texts) == 8 and out.tokens.shape == (8, 8)


def test_a_compiled_call_does_not_walk_the_models_graph(model, monkeypatch):
    """The host waits for the decode loop, so Python work per call adds to every call: once
    compiled, a call must not traverse the model's NNX graph (`nnx.jit` did, on the way in and
    out: 27 ms a call for the 1B on an H100 machine's host)."""
    from flax.nnx import graphlib

    tokens, positions = left_pad([[2, 17, 29]], 16, 2)
    config = SampleConfig(max_new_tokens=2, greedy=True)
    sample_tokens(model, tokens, positions, jax.random.key(0), config)       # compiles
    walks = []
    for name in ("flatten", "unflatten"):
        def counted(*args, real=getattr(graphlib, name), name=name, **kwargs):
            walks.append(name)
            return real(*args, **kwargs)
        monkeypatch.setattr(graphlib, name, counted)
    out = sample_tokens(model, tokens, positions, jax.random.key(1), config)
    assert int(out.lengths[0]) == 2 and walks == []


def test_buckets():
    assert [prompt_bucket(n, 4096) for n in (1, 16, 17, 100, 129, 3000)] == [16, 16, 32, 128,
                                                                          256, 4096]
    assert prompt_bucket(300, 300) == 300
    assert [batch_bucket(n) for n in (1, 3, 4, 5, 64)] == [1, 4, 4, 8, 64]
    assert [batch_bucket(n, 8) for n in (1, 3, 9, 16)] == [8, 8, 16, 16]
    tokens, positions = left_pad([[5, 6], [7]], 4, 3)
    assert tokens.tolist() == [[0, 0, 5, 6], [0, 0, 0, 7], [0, 0, 0, 0]]
    assert positions.tolist() == [[-1, -1, 0, 1], [-1, -1, -1, 0], [-1, -1, -1, -1]]


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompts=[]), "empty"),
    (dict(prompts="a str"), "list"),
    (dict(prompts=["word " * 40]), "max_prompt_len"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(num_samples=0), "num_samples"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(stop_strings="</answer>"), "stop_strings"),
    (dict(stop_strings=[""]), "stop_strings"),
])
def test_bad_input_is_a_clear_error(model, tokenizer, kwargs, match):
    args = dict(prompts=["hi"], max_new_tokens=4, max_prompt_len=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(model, tokenizer, args.pop("prompts"), **args)


# ----- sharding ---------------------------------------------------------------------------------
def test_eight_devices_match_one(model, tokenizer):
    """Rows over 4 data-parallel devices and parameters over 2 model-parallel ones (8 fake CPU
    devices) give the same samples and log-probs as this process's single device."""
    prompts = ["Question: 2 + 2 =", "A much longer prompt that crosses the window", "Hi"]
    one = generate(model, tokenizer, prompts, seed=3, **SAMPLED)
    out = run_with_fake_devices(f"""
        import json, jax
        from aha_utils.sharding import make_mesh, shard_model
        from aha_utils.sampler import generate
        from aha_utils.tokenizer import gguf_tokenizer
        from tests.test_sampler import SAMPLED, tiny_model
        mesh = make_mesh(model_parallel=2)
        model = shard_model(tiny_model(), mesh)
        s = generate(model, gguf_tokenizer(), {prompts!r}, seed=3, **SAMPLED)
        print("RESULT" + json.dumps(dict(
            tokens=s.tokens.tolist(), logprobs=s.logprobs.tolist(), mesh=dict(mesh.shape),
            devices=len(model.embedding[...].sharding.device_set))))
    """)
    res = json.loads(out.split("RESULT", 1)[1])
    assert res["devices"] == 8 and res["mesh"] == {"data": 4, "model": 2}
    assert res["tokens"] == one.tokens.tolist()
    np.testing.assert_allclose(res["logprobs"], one.logprobs, atol=1e-4)


# ----- the real model against HF transformers ---------------------------------------------------
@pytest.fixture(scope="module")
def real(real_model_f32):
    return real_model_f32  # the session's float32 270M (tests/conftest.py), loaded once


@pytest.mark.slow
@pytest.mark.skipif(not GOLDEN.exists(), reason="run scripts/make_hf_golden.py first")
def test_real_model_greedy_equals_hf_and_logprobs_equal_full_forward(real):
    """All four golden prompts in one left-padded batch (one crosses the 512-token window)."""
    model, tok = real
    gold = np.load(GOLDEN)
    names = [str(n) for n in gold["names"]]
    ids = [gold[f"{n}/ids"].tolist() for n in names]
    assert max(map(len, ids)) > 512
    tokens, positions = left_pad(ids, max(map(len, ids)), len(ids))  # exact width: cheaper prefill
    cfg = SampleConfig(max_new_tokens=16, stop_ids=(tok.eos_id, tok.end_of_turn_id))
    out = jax.device_get(sample_tokens(model, tokens, positions, jax.random.key(0), cfg))
    for r, n in enumerate(names):
        want = gold[f"{n}/greedy"].tolist()
        got = out.tokens[r, :out.lengths[r]].tolist()
        assert got == want[:len(got)] and len(got) in (len(want), 16), (n, got, want)
    assert tok.decode(out.tokens[names.index("qa")]).startswith(" 12 + 7 = 19")
    r = names.index("qa")
    ref = teacher_forced_logprobs(model, ids[r], out.tokens[r, :out.lengths[r]])
    np.testing.assert_allclose(out.logprobs[r, :out.lengths[r]], ref, atol=1e-3)
