"""What cuDNN's fused attention (the update's path on GPUs, `model.Attention._fused`) costs the
log-probs: bf16 completion log-probs through it and through the model's XLA attention, each
against a float32 XLA reference on the same weights.

    python -m benchmarks.experiments.attention_parity     # on a GPU (elsewhere both are XLA)
    python -m benchmarks.experiments.attention_parity --embedding-scale 1.0

Gemma 3 270M with random weights (the embedding scaled by `--embedding-scale`, 0.1 as in the
tests: a random init's logits are otherwise extreme), 8 rows of 384 tokens, row r left-padded
by 13 r, log-probs of the last 256 (`train_step.completion_logprobs`). Prints the mean and max
absolute difference per token.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils import model as model_mod
from aha_utils.config import config_for
from aha_utils.sampler import decode_copy
from aha_utils.train_step import completion_logprobs

ROWS, COLS, PROMPT = 8, 384, 128


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedding-scale", type=float, default=0.1)
    args = p.parse_args(argv)
    cfg = config_for("gemma3-270m")
    ref = model_mod.Gemma(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
    ref.embedding[...] = ref.embedding[...] * args.embedding_scale
    low = decode_copy(ref, "bfloat16")               # the same weights, cast to bf16
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, cfg.vocab_size, (ROWS, COLS)), jnp.int32)
    positions = np.tile(np.arange(COLS, dtype=np.int32), (ROWS, 1))
    for r in range(ROWS):
        positions[r, :13 * r], positions[r, 13 * r:] = -1, np.arange(COLS - 13 * r)
    positions = jnp.asarray(positions)
    logprobs = nnx.jit(lambda m, t, q: completion_logprobs(m, t, q, PROMPT))
    out = {}
    for name, model, cudnn in (("float32 XLA", ref, False), ("bf16 XLA", low, False),
                               ("bf16 cuDNN", low, True)):
        model = nnx.clone(model)
        for layer in model.layers:                    # `Gemma(..., cudnn_attention=...)`
            layer.attn.cudnn = cudnn
        out[name] = np.asarray(logprobs(model, tokens, positions))
    print(f"device: {jax.devices()[0].device_kind}; mean |log-prob| (float32): "
          f"{np.abs(out['float32 XLA']).mean():.2f}")
    for a, b in (("bf16 XLA", "float32 XLA"), ("bf16 cuDNN", "float32 XLA"),
                 ("bf16 cuDNN", "bf16 XLA")):
        d = np.abs(out[a] - out[b])
        print(f"{a} against {b}: mean {d.mean():.4f}, max {d.max():.4f} per token")


if __name__ == "__main__":
    main()
