"""One layer's decode attention step: the Pallas kernel (`aha_utils.kernels.decode_attention`)
against XLA.

    python -m benchmarks.decode_attention        # three shapes (SAMPLER_TUNING.md, round 3)
    python -m benchmarks.decode_attention --shapes 128x512x272 --sweep

A shape is ROWSxSLOTSxFILLED: every row has decoded up to position FILLED - 2 and this step's token
is at FILLED - 1, so slots FILLED..SLOTS-1 are empty (-1), as early in a decode. A step is what one
layer does between its q/k/v projection and its output projection: qk-norm, rotary embedding, the
cache write and the attention (`kernels.decode_step.attention` against `Attention._decode`),
`--reps` steps inside one jitted loop, so Python dispatch is not timed; the steps take turns over
copies of the cache that together exceed the GPU's L2, so the reads come from HBM, as in the
sampler. Gemma 3 1B's attention in the GPU wing's layout (one q/k/v matrix): 1 kv head, 4
query heads, head size 256, a sliding-window layer (512), bf16. `--sweep` times every combination
of block, target programs, warps and stages, fastest first. On a CPU the kernel runs in Pallas's
interpreter: a smoke test of this script, not a timing.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.kernels import decode_step
from aha_utils.kernels.decode_attention import QKV_SPLITS
from aha_utils.kernels.decode_residual import split_matmul
from aha_utils.kernels.decode_weights import qkv_weights
from aha_utils.kv_cache import LayerCache
from aha_utils.model import Attention

CONFIG = ModelConfig.gemma3_1b()
SPILL_BYTES = 256 * 2**20    # several times a GPU's L2 (H100: 50 MB; H200: 60 MB)
MAX_COPIES = 16              # smaller caches (not those three) stay partly in L2


def inputs(rows: int, slots: int, filled: int, seed: int = 0):
    """`(attn, qkv)` a sliding-window layer and its q/k/v as one matrix (the GPU wing's
    layout: one q/k/v matmul), its cache (positions 0..filled-2 in slots 0..filled-2), this
    step's input `[B, 1, D]` and positions `[B, 1]` (filled - 1)."""
    attn = Attention(CONFIG, "local", jnp.bfloat16, nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    shape = (rows, slots, CONFIG.num_kv_heads, CONFIG.head_dim)
    k, v = (jnp.asarray(rng.standard_normal(shape), jnp.bfloat16) for _ in range(2))
    pos = np.where(np.arange(slots) < filled - 1, np.arange(slots), -1).astype(np.int32)
    x = jnp.asarray(rng.standard_normal((rows, 1, CONFIG.d_model)), jnp.bfloat16)
    return ((attn, qkv_weights(attn)), x, jnp.full((rows, 1), filled - 1, jnp.int32),
            LayerCache(k, v, jnp.asarray(np.tile(pos, (rows, 1)))))


def seconds_per_step(step, attn, x, positions, cache: LayerCache, reps: int) -> float:
    """Seconds per step, the steps taking turns over copies of the cache that together exceed
    `SPILL_BYTES`: one cache of the default shapes (17-42 MB) fits in an H100's 50 MB L2, so
    steps over the same one would time L2 reads; in the sampler each layer has its own."""
    size = sum(a.nbytes for a in cache)
    copies = min(MAX_COPIES, reps, -(-SPILL_BYTES // size))      # unrolled in the loop body
    caches = tuple(jax.tree.map(jnp.copy, cache) for _ in range(copies))
    rounds = max(1, reps // copies)

    @nnx.jit
    def loop(attn, x, caches):
        def body(_, carry):    # the outputs are carried, so neither path can drop its attention
            steps = [step(attn, x, positions, c) for c in carry[1]]   # [B, K, G, hd], cache
            return tuple(out for out, _ in steps), tuple(c for _, c in steps)
        out = jnp.zeros((x.shape[0], CONFIG.num_kv_heads, CONFIG.num_heads // CONFIG.num_kv_heads,
                         CONFIG.head_dim), x.dtype)
        return jax.lax.fori_loop(0, rounds, body, ((out,) * copies, caches))

    jax.block_until_ready(loop(attn, x, caches))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(loop(attn, x, caches))
        best = min(best, time.perf_counter() - t)
    return best / (rounds * copies)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode_attention",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="128x512x272,64x640x384,128x512x512")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    interpret = jax.default_backend() != "gpu"
    print(f"{jax.devices()[0].device_kind}: one layer's decode attention step (norm, rotate, "
          f"write, attend), {CONFIG.num_kv_heads} kv head x {CONFIG.num_heads} queries x "
          f"{CONFIG.head_dim}, bf16, window {CONFIG.sliding_window}, {args.reps} steps in one "
          "loop" + (" (kernel interpreted: not a timing)" if interpret else "") + "\n")
    print("| rows | slots | filled | impl | block | programs | warps | stages | us | "
          "GB/s of filled slots |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = ([dict(block=b, programs=n, num_warps=w, num_stages=s)
                for b, n, w, s in itertools.product((16, 32, 64), (132, 264, 528), (4, 8),
                                                    (2, 3, 4))]
               if args.sweep else [{}])
    for shape in args.shapes.split(","):
        rows, slots, filled = map(int, shape.split("x"))
        attn, x, positions, cache = inputs(rows, slots, filled)
        def xla_step(layer, x, positions, cache):
            return layer[0]._decode(x, positions, cache)
        results = [("xla", {}, seconds_per_step(xla_step, attn, x, positions, cache, args.reps))]
        for cfg in configs:
            def kernel_step(layer, x, positions, cache, cfg=cfg):
                qkv = split_matmul(x[:, 0], layer[1], QKV_SPLITS, interpret=interpret)
                return decode_step.attention(layer[0], qkv, positions[:, 0], cache,
                                             interpret=interpret, **cfg)
            try:
                results.append(("kernel", cfg, seconds_per_step(kernel_step, attn, x, positions,
                                                                cache, args.reps)))
            except Exception as e:   # a config Triton cannot compile (e.g. out of shared memory)
                print(f"| {rows} | {slots} | {filled} | kernel | {cfg} failed: {str(e)[:80]} |")
        filled_bytes = 2 * rows * filled * CONFIG.head_dim * 2           # k and v, bf16
        for impl, cfg, sec in sorted(results, key=lambda r: r[2]):
            knobs = [cfg.get(k, "default" if impl == "kernel" else "")
                     for k in ("block", "programs", "num_warps", "num_stages")]
            print(f"| {rows} | {slots} | {filled} | {impl} | " + " | ".join(map(str, knobs)) +
                  f" | {sec * 1e6:.1f} | {filled_bytes / sec / 1e9:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
