"""One layer's decode attention: the Pallas kernel (`aha_utils.decode_attention`) against XLA.

    python -m aha_utils.bench.decode_attention                       # the README's three shapes
    python -m aha_utils.bench.decode_attention --shapes 128x512x272 --sweep

A shape is ROWSxSLOTSxFILLED: every row has decoded up to position FILLED - 1, so slots
FILLED..SLOTS-1 are empty (-1), as early in a decode. Each step writes one key into the cache
and attends, `--reps` steps inside one jitted loop, so Python dispatch is not timed. Gemma 3's
attention: 1 kv head, 4 query heads, head size 256, window 512, bf16. `--sweep` times every
combination of block, target programs, warps and stages, fastest first. On a CPU the kernel runs
in Pallas's interpreter: a smoke test of this script, not a timing.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from aha_utils import decode_attention as fused
from aha_utils.model import NEG_INF, LayerCache

WINDOW, GROUP, HEAD_DIM = 512, 4, 256


def xla_attention(q, cache: LayerCache, q_pos):
    """The model's XLA decode path (`Attention._decode` without the kernel)."""
    s = jnp.einsum("bkgh,bskh->bkgs", q, cache.k, preferred_element_type=jnp.float32)
    ok = (cache.pos >= 0) & (cache.pos <= q_pos[:, None]) & (q_pos[:, None] - cache.pos < WINDOW)
    p = jax.nn.softmax(jnp.where(ok[:, None, None], s, NEG_INF), axis=-1)
    return jnp.einsum("bkgs,bskh->bkgh", p.astype(cache.v.dtype), cache.v)


def inputs(rows: int, slots: int, filled: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((rows, 1, GROUP, HEAD_DIM)) * 0.1, jnp.bfloat16)
    k, v = (jnp.asarray(rng.standard_normal((rows, slots, 1, HEAD_DIM)), jnp.bfloat16)
            for _ in range(2))
    pos = np.where(np.arange(slots) < filled, np.arange(slots), -1).astype(np.int32)
    return q, LayerCache(k, v, jnp.asarray(np.tile(pos, (rows, 1)))), \
        jnp.full((rows,), filled - 1, jnp.int32)


def seconds_per_step(attend, q, cache: LayerCache, q_pos, reps: int) -> float:
    slot = q_pos[0] % cache.k.shape[1]

    @jax.jit
    def loop(q, cache):
        def body(_, carry):
            q, cache = carry
            k_new = q[:, None, :, 0]                                  # [B, 1, K, hd]
            cache = cache._replace(k=jax.lax.dynamic_update_slice_in_dim(cache.k, k_new, slot, 1))
            return attend(q, cache, q_pos).astype(q.dtype), cache
        return jax.lax.fori_loop(0, reps, body, (q, cache))

    jax.block_until_ready(loop(q, cache))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(loop(q, cache))
        best = min(best, time.perf_counter() - t)
    return best / reps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m aha_utils.bench.decode_attention",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="128x512x272,64x640x384,128x512x512")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    interpret = jax.default_backend() != "gpu"
    print(f"{jax.devices()[0].device_kind}: one layer's decode attention, 1 kv head x {GROUP} "
          f"queries x {HEAD_DIM}, bf16, window {WINDOW}, {args.reps} steps in one loop"
          + (" (kernel interpreted: not a timing)" if interpret else "") + "\n")
    print("| rows | slots | filled | impl | block | programs | warps | stages | us | "
          "GB/s of filled slots |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = ([dict(block=b, programs=n, num_warps=w, num_stages=s)
                for b, n, w, s in itertools.product((64, 128), (132, 264, 528, 1056), (4, 8),
                                                    (2, 3))]
               if args.sweep else [{}])
    for shape in args.shapes.split(","):
        rows, slots, filled = map(int, shape.split("x"))
        q, cache, q_pos = inputs(rows, slots, filled)
        results = [("xla", {}, seconds_per_step(xla_attention, q, cache, q_pos, args.reps))]
        for cfg in configs:
            def attend(q, c, qp, cfg=cfg):
                return fused.decode_attention(q, c.k, c.v, c.pos, qp, window=WINDOW, softcap=None,
                                              interpret=interpret, **cfg)
            try:
                results.append(("kernel", cfg, seconds_per_step(attend, q, cache, q_pos,
                                                                args.reps)))
            except Exception as e:   # a config Triton cannot compile (e.g. out of shared memory)
                print(f"| {rows} | {slots} | {filled} | kernel | {cfg} failed: {str(e)[:80]} |")
        filled_bytes = 2 * rows * filled * HEAD_DIM * 2                 # k and v, bf16
        for impl, cfg, sec in sorted(results, key=lambda r: r[2]):
            knobs = [cfg.get(k, "default" if impl == "kernel" else "")
                     for k in ("block", "programs", "num_warps", "num_stages")]
            print(f"| {rows} | {slots} | {filled} | {impl} | " + " | ".join(map(str, knobs)) +
                  f" | {sec * 1e6:.1f} | {filled_bytes / sec / 1e9:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
