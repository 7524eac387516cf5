"""Can one kernel with a grid-wide barrier beat the kernel boundaries it replaces? The MLP half of
a Gemma 3 1B decode layer at 64 rows, timed two ways on the GPU:

- **as the sampler runs it**: XLA's GEMM for `x @ [gate | up]`, XLA's fusion for
  `gelu(gate) * up`, and cuBLAS for the down projection's split-K partials (three kernels);
- **as one Pallas (Triton) kernel** of 108 programs, one per 64 hidden units. Phase A: each
  program multiplies `x` by its 64 gate and 64 up columns and writes its slice of `h = gelu(gate)
  * up` to memory. Then every program waits at a barrier (an atomic counter in memory) until all
  108 have written. Phase B: each program takes one of 6 slices of the hidden units and 64 of
  the model's 1,152 output columns, and writes that split-K partial of `h @ down`.

Both are followed by the same small join (sum the partials, RMS-norm), so that layers chain: the
timed loop runs `--layers` layers, each with its own weights (more bytes than L2 holds), and
prints microseconds a layer, the join included, for each path.

    python -m benchmarks.experiments.fused_mlp_barrier                   # on a Hopper GPU
    python -m benchmarks.experiments.fused_mlp_barrier --barrier none    # the barrier's cost
    python -m benchmarks.experiments.fused_mlp_barrier --lower           # anywhere: for CUDA

Design decisions:
- A barrier inside a kernel only works if all of its programs are resident at once, which
  Triton does not promise. 108 programs of this size on an H100's or H200's 132 SMs are.
  The early-launch trigger (`early_launch.first`) fires only once every program has started,
  so the next kernel cannot take an SM that one of these programs still needs.
- The barrier orders memory like the attention kernel's atomic merge did (round 13 of
  `docs/SAMPLER_TUNING.md`): a CTA barrier orders every thread's stores before one
  atomic add (acquire/release), and phase B reads `h` with volatile loads, never from this
  SM's L1.
- `--barrier reset` (default): arrive, spin until the count is 108, then a second counter
  resets both once all have left. `--barrier epoch`: one counter that only grows. A program
  that arrives at count t waits for the next multiple of 108 above t, so there is no reset
  and no second atomic.
- `--prefetch`: the down weights are stored as one contiguous tile per program
  (`tile_down`). Before the barrier, each program asks L2 for its own tile
  (`l2_prefetch.share`), so the wait streams the phase-B weights.

Measured (NVIDIA H100 80GB HBM3, jax 0.11.2, 8 layers; us a layer, the join included; each row
one process, on three machines in turn):

    variant                                     sampler's path          fused
    reset barrier, 4 warps, 4 stages (default)  28.37; 29.66; 30.95,    28.87; 29.84; 28.72,
                                                33.09, 30.42            29.22, 29.20
    reset, 3 stages                             28.63                   28.73
    reset, 8 warps                              28.80                   28.33
    epoch                                       29.51                   29.56
    reset + prefetch                            29.71                   29.49
    epoch + prefetch                            29.20; 30.31            28.67; 29.29
    epoch + prefetch, 8 warps                   30.60                   30.14
    no barrier (wrong numbers)                  28.39; 30.26, 31.53     26.56; 27.20, 27.20

The fused kernel's sums agree with the sampler's path to 3e-3 of the largest value (the bf16
rounding of `h`), and the counters end at 0 (reset) or at 108 (epoch). The fused kernel keeps to
28.3-30.1 us on every machine. On the first two machines the three kernels took 28.4-30.6 us and
the fused kernel was within 0.5 us of them either way; on the third they took 30.3-33.1 us and the
fused kernel was 1.0-3.9 us faster. That spread is between processes, in the XLA and cuBLAS path
only. The barrier costs about 2 us (the no-barrier rows), which is most of what the fusion saves.
On average the fusion saves about 1 us of a 30 us layer (about 26 us of a 1,600 us step, under
2%). That is too little for a counter threaded through the decode loop, a path that Pallas's
interpreter cannot run (it runs programs one after another, so a barrier would wait forever), and
a kernel that hangs if its programs are ever not all resident. It was not put in the sampler. In
an earlier harness that sliced each layer's weights out of one stacked array (XLA copied them
first, so both paths were about twice as slow), K steps of 64 and 3 phase-B slices were 8 to 11 us
slower, and plain loads in phase B were no faster than volatile ones.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from aha_utils.kernels import early_launch, l2_prefetch
from aha_utils.kernels.decode_residual import DOWN_SPLITS, split_matmul

F32, BF16 = jnp.float32, jnp.bfloat16
B, D, F = 64, 1152, 6912          # rows, the 1B's width and hidden units
BN = 64                           # phase A: hidden units a program
PROGRAMS = F // BN                # 108


def tile_down(wd, slices: int):
    """Down weights `[F, D]` as `[PROGRAMS, F / slices, GN]`: program p's phase-B tile
    contiguous (p = slice * (PROGRAMS / slices) + column group)."""
    per = PROGRAMS // slices
    gn = D // per
    t = wd.reshape(slices, F // slices, per, gn).transpose(0, 2, 1, 3)   # [S, per, F/S, GN]
    return t.reshape(PROGRAMS, F // slices, gn)


def _barrier(cnt_ref, mode: str):
    """Wait until every program has arrived (see the module's docstring for the two modes)."""
    from jax.experimental.pallas import triton as plt

    count = lambda c: plt.atomic_add(cnt_ref, (0,), jnp.int32(0))
    plt.debug_barrier()                          # every thread's stores before the arrival
    t = plt.atomic_add(cnt_ref, (0,), jnp.int32(1))
    if mode == "epoch":
        target = (t // PROGRAMS + 1) * PROGRAMS
        lax.while_loop(lambda c: c < target, count, t + 1)
        return
    lax.while_loop(lambda c: c < PROGRAMS, count, jnp.int32(0))
    left = plt.atomic_add(cnt_ref, (1,), jnp.int32(1))

    @pl.when(left == PROGRAMS - 1)
    def _reset():
        cnt_ref[0] = jnp.int32(0)
        cnt_ref[1] = jnp.int32(0)


def _kernel(flat_ref, x_ref, wgu_ref, wd_ref, cnt_in, h_ref, out_ref, cnt_ref, *, slices: int,
            block_k: int, barrier: str, prefetch: bool):
    from jax.experimental.pallas import triton as plt

    del cnt_in                                   # aliased to cnt_ref
    p = pl.program_id(0)
    c0 = pl.multiple_of(p * BN, BN)

    def step_a(i, accs):
        ks = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
        xk = x_ref[:, ks]                                                          # [B, BK]
        return (accs[0] + jnp.dot(xk, wgu_ref[ks, pl.ds(c0, BN)], preferred_element_type=F32),
                accs[1] + jnp.dot(xk, wgu_ref[ks, pl.ds(F + c0, BN)], preferred_element_type=F32))

    zero = jnp.zeros((B, BN), F32)
    gate, up = lax.fori_loop(0, D // block_k, step_a, (zero, zero))                # [B, BN] each
    rounded = lambda a: a.astype(BF16).astype(F32)   # as XLA's bf16 outputs are
    h = rounded(jax.nn.gelu(rounded(gate), approximate=True)) * rounded(up)          # [B, BN]
    h_ref[:, pl.ds(c0, BN)] = h.astype(BF16)

    if prefetch:
        l2_prefetch.share(flat_ref, p, PROGRAMS)
    if barrier != "none":
        _barrier(cnt_ref, barrier)

    per = PROGRAMS // slices
    s, n = p // per, p % per
    k0 = s * (F // slices)

    def step_b(i, acc):
        kt = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
        ks = pl.ds(pl.multiple_of(k0 + i * block_k, block_k), block_k)
        hk = plt.load(h_ref.at[:, ks], volatile=True)                              # [B, BK]
        return acc + jnp.dot(hk, wd_ref[p, kt, :], preferred_element_type=F32)

    gn = D // per
    acc = lax.fori_loop(0, (F // slices) // block_k, step_b, jnp.zeros((B, gn), F32))
    out_ref[s, :, pl.ds(n * gn, gn)] = acc


def fused(x, wgu, wd_tiles, cnt, *, slices: int, block_k: int, warps: int, stages: int,
          barrier: str, prefetch: bool):
    """`([slices, B, D] float32 partials, counter)` of the MLP of `x [B, D]`: gate/up `[D, 2F]`
    and down weights as `tile_down` stores them; `cnt` `[2]` int32, the barrier's counters."""
    from jax.experimental.pallas import triton as plt

    gn = wd_tiles.shape[-1]
    whole = lambda *shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))
    kernel = functools.partial(_kernel, slices=slices, block_k=block_k, barrier=barrier,
                               prefetch=prefetch)
    _, parts, cnt = pl.pallas_call(
        early_launch.first(kernel, interpret=False),
        grid=(PROGRAMS,),
        in_specs=[l2_prefetch.spec(wd_tiles.reshape(-1)), whole(B, D), whole(D, 2 * F),
                  whole(PROGRAMS, F // slices, gn), whole(2)],
        out_specs=[whole(B, F), whole(slices, B, D), whole(2)],
        out_shape=[jax.ShapeDtypeStruct((B, F), BF16), jax.ShapeDtypeStruct((slices, B, D), F32),
                   jax.ShapeDtypeStruct((2,), jnp.int32)],
        input_output_aliases={4: 2},
        compiler_params=plt.CompilerParams(num_warps=warps, num_stages=stages),
    )(wd_tiles.reshape(-1), x, wgu, wd_tiles, cnt)
    return parts, cnt


def sampler_path(x, wgu, wd_t):
    """The sampler's MLP at 64 rows (`model.MLP.partials` on the decode layout):
    `[DOWN_SPLITS, B, D]` float32."""
    gate, up = jnp.split(x @ wgu, 2, axis=-1)                                      # [B, F] each
    h = jax.nn.gelu(gate, approximate=True) * up                                   # [B, F]
    return split_matmul(h, wd_t, DOWN_SPLITS, transposed=True, interpret=False)


def join(parts):
    y = parts.sum(0)                                                               # [B, D]
    return (y * lax.rsqrt(jnp.mean(y * y, -1, keepdims=True) + 1e-6)).astype(BF16)


def seconds(f, *args, reps: int = 5) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--barrier", choices=("reset", "epoch", "none"), default="reset")
    ap.add_argument("--prefetch", action="store_true")
    ap.add_argument("--slices", type=int, default=6, help="phase B's slices of F (3 or 6)")
    ap.add_argument("--block-k", type=int, default=128)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20, help="passes over the layers a timing")
    ap.add_argument("--lower", action="store_true", help="only lower the kernel for CUDA")
    args = ap.parse_args()
    per = PROGRAMS // args.slices
    if (PROGRAMS % args.slices or (F // args.slices) % args.block_k or D % per
            or (D // per) & (D // per - 1) or D // per < 16):
        raise ValueError(f"--slices {args.slices} must divide the {PROGRAMS} programs into "
                         f"groups that split {D} columns into a power of two of at least 16 "
                         f"each, and leave a multiple of --block-k {args.block_k} hidden units a "
                         "slice: 3 or 6")
    kw = {"slices": args.slices, "block_k": args.block_k, "warps": args.warps,
          "stages": args.stages, "barrier": args.barrier, "prefetch": args.prefetch}
    run = jax.jit(functools.partial(fused, **kw))
    keys = jax.random.split(jax.random.key(0), 1 + 2 * args.layers)
    x = jax.random.normal(keys[0], (B, D), F32).astype(BF16)
    cnt = jnp.zeros((2,), jnp.int32)
    layers = 1 if args.lower else args.layers
    wgu = [(jax.random.normal(keys[1 + 2 * i], (D, 2 * F), F32) * D ** -0.5).astype(BF16)
           for i in range(layers)]
    wd = [(jax.random.normal(keys[2 + 2 * i], (F, D), F32) * F ** -0.5).astype(BF16)
          for i in range(layers)]
    tiles = [tile_down(w, args.slices) for w in wd]
    if args.lower:
        text = run.trace(x, wgu[0], tiles[0], cnt).lower(lowering_platforms=("cuda",)).as_text()
        print(f"lowered for CUDA: {len(text):,} characters of StableHLO")
        return
    wd_t = [w.T.copy() for w in wd]
    print(f"{jax.devices()[0].device_kind}: 1B MLP, {B} rows, {args.layers} layers; {kw}")
    want = sampler_path(x, wgu[0], wd_t[0]).sum(0)
    got, cnt = run(x, wgu[0], tiles[0], cnt)
    err = float(jnp.max(jnp.abs(got.sum(0) - want)) / jnp.max(jnp.abs(want)))
    print(f"fused against the sampler's path: max error {err:.1e} of the largest value")

    def chain(step, x, state):
        def one_pass(_, carry):
            x, state = carry
            for i in range(args.layers):
                parts, state = step(x, i, state)
                x = join(parts)
            return x, state
        return lax.fori_loop(0, args.rounds, one_pass, (x, state))

    paths = {
        "sampler's three kernels": lambda x, i, s: (sampler_path(x, wgu[i], wd_t[i]), s),
        "fused": lambda x, i, s: fused(x, wgu[i], tiles[i], s, **kw),
    }
    steps = args.rounds * args.layers
    for name, step in paths.items():
        t = seconds(jax.jit(functools.partial(chain, step)), x, cnt)
        print(f"| {name:24s} | {t / steps * 1e6:7.2f} us a layer |")


if __name__ == "__main__":
    main()
