"""How far the sampler's log-probs (GRPO's old policy) are from the update's, by sampler dtype.

GRPO's ratio is exp(log pi_update - log pi_sampler) per token; with one update per batch
(mu = 1) it would be exactly 1 if both computed the same numbers, so its spread is the
precision mismatch between the two programs. The update computes in bfloat16 on a float32
master copy (the GPU preset); the sampler decodes either the float32 weights or a bfloat16 copy
(`generate(..., compute_dtype=...)`), with its own KV cache and order of operations.

    python -m benchmarks.experiments.logprob_gap      # Gemma 3 270M (offline GGUF), ~2 min on CPU
    python -m benchmarks.experiments.logprob_gap --prompts 16 --new 128
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils.data.countdown import make_problems
from aha_utils.data.prompts import make_prompt
from aha_utils.sampler import decode_copy, generate
from aha_utils.train import build_batch
from aha_utils.train_step import completion_logprobs
from aha_utils.weights import load_model


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new", type=int, default=48)
    args = ap.parse_args(argv)

    model, tokenizer = load_model(args.model, dtype=jnp.float32)
    update_model = decode_copy(model, "bfloat16")   # the train step's cast
    logprobs = nnx.jit(completion_logprobs, static_argnames=("completion_start",))
    prompts = [make_prompt("countdown", q) for q in make_problems(args.prompts, seed=1)]

    print(f"{args.model}, {args.prompts} Countdown prompts x {args.samples} samples x "
          f"{args.new} new tokens at T=1, on {jax.devices()[0].device_kind}")
    print("| sampler dtype | tokens | mean abs log-prob gap | max | ratio std |")
    print("|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        comp = generate(model, tokenizer, prompts, max_new_tokens=args.new, temperature=1.0,
                        num_samples=args.samples, seed=0, compute_dtype=dtype)
        batch = build_batch(comp, np.zeros(len(comp.texts)))
        ours = np.asarray(logprobs(update_model, jnp.asarray(batch["tokens"]),
                                   jnp.asarray(batch["positions"]),
                                   completion_start=comp.prompt_tokens.shape[1]))
        valid = batch["completion_mask"] > 0
        gap = (ours - comp.logprobs)[valid]
        print(f"| {dtype} | {valid.sum()} | {np.abs(gap).mean():.4f} | {np.abs(gap).max():.3f} "
              f"| {np.exp(gap).std():.4f} |")


if __name__ == "__main__":
    main()
