"""The train step: chunked log-probs, LoRA, gradient accumulation, 8 devices == 1, and a real
learning run (a tiny model learns a verifiable reward from chance to >= 0.9).

Everything uses one tiny 2-layer config (one local, one global layer) in float32, so the
compiled programs are shared between tests and the file stays within a few minutes on a CPU."""

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aha_utils import grpo
from aha_utils.config import ModelConfig
from aha_utils.lora import LoRABase, LoRAParam, LoRAWeight, apply_lora, merge_lora
from aha_utils.model import Gemma, forward
from aha_utils.train_step import (TrainConfig, compile_train_step, completion_logprobs,
                                  grpo_updates, init_training, loss_and_grads, train_step)
from tests.conftest import backend_compiles, run_with_fake_devices

CFG = ModelConfig.tiny(num_layers=2, vocab_size=128)
B, P, C = 8, 6, 5


def make_model(seed=0):
    """The output head is scaled down (embedding x 0.1): a random init's logits are so peaked
    that sampling at T=1 never explores and every importance ratio of a toy batch is clipped."""
    model = Gemma(CFG, dtype=jnp.float32, rngs=nnx.Rngs(seed))
    model.embedding[...] = model.embedding[...] * 0.1
    return model


def make_batch(seed=0, rows=B):
    """Left-padded prompts, completions padded after their end, positions -1 on all padding."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (rows, P + C)).astype(np.int32)
    positions = np.tile(np.arange(P + C, dtype=np.int32), (rows, 1))
    mask = np.ones((rows, C), np.float32)
    for r in range(rows):
        left, length = r % 3, C - r % 4           # prompt padding and completion length vary
        positions[r, :left] = -1
        positions[r, left:] -= left
        positions[r, P + length:] = -1
        mask[r, length:] = 0
        tokens[r, P + length:] = 0
    return dict(tokens=tokens, positions=positions, completion_mask=mask,
                old_logprobs=(rng.normal(size=(rows, C)) * 0.3 - 5.0).astype(np.float32),
                advantages=rng.normal(size=rows).astype(np.float32),
                truncated=np.arange(rows) % 4 == 0)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_completion_logprobs_match_full_forward():
    model, batch = make_model(), make_batch()
    tokens, positions = jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"])
    logp = jax.nn.log_softmax(forward(model, tokens, positions), axis=-1)        # [B, T, V]
    want = np.take_along_axis(np.asarray(logp[:, P - 1:-1]), batch["tokens"][:, P:, None], -1)
    got = nnx.jit(completion_logprobs, static_argnames=("completion_start", "chunk"))(
        model, tokens, positions, completion_start=P, chunk=2)   # 5 tokens in chunks of 2: padded
    valid = batch["completion_mask"] > 0
    np.testing.assert_allclose(np.asarray(got)[valid], want[..., 0][valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("softcap, dtype, tol", [
    (None, jnp.float32, 1e-5), (30.0, jnp.float32, 1e-5),
    (None, jnp.bfloat16, 1e-2), (30.0, jnp.bfloat16, 1e-2)])
def test_projected_logprobs_values_and_gradients_equal_autodiff(softcap, dtype, tol):
    """The hand-written backward (`layers.projected_logprobs`) against JAX's own derivative of
    the plain chain (logits in float32, soft-cap, log-softmax, gather), for a loss that weighs
    every token differently: the same values, d/dh and d/d embedding. In bfloat16 the two round
    d logits differently (bfloat16 operands of the backward matmuls against float32 ones),
    hence the looser tolerance on the gradients (0.5% seen, bfloat16's epsilon is 0.4%)."""
    from aha_utils.layers import projected_logprobs

    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((3, 4, 16)), dtype)            # [B, c, D]
    emb = jnp.asarray(rng.standard_normal((128, 16)), dtype)           # [V, D]
    targets = jnp.asarray(rng.integers(0, 128, (3, 4)), jnp.int32)     # [B, c]
    weights = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)

    def plain(h, emb):
        z = jnp.einsum("bcd,vd->bcv", h.astype(jnp.float32), emb.astype(jnp.float32))
        z = z if softcap is None else jnp.tanh(z / softcap) * softcap
        lp = jnp.take_along_axis(jax.nn.log_softmax(z, -1), targets[..., None], -1)[..., 0]
        return jnp.sum(lp * weights), lp

    def fused(h, emb):
        lp = projected_logprobs(h, emb, targets, softcap)
        return jnp.sum(lp * weights), lp

    (_, want), want_g = jax.value_and_grad(plain, argnums=(0, 1), has_aux=True)(h, emb)
    (_, got), got_g = jax.jit(jax.value_and_grad(fused, argnums=(0, 1), has_aux=True))(h, emb)
    assert got.dtype == jnp.float32 and got_g[0].dtype == dtype and got_g[1].dtype == dtype
    np.testing.assert_allclose(got, want, atol=1e-5)
    for g, w in zip(got_g, want_g):
        assert rel_err(g.astype(jnp.float32), w) < tol


def test_lora_starts_equal_to_base_and_merges_back():
    model, batch = make_model(), make_batch()
    tokens = jnp.asarray(batch["tokens"])
    base = np.asarray(forward(model, tokens))
    apply_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(1))
    assert isinstance(model.layers[0].attn.o_proj, LoRAWeight)
    assert model.layers[1].attn.o_proj.o_proj_lora_a[...].shape == (4, 16, 4)   # [H, hd, r]
    assert model.layers[1].attn.q_proj.q_proj_lora_b[...].shape == (4, 4, 16)   # [r, H, hd]
    np.testing.assert_array_equal(np.asarray(forward(model, tokens)), base)    # B = 0
    n_lora = sum(x.size for x in jax.tree.leaves(nnx.state(model, LoRAParam)))
    # r x (in + out) per target: q, k and v, o, gate/up/down (D=64, H=4, K=2, hd=16, F=128).
    assert n_lora == 2 * 4 * ((64 + 4 * 16) + 2 * (64 + 2 * 16) + (4 * 16 + 64) + 3 * (64 + 128))
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(1))

    rng = np.random.default_rng(0)
    for _, var in nnx.to_flat_state(nnx.state(model, LoRAParam)):   # make the adapters matter
        var.set_value(jnp.asarray(rng.normal(size=var.shape) * 0.1, jnp.float32))
    adapted = np.asarray(forward(model, tokens))
    assert rel_err(adapted, base) > 1e-2
    merge_lora(model)
    assert not nnx.state(model, LoRAParam) and not nnx.state(model, LoRABase)
    assert isinstance(model.layers[0].mlp.down_proj, nnx.Param)
    assert rel_err(forward(model, tokens), adapted) < 1e-5


def test_gradient_accumulation_equals_one_big_batch():
    model, batch = make_model(), make_batch()
    gcfg = grpo.GRPOConfig(loss_type="bnpo", beta=0.1, mask_truncated_completions=True)
    one = TrainConfig(compute_dtype="float32", total_steps=10)
    opt, ref = init_training(model, one, gcfg)
    noise = jax.random.normal(jax.random.key(1), model.layers[0].mlp.up_proj.shape)
    model.layers[0].mlp.up_proj[...] += 0.1 * noise   # policy != reference: the KL term is live
    loss1, grads1, m1 = loss_and_grads(model, batch, gcfg, one, ref)
    four = dataclasses.replace(one, micro_batch_size=2, remat=True, logprob_chunk=3)
    loss4, grads4, m4 = loss_and_grads(model, batch, gcfg, four, ref)
    assert float(m1["kl"]) > 1e-4
    assert abs(float(loss4) - float(loss1)) <= 1e-5 * abs(float(loss1))
    for key in m1:
        assert float(m4[key]) == pytest.approx(float(m1[key]), rel=1e-5, abs=1e-7), key
    for g4, g1 in zip(jax.tree.leaves(grads4), jax.tree.leaves(grads1)):
        assert rel_err(g4, g1) < 1e-5


def run_steps(model, gcfg, tcfg, steps=4):
    batch = make_batch(seed=1)
    opt, ref = init_training(model, tcfg, gcfg, seed=0)
    if gcfg.num_iterations > 1:
        history = grpo_updates(model, opt, batch, gcfg, tcfg, ref)
        assert len(history) == gcfg.num_iterations == steps
    else:
        history = [train_step(model, opt, batch, gcfg, tcfg, ref) for _ in range(steps)]
    return [{k: float(v) for k, v in m.items()} for m in history], ref


def test_lora_step_trains_only_adapters_and_reduces_the_loss():
    model = make_model()
    gcfg = grpo.GRPOConfig(beta=0.05, num_iterations=4)   # mu = 4 updates on one batch
    tcfg = TrainConfig(learning_rate=3e-3, total_steps=10, compute_dtype="float32",
                       micro_batch_size=4, lora_rank=4, lora_alpha=8.0)
    frozen = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    history, ref = run_steps(model, gcfg, tcfg)
    assert ref is None                      # LoRA: the base is the reference, no copy
    assert history[0]["kl"] == 0.0          # B = 0: policy == base, exactly
    assert history[-1]["kl"] > 0.0
    assert history[-1]["loss"] < history[0]["loss"] - 0.05
    assert history[-1]["ratio"] != history[0]["ratio"]   # same old_logprobs, the policy moved
    lora_b = [v.get_value() for path, v in nnx.to_flat_state(nnx.state(model, LoRAParam))
              if str(path[-1]).endswith("lora_b")]
    assert lora_b and all(np.abs(np.asarray(b)).max() > 0 for b in lora_b)
    # Base projections (now LoRABase), embedding and norms: bit-identical to before the steps.
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    bases = {path[:-1]: v for path, v in nnx.to_flat_state(nnx.state(model, LoRABase))}
    for path, before in nnx.to_flat_state(frozen):
        after = bases[path] if path in bases else params[path]
        np.testing.assert_array_equal(np.asarray(after.get_value()), before.get_value(),
                                      err_msg=str(path))


def test_full_finetune_reduces_the_loss_and_keeps_the_reference_frozen():
    model = make_model()
    gcfg = grpo.GRPOConfig(beta=0.05, loss_type="dr_grpo")
    tcfg = TrainConfig(learning_rate=3e-3, total_steps=10, compute_dtype="float32")
    initial = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    history, ref = run_steps(model, gcfg, tcfg)
    assert history[0]["kl"] == 0.0 and history[-1]["kl"] > 0.0
    assert history[-1]["loss"] < history[0]["loss"] - 0.05
    assert all(h["learning_rate"] > 0 for h in history)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(initial)):
        np.testing.assert_array_equal(np.asarray(a), b)   # the reference did not move


@pytest.mark.parametrize("lora_rank", [None, 4])
def test_the_step_updates_in_place(lora_rank):
    """The model and optimizer are donated: the step reuses their buffers (the old arrays are
    deleted), while the reference copy and the batch stay usable for the next update."""
    model = make_model()
    gcfg = grpo.GRPOConfig(beta=0.05 if lora_rank is None else 0.0)
    tcfg = TrainConfig(learning_rate=1e-3, compute_dtype="float32", lora_rank=lora_rank)
    optimizer, ref = init_training(model, tcfg, gcfg)
    old_params = jax.tree.leaves(nnx.state(model, nnx.Param))
    old_moments = [x for x in jax.tree.leaves(nnx.state(optimizer)) if x.size > 1]
    batch = make_batch()
    first = train_step(model, optimizer, batch, gcfg, tcfg, ref)
    assert old_moments and all(x.is_deleted() for x in old_params + old_moments)
    assert not any(x.is_deleted() for x in jax.tree.leaves(ref))
    second = train_step(model, optimizer, batch, gcfg, tcfg, ref)
    assert np.isfinite(float(second["loss"])) and float(first["loss"]) != float(second["loss"])


@pytest.mark.parametrize("lora_rank", [None, 4])
def test_compile_train_step_in_a_thread_leaves_nothing_to_compile(lora_rank):
    """Compiled ahead in a background thread (as train() does while the sampler runs), the step
    then runs without compiling, changes nothing by itself, and gives the same update as a step
    compiled on its first call."""
    gcfg = grpo.GRPOConfig()
    tcfg = TrainConfig(learning_rate=1e-3, compute_dtype="float32", lora_rank=lora_rank,
                       micro_batch_size=4, total_steps=7)   # a config no other test compiles
    model = make_model()
    optimizer, _ = init_training(model, tcfg, gcfg)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    with ThreadPoolExecutor(max_workers=1) as pool:   # result() re-raises the thread's error
        assert backend_compiles(lambda: pool.submit(compile_train_step, model, optimizer, B, P, C,
                                                    gcfg, tcfg).result()) >= 1
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    assert all(np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    out = {}
    assert backend_compiles(lambda: out.update(train_step(model, optimizer, make_batch(), gcfg,
                                                          tcfg))) == 0
    fresh = make_model()
    fresh_opt, _ = init_training(fresh, tcfg, gcfg)
    ref = train_step(fresh, fresh_opt, make_batch(), gcfg, tcfg)
    assert float(out["loss"]) == float(ref["loss"])
    with pytest.raises(ValueError, match="must all be >= 1"):
        compile_train_step(model, optimizer, B, 0, C, gcfg, tcfg)


def test_bfloat16_compute_keeps_float32_master_gradients():
    model, batch = make_model(), make_batch()
    gcfg = grpo.GRPOConfig(beta=0.05)
    f32 = TrainConfig(compute_dtype="float32")
    _, ref = init_training(model, f32, gcfg)
    model.layers[1].attn.v_proj[...] += 0.05 * jax.random.normal(
        jax.random.key(2), model.layers[1].attn.v_proj.shape)
    loss32, grads32, _ = loss_and_grads(model, batch, gcfg, f32, ref)
    loss16, grads16, _ = loss_and_grads(model, batch, gcfg, TrainConfig(), ref)  # bf16 default
    assert {g.dtype for g in jax.tree.leaves(grads16)} == {jnp.dtype(jnp.float32)}
    assert float(loss16) != float(loss32)                         # really computed in bf16
    assert abs(float(loss16) - float(loss32)) < 0.05 * abs(float(loss32)) + 1e-3
    assert rel_err(jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads16)]),
                   jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads32)])) < 0.1


def test_bad_input_is_refused_with_a_clear_error():
    model, batch = make_model(), make_batch()
    gcfg, tcfg = grpo.GRPOConfig(), TrainConfig(compute_dtype="float32", micro_batch_size=3)
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size=3"):
        loss_and_grads(model, batch, gcfg, tcfg)
    tcfg = TrainConfig(compute_dtype="float32")
    with pytest.raises(ValueError, match="unexpected \\['rewards'\\]"):
        loss_and_grads(model, dict(batch, rewards=np.zeros(B)), gcfg, tcfg)
    truncated_cfg = grpo.GRPOConfig(mask_truncated_completions=True)
    no_trunc = {k: v for k, v in batch.items() if k != "truncated"}
    with pytest.raises(ValueError, match="needs batch\\['truncated'\\]"):
        loss_and_grads(model, no_trunc, truncated_cfg, tcfg)
    with pytest.raises(ValueError, match="old_logprobs"):
        loss_and_grads(model, dict(batch, old_logprobs=batch["old_logprobs"][:, :2]), gcfg, tcfg)
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        loss_and_grads(model, batch, gcfg, dataclasses.replace(tcfg, lora_rank=4))
    with pytest.raises(ValueError, match="needs ref_params"):
        loss_and_grads(model, batch, grpo.GRPOConfig(beta=0.1), tcfg)
    with pytest.raises(ValueError, match="at least 2"):
        grpo.group_advantages(np.ones(8), 1)


MULTI_DEVICE_CODE = r"""
import dataclasses, json, jax, jax.numpy as jnp, numpy as np
from flax import nnx
from aha_utils import grpo
from aha_utils.sharding import make_mesh, shard_model, shard_batch
from aha_utils.train_step import TrainConfig, init_training, loss_and_grads
from tests.test_train_step import make_batch, make_model

assert len(jax.devices()) == 8
batch = make_batch(rows=16)
report = {}
cases = {
    "full": (grpo.GRPOConfig(beta=0.04, loss_type="bnpo"), TrainConfig(
        compute_dtype="float32", micro_batch_size=8), 1),
    "lora": (grpo.GRPOConfig(beta=0.04, importance_sampling_level="gspo-token"), TrainConfig(
        compute_dtype="float32", micro_batch_size=8, lora_rank=4, remat=True), 2),
}
for name, (gcfg, tcfg, mp) in cases.items():
    out = {}
    for where in ("one", "mesh"):
        model = make_model()
        mesh = make_mesh(model_parallel=mp) if where == "mesh" else make_mesh(devices=jax.devices()[:1])
        shard_model(model, mesh)
        _, ref = init_training(model, tcfg, gcfg, seed=0)
        for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            if v.ndim >= 2:  # move away from the reference / B = 0 so every term is live
                v.set_value(v.get_value() * 1.1 + 0.01)
        b = {k: shard_batch(v, mesh) for k, v in batch.items()}
        loss, grads, metrics = loss_and_grads(model, b, gcfg, tcfg, ref)
        out[where] = (float(loss), [np.asarray(g) for g in jax.tree.leaves(grads)],
                      {k: float(v) for k, v in metrics.items()})
        if where == "mesh":
            report[name + "/devices"] = len(jax.tree.leaves(grads)[0].sharding.device_set)
            try:
                loss_and_grads(model, b, gcfg, dataclasses.replace(tcfg, micro_batch_size=2), ref)
            except ValueError as e:
                report[name + "/error"] = str(e)
    (l1, g1, m1), (l8, g8, m8) = out["one"], out["mesh"]
    report[name + "/loss"] = abs(l8 - l1) / abs(l1)
    report[name + "/kl"] = m1["kl"]
    # relative to the norm of the whole gradient: robust to single entries that cancel to ~0
    diff = np.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(g8, g1)))
    report[name + "/grads"] = diff / np.sqrt(sum(float((b ** 2).sum()) for b in g1))
    report[name + "/leafmax"] = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(g8, g1))
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def multi_device_report():
    return json.loads(run_with_fake_devices(MULTI_DEVICE_CODE).split("REPORT", 1)[1])


@pytest.mark.parametrize("name", ["full", "lora"])
def test_eight_devices_give_the_same_loss_and_gradients(multi_device_report, name):
    r = multi_device_report
    assert r[f"{name}/devices"] == 8
    assert r[f"{name}/kl"] > 0
    assert r[f"{name}/loss"] < 1e-5   # float32 summation order only (observed ~5e-7)
    assert r[f"{name}/grads"] < 1e-5 and r[f"{name}/leafmax"] < 1e-5   # observed ~1e-6
    n_data = {"full": 8, "lora": 4}[name]   # lora runs on a (4 data, 2 model) mesh
    assert f"micro-batch of 2 rows does not split over the {n_data} data-parallel" in \
        r[f"{name}/error"]


def test_fused_attention_only_where_rows_are_the_only_split():
    """8 fake CPU devices, bfloat16 compute, `Attention.cudnn` forced (the XLA version of
    the same call off a GPU): the train step traces under its mesh, so a data-parallel mesh
    takes the fused attention (one call per layer and pass) and gives the single device's
    loss, while a (4 data, 2 model) mesh, whose heads are split, keeps the XLA path."""
    out = run_with_fake_devices(r"""
        import json, jax, numpy as np
        from aha_utils import grpo
        from aha_utils.sharding import make_mesh, shard_model, shard_batch
        from aha_utils.train_step import TrainConfig, init_training, loss_and_grads
        from tests.test_train_step import make_batch, make_model as plain_model

        def make_model():       # the fused attention call forced on every layer (as on GPUs)
            model = plain_model()
            for layer in model.layers:
                layer.attn.cudnn = True
            return model
        calls = []
        dpa = jax.nn.dot_product_attention
        jax.nn.dot_product_attention = lambda *a, **kw: calls.append(1) or dpa(*a, **kw)
        gcfg, tcfg = grpo.GRPOConfig(), TrainConfig(compute_dtype="bfloat16", micro_batch_size=8)
        batch = make_batch(rows=16)
        res = {}
        for name, mesh in (("one", make_mesh(devices=jax.devices()[:1])),
                           ("data", make_mesh()), ("model", make_mesh(model_parallel=2))):
            calls.clear()
            model = shard_model(make_model(), mesh)
            init_training(model, tcfg, gcfg)
            loss, _, _ = loss_and_grads(model, {k: shard_batch(v, mesh) for k, v in
                                                batch.items()}, gcfg, tcfg)
            res[name] = dict(loss=float(loss), calls=len(calls))
        print("RESULT" + json.dumps(res))
    """)
    res = json.loads(out.split("RESULT", 1)[1])
    assert res["one"]["calls"] > 0 and res["data"]["calls"] == res["one"]["calls"]
    assert res["model"]["calls"] == 0
    for name in ("data", "model"):
        assert abs(res[name]["loss"] - res["one"]["loss"]) <= 1e-2 * abs(res["one"]["loss"])


# ----- learning ---------------------------------------------------------------------------------
@nnx.jit(static_argnames="length")
def sample(model, prompts, key, length):
    """Plain ancestral sampling at T=1 (no sampler needed): a full causal forward per token."""
    rows, p = prompts.shape
    buf = jnp.concatenate([prompts, jnp.zeros((rows, length), jnp.int32)], axis=1)

    def body(i, buf):
        h, _ = model.hidden(buf)   # later columns are garbage, but causally invisible
        logits = model.logits(jax.lax.dynamic_index_in_dim(h, p - 1 + i, 1, keepdims=False))
        tok = jax.random.categorical(jax.random.fold_in(key, i), logits).astype(jnp.int32)
        return jax.lax.dynamic_update_index_in_dim(buf, tok, p + i, axis=1)

    buf = jax.lax.fori_loop(0, length, body, buf)
    return buf, completion_logprobs(model, buf, None, p)


def test_grpo_learns_a_verifiable_reward():
    """Reward = fraction of even token ids among 4 generated tokens (chance 0.5). 4 prompts x 8
    samples, full fine-tuning, 16 steps, sampled at T=1 with plain ancestral sampling."""
    n_prompts, group, length, steps = 4, 8, 4, 16
    model = make_model()
    gcfg = grpo.GRPOConfig(loss_type="grpo")
    tcfg = TrainConfig(learning_rate=1e-2, warmup_steps=2, total_steps=steps,
                       compute_dtype="float32")
    opt, ref = init_training(model, tcfg, gcfg)
    prompts = np.random.default_rng(0).integers(0, CFG.vocab_size, (n_prompts, 4))
    prompts = jnp.repeat(jnp.asarray(prompts, jnp.int32), group, axis=0)          # [32, 4]
    rows = n_prompts * group
    positions = jnp.broadcast_to(jnp.arange(4 + length, dtype=jnp.int32), (rows, 4 + length))
    rewards_per_step = []
    for step in range(steps):
        tokens, logp = sample(model, prompts, jax.random.key(step), length)
        rewards = (tokens[:, 4:] % 2 == 0).astype(jnp.float32).mean(axis=1)      # [32]
        rewards_per_step.append(float(rewards.mean()))
        batch = dict(tokens=tokens, positions=positions, completion_mask=jnp.ones((rows, length)),
                     old_logprobs=logp, advantages=grpo.group_advantages(rewards, group))
        train_step(model, opt, batch, gcfg, tcfg, ref)
    final = [float((sample(model, prompts, jax.random.key(1000 + i), length)[0][:, 4:] % 2 == 0)
                   .mean()) for i in range(4)]
    print("reward per step", np.round(rewards_per_step, 3), "final", np.round(final, 3))
    assert 0.35 < np.mean(rewards_per_step[:2]) < 0.65   # chance
    assert np.mean(final) >= 0.9


def test_second_step_on_a_mesh_does_not_compile_again():
    """The optimizer's counters start on the mesh (`init_training`), so the state the first
    update returns has the same shardings as the one it took: step 2 reuses step 1's program."""
    from aha_utils.sharding import make_mesh, shard_model
    model = shard_model(make_model(), make_mesh())
    gcfg, tcfg = grpo.GRPOConfig(), TrainConfig(learning_rate=1e-3, total_steps=10,
                                                compute_dtype="float32")
    optimizer, _ = init_training(model, tcfg, gcfg)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    train_step(model, optimizer, make_batch(0), gcfg, tcfg)
    first = len(compiles)
    metrics = train_step(model, optimizer, make_batch(1), gcfg, tcfg)
    assert first >= 1 and len(compiles) == first, "the second update compiled again"
    assert int(optimizer.step[...]) == 2 and np.isfinite(float(metrics["loss"]))
