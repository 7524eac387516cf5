"""One codepath for one device and many: 8 fake CPU devices, several mesh shapes, the same
logits as a single device (tiny models of every head layout, and the real Gemma 3 270M)."""

import json

import jax
import numpy as np
import pytest

from aha_utils.sharding import make_mesh, param_spec, shard_batch
from tests.conftest import run_with_fake_devices

MULTI_DEVICE_CODE = r"""
import json, jax, jax.numpy as jnp, numpy as np
from flax import nnx
from aha_utils.config import ModelConfig
from aha_utils.model import Gemma, forward
from aha_utils.sharding import make_mesh, shard_model, shard_batch
from aha_utils.weights import load_model

assert len(jax.devices()) == 8
one = make_mesh(devices=jax.devices()[:1])
ids = np.random.default_rng(0).integers(0, 512, (8, 24)).astype(np.int32)
pos = np.tile(np.arange(24, dtype=np.int32), (8, 1))
pos[3, :5] = -1  # a left-padded row
report = {}
for name, cfg in {"gqa": ModelConfig.tiny(), "mqa": ModelConfig.tiny(num_kv_heads=1),
                  "gemma2": ModelConfig.tiny_gemma2()}.items():
    model = Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    shard_model(model, one)
    ref = np.asarray(forward(model, ids, pos))
    for mp in (1, 2, 4):
        mesh = make_mesh(model_parallel=mp)
        shard_model(model, mesh)
        out = forward(model, shard_batch(ids, mesh), shard_batch(pos, mesh))
        report[f"{name}/mp{mp}"] = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
        report[f"{name}/mp{mp}/spec_q"] = list(model.layers[0].attn.q_proj[...].sharding.spec)
        report[f"{name}/mp{mp}/spec_k"] = list(model.layers[0].attn.k_proj[...].sharding.spec)

tok_ids = np.random.default_rng(1).integers(0, 262144, (8, 40)).astype(np.int32)
model, _ = load_model("gemma3-270m", dtype=jnp.float32, mesh=one)
ref = np.asarray(forward(model, tok_ids))
mesh = make_mesh(model_parallel=2)
model, _ = load_model("gemma3-270m", dtype=jnp.float32, mesh=mesh)
out = forward(model, shard_batch(tok_ids, mesh))
report["real/mp2"] = float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max())
report["real/embedding_spec"] = list(model.embedding[...].sharding.spec)
report["real/devices_used"] = len(model.layers[0].mlp.gate_proj[...].sharding.device_set)
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    out = run_with_fake_devices(MULTI_DEVICE_CODE, n_devices=8)
    return json.loads(out.split("REPORT", 1)[1])


@pytest.mark.parametrize("name", ["gqa", "mqa", "gemma2"])
@pytest.mark.parametrize("mp", [1, 2, 4])
def test_eight_devices_match_one(report, name, mp):
    assert report[f"{name}/mp{mp}"] < 1e-5  # relative to the largest logit: float noise only


def test_heads_are_split_only_when_divisible(report):
    def spec(key):  # trailing Nones are equivalent; JAX may drop them
        axes = list(report[key])
        while axes and axes[-1] is None:
            axes.pop()
        return tuple(axes)

    assert spec("gqa/mp2/spec_k") == (None, "model")   # 2 kv heads over 2
    assert spec("gqa/mp4/spec_k") == ()                # 2 kv heads over 4: replicated
    assert spec("mqa/mp2/spec_k") == ()                # 1 kv head: replicated
    assert spec("mqa/mp4/spec_q") == (None, "model")   # 4 query heads over 4


def test_real_model_sharded_matches_one_device(report):
    assert report["real/mp2"] < 1e-5
    assert report["real/embedding_spec"][0] == "model"  # vocab-parallel
    assert report["real/devices_used"] == 8


def test_param_spec_rules():
    mesh = make_mesh()  # this process: one CPU device -> (1, 1)
    assert param_spec("down_proj", (2048, 640), mesh) == jax.sharding.PartitionSpec("model", None)
    with pytest.raises(KeyError, match="PARAM_AXES"):
        param_spec("lora_a", (3, 4), mesh)
    with pytest.raises(ValueError, match="shape"):
        param_spec("q_proj", (640, 1024), mesh)
    with pytest.raises(ValueError, match="must divide"):
        make_mesh(model_parallel=3)


def test_uneven_batch_is_refused():
    out = run_with_fake_devices(r"""
from aha_utils.sharding import make_mesh, shard_batch
import numpy as np
try:
    shard_batch(np.zeros((6, 3), np.int32), make_mesh())
except ValueError as e:
    print("ERR", e)
""", n_devices=4)
    assert "6 rows does not split over 4" in out and "multiple of 4" in out
    assert shard_batch(np.zeros((6, 3)), make_mesh()).shape == (6, 3)
