"""One process of a multi-process GRPO run on fake CPU devices (tests/test_multiprocess.py).

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

8 CPU devices in all, split evenly over NUM_PROCESSES processes that meet through
`jax.distributed.initialize` on localhost:PORT (NUM_PROCESSES=1: no coordinator). Trains a tiny
Gemma with the real tokenizer's vocabulary for 2 GRPO steps on a mesh over all 8 devices, then
prints one line `RESULT {json}`: the metrics rows (timings dropped) and a fingerprint of every
trained parameter (float64 sum, sum of squares and sum of absolute values), gathered from all
processes."""

import json
import os
import sys

pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if nproc > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from aha_utils.config import ModelConfig  # noqa: E402
from aha_utils.model import Gemma  # noqa: E402
from aha_utils.run_config import RunConfig  # noqa: E402
from aha_utils.sharding import fetch, make_mesh, shard_model  # noqa: E402
from aha_utils.tokenizer import gguf_tokenizer  # noqa: E402
from aha_utils.train import TIMING_KEYS, train  # noqa: E402

assert jax.device_count() == 8 and jax.process_count() == nproc

# Full fine-tuning (every parameter sharded by its spec) with 2 micro-batches of 8 rows, one
# row per device each: gradient accumulation and the cross-process all-reduce both take part.
cfg = RunConfig(task="countdown", steps=2, prompts_per_step=4, num_samples=4, max_new_tokens=8,
                lora_rank=None, learning_rate=1e-2, micro_batch_size=8, eval_n=8, eval_every=2,
                sample_every=1, checkpoint_every=1)
model = Gemma(ModelConfig.tiny(num_layers=2, vocab_size=262_144), dtype=jnp.float32,
              rngs=nnx.Rngs(0))
model.embedding[...] = model.embedding[...] * 0.1     # flatter logits: the samples differ
shard_model(model, make_mesh())


def reward(completion, problem):
    """Varies with the text, so the groups have non-zero advantages and the model moves."""
    return {"reward": (len(completion) % 7) / 6.0}


history = train(cfg, out, model=model, tokenizer=gguf_tokenizer(), reward_fn=reward,
                progress=False)
params = fetch(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
fingerprint = {"/".join(map(str, path)): [float(np.sum(x, dtype=np.float64)),
                                          float(np.sum(np.square(x, dtype=np.float64))),
                                          float(np.sum(np.abs(x), dtype=np.float64))]
               for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
               for path in [[getattr(k, "key", k) for k in path]]}
rows = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]
print("RESULT " + json.dumps({"process": pid, "rows": rows, "params": fingerprint}), flush=True)
