"""Peak memory, time and model FLOP/s of one GRPO update (the train step, not the sampler).

    python -m benchmarks.grpo_step                                 # gemma3-1b, B=64, LoRA and full
    python -m benchmarks.grpo_step --model gemma3-270m --batch 16 --new 64 --micro 8

Random weights (memory and speed do not depend on their values); every row is a prompt of
`--prompt` tokens and a completion of `--new` tokens, all valid (the worst case for a batch).
Each configuration runs in its own process, so its peak memory (`memory_stats()
["peak_bytes_in_use"]`, the allocator's high-water mark, with preallocation off) is its own.

What a configuration holds:
- LoRA (rank 16 on every attention and MLP projection): the frozen base in bfloat16, float32
  adapters and their AdamW moments. The reference policy is the base itself (adapters zeroed).
- full: float32 master weights, float32 gradients and two float32 AdamW moments (16 bytes per
  parameter before activations), bfloat16 compute.
Both use micro-batches (`--micro` rows per forward/backward, gradients accumulated by
`lax.scan`) and optionally per-block rematerialisation (`--remat`).

Model TFLOP/s counts 6 x parameters x tokens (forward 2N, backward 4N; the tied embedding counts
once, as the output projection it is), the usual MFU convention; attention's quadratic term is
left out, so it slightly understates the work. Peak bf16 for MFU: the datasheet's dense figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v5 lite": 197e12,
             "TPU v4": 275e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def one(model_name: str, mode: str, batch: int, prompt: int, new: int, micro: int, remat: bool,
        lora_rank: int, reps: int, logprob_chunk: int = 64) -> dict:
    """Run in a fresh process: build, compile, time `reps` updates, report peak memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from aha_utils import grpo
    from aha_utils.config import config_for
    from aha_utils.model import Gemma
    from aha_utils.train_config import TrainConfig
    from aha_utils.train_step import init_training, train_step, trainable_filter

    cfg = config_for(model_name)
    full = mode == "full"
    model = Gemma(cfg, dtype=jnp.float32 if full else jnp.bfloat16, rngs=nnx.Rngs(0))
    train_cfg = TrainConfig(learning_rate=1e-5, total_steps=100, micro_batch_size=micro,
                            remat=remat, lora_rank=None if full else lora_rank,
                            compute_dtype="bfloat16", logprob_chunk=logprob_chunk)
    grpo_cfg = grpo.GRPOConfig()
    optimizer, ref = init_training(model, train_cfg, grpo_cfg)
    rng = np.random.default_rng(0)
    t = prompt + new
    b = dict(tokens=rng.integers(3, cfg.vocab_size, (batch, t)).astype(np.int32),        # [B, T]
             positions=np.broadcast_to(np.arange(t, dtype=np.int32), (batch, t)).copy(),  # [B, T]
             completion_mask=np.ones((batch, new), np.float32),                           # [B, C]
             old_logprobs=np.full((batch, new), -2.0, np.float32),                        # [B, C]
             advantages=rng.standard_normal(batch).astype(np.float32))                    # [B]
    b = {k: jnp.asarray(v) for k, v in b.items()}
    dev = jax.devices()[0]

    t0 = time.perf_counter()
    jax.block_until_ready(train_step(model, optimizer, b, grpo_cfg, train_cfg, ref))
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(train_step(model, optimizer, b, grpo_cfg, train_cfg, ref))
        times.append(time.perf_counter() - t0)
    step = min(times)
    stats = dev.memory_stats() or {}
    tokens = batch * t
    flops = 6 * cfg.num_params() * tokens
    peak = next((v for k, v in PEAK_BF16.items() if k in dev.device_kind), None)
    trainable = sum(x.size for x in jax.tree.leaves(
        nnx.state(model, trainable_filter(train_cfg))))
    return dict(model=model_name, mode=mode, batch=batch, tokens=tokens, micro=micro,
                remat=remat, logprob_chunk=logprob_chunk, trainable=int(trainable),
                device=dev.device_kind,
                peak_gb=stats.get("peak_bytes_in_use", float("nan")) / 1e9,
                limit_gb=stats.get("bytes_limit", float("nan")) / 1e9,
                compile_s=first - step, step_s=step, tokens_per_s=tokens / step,
                tflops=flops / step / 1e12, mfu=None if peak is None else flops / step / peak)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grpo_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-1b")
    p.add_argument("--modes", default="lora,full", help="comma-separated: lora, full")
    p.add_argument("--batch", type=int, default=64, help="completions per update")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=512, help="completion tokens per row")
    p.add_argument("--micro", default="16", help="comma-separated micro-batch sizes")
    p.add_argument("--remat", default="1", help="comma-separated 0/1")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--logprob-chunk", type=int, default=64,
                   help="completion tokens per vocabulary projection (TrainConfig.logprob_chunk)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # child process
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one(args.model, args.modes, args.batch, args.prompt,
                                         args.new, int(args.micro), args.remat == "1",
                                         args.lora_rank, args.reps, args.logprob_chunk)),
              flush=True)
        return
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    rows = []
    for mode in args.modes.split(","):
        for micro in args.micro.split(","):
            for remat in args.remat.split(","):
                cmd = [sys.executable, "-m", "benchmarks.grpo_step", "--one", "--model",
                       args.model, "--modes", mode, "--batch", str(args.batch), "--prompt",
                       str(args.prompt), "--new", str(args.new), "--micro", micro, "--remat",
                       remat, "--lora-rank", str(args.lora_rank), "--reps", str(args.reps),
                       "--logprob-chunk", str(args.logprob_chunk)]
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")),
                            None)
                if line is None:   # out of memory, most often: report it as a row, go on
                    err = (res.stderr.strip().splitlines() or ["no output"])[-1][:120]
                    rows.append(dict(model=args.model, mode=mode, micro=int(micro),
                                     remat=remat == "1", error=err))
                else:
                    rows.append(json.loads(line[len("RESULT "):]))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nGRPO update: {args.model}, {args.batch} completions x ({args.prompt} prompt + "
          f"{args.new} new) tokens, bf16 compute, log-prob chunks of {args.logprob_chunk}, "
          f"device: {rows[0].get('device', '?')}\n")
    print("| mode | micro | remat | trainable params | peak memory (GB) | compile (s) | "
          "step (s) | tokens/s | model TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['micro']} | {r['remat']} | failed: {r['error']} |")
            continue
        mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.0f}%"
        print(f"| {r['mode']} | {r['micro']} | {r['remat']} | {r['trainable'] / 1e6:,.1f}M | "
              f"{r['peak_gb']:.2f} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
              f"{r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {mfu} |")


if __name__ == "__main__":
    main()
