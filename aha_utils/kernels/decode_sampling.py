"""A decode step's vocabulary projection and token draw as two GPU kernels (Pallas on Triton):
the logits `h @ emb^T` are made, reduced and drawn from tile by tile, never written to memory,
and a small kernel picks the token among the tiles.

Why: at 64 rows the 1B's logits are a `[64, 262144]` float32 array written once and read twice
a step. How: each tile draws its own token by inverse CDF and keeps four numbers per row (its
logsumexp at T = 1, the token, its logit, and a Gumbel-perturbed log mass at T); the pick takes
the tile of the largest key (exact: P(token) = P(tile) P(token | tile)) and returns the token
and its log-prob at T = 1. Greedy is the same with no noise. The noise is a counter hash
(murmur3's finaliser) keyed by the step's key and the global row, since `jax.random` cannot run
inside a Triton kernel, so rows split over devices get their own noise. Used for greedy and
plain sampling (no top-k / top-p) up to `MAX_ROWS` rows a device, where it beat XLA. Tests:
greedy against `argmax` / `log_softmax`, draws against `softmax(logits / T)`. Measurements:
docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils.kernels import early_launch
from aha_utils.kernels.decode_residual import MIN_TILE, largest_tile, pad_rows, row_block
from aha_utils.sharding import DATA, on_each_devices_rows, rows_per_device, rows_split_only

F32 = jnp.float32
U32 = jnp.uint32
# Tuned on an H100 (the 1B at 64 rows; measurements: docs/SAMPLER_TUNING.md).
BLOCK = 128                # tokens per tile (with 8 warps and 4 stages)
ROWS_PER_PROGRAM = 64
MAX_ROWS = 64              # rows a device, at most, for which the sampler uses the kernel
# The pick over tiles: rows a program, tiles a step, warps.
PICK_ROWS, PICK_CHUNK, PICK_WARPS = 1, 2048, 4

def fits(d_model: int, vocab_size: int, rows: int) -> bool:
    """Whether the wing draws `rows` rows traced now with this kernel: a width and a
    vocabulary that Triton's tiles divide, the rows on one device or split over the `data` axis
    of the mesh in context, at most `MAX_ROWS` of them a device (past that cuBLAS's GEMM wins)."""
    return bool(largest_tile(d_model, 128) and largest_tile(vocab_size, BLOCK)
                and rows_split_only() and rows_per_device(rows) <= MAX_ROWS)


def _mix(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    x = x ^ jax.lax.shift_right_logical(x, U32(16))
    x = x * U32(0x85EBCA6B)
    x = x ^ jax.lax.shift_right_logical(x, U32(13))
    x = x * U32(0xC2B2AE35)
    return x ^ jax.lax.shift_right_logical(x, U32(16))


def hash_uniform(seed: jax.Array, rows: jax.Array, counters: jax.Array) -> jax.Array:
    """Uniform noise in (0, 1), float32 shaped like `counters` (`[R]` or `[R, C]` int32), from
    uint32 `seed []` and int32 global row ids `[R]`: a pure function of the three, the same
    inside the kernel and out. murmur3's finaliser once per counter, twice per row."""
    return keyed_uniform(row_keys(seed, rows), counters)


def row_keys(seed: jax.Array, rows: jax.Array) -> jax.Array:
    """uint32 `[R]`: each global row's key under `seed`, for `keyed_uniform`."""
    return _mix(seed ^ _mix(rows.astype(U32) * U32(0x9E3779B9) + U32(1)))


def keyed_uniform(keys: jax.Array, counters: jax.Array) -> jax.Array:
    """`hash_uniform` from the rows' keys (`row_keys`), made once for several counters."""
    if counters.ndim == 2:
        keys = keys[:, None]
    bits = _mix(counters.astype(U32) * U32(0x9E3779B1) + keys)
    return (jax.lax.shift_right_logical(bits, U32(8)).astype(F32) + 0.5) * (1.0 / (1 << 24))


def key_seed(words) -> jax.Array:
    """A uint32 seed `[]` from a `jax.random` key's words (`jax.random.key_data`, uint32 `[W]`
    or a sequence of W scalars): each word mixed in turn, so that the draw needs no
    `jax.random` call of its own (a split and a draw of bits were four kernels a step)."""
    seed = U32(0x243F6A88)
    for word in words:
        seed = _mix(seed ^ word)
    return seed


def _kernel(words_ref, temp_ref, rows_ref, h_ref, e_ref, lse_ref, key_ref, tok_ref, logit_ref,
            *, k_block: int, softcap: float | None, greedy: bool):
    """One (row tile, vocabulary tile): the tile's logits in registers, their logsumexp at
    T = 1, a token drawn from the tile (greedy: its first largest logit) with its logit, and
    the tile's key for the pick among tiles: its Gumbel-perturbed log mass at T (greedy: its
    largest logit)."""
    rows, width = h_ref.shape
    block = e_ref.shape[0]

    def step(i, acc):
        ks = pl.ds(pl.multiple_of(i * k_block, k_block), k_block)
        return acc + jnp.dot(h_ref[:, ks], e_ref[:, ks].T, preferred_element_type=F32)

    z = jax.lax.fori_loop(0, width // k_block, step, jnp.zeros((rows, block), F32))  # [R, C]
    if softcap is not None:
        z = jnp.tanh(z / softcap) * softcap
    top = jnp.max(z, axis=1)                                                      # [R]
    token = pl.program_id(1) * block + jax.lax.broadcasted_iota(jnp.int32, (rows, block), 1)
    lse = lambda: top + jnp.log(jnp.sum(jnp.exp(z - top[:, None]), axis=1))      # [R] at T = 1
    if greedy:   # the first largest logit
        lse_ref[...] = lse()
        pick = jnp.min(jnp.where(z == top[:, None], token, jnp.iinfo(jnp.int32).max), axis=1)
        key_ref[...] = top
    else:
        t = temp_ref[0]
        p = jnp.exp((z - top[:, None]) / t)                                        # [R, C]
        cdf = jnp.cumsum(p, axis=1)                                               # [R, C]
        mass = jnp.max(cdf, axis=1)          # the last: p >= 0; >= 1, the max's p being 1

        @pl.when(t == 1.0)            # GRPO's temperature: p is the T = 1 exp already
        def _():
            lse_ref[...] = top + jnp.log(mass)

        @pl.when(t != 1.0)
        def _():
            lse_ref[...] = lse()

        # The words one by one: Triton has no slices of a loaded array.
        seed = key_seed([words_ref[i] for i in range(words_ref.shape[0])])
        keys = row_keys(seed, rows_ref[...])                                      # [R]
        counter = jnp.full((rows,), 2 * pl.program_id(1), jnp.int32)              # [R]
        u = keyed_uniform(keys, counter)
        gumbel = -jnp.log(-jnp.log(keyed_uniform(keys, counter + 1)))
        # The first token whose cumulative mass passes u * mass; u * mass can round up to
        # mass (u < 1 by 2^-25), hence the clamp.
        inside = jnp.sum((cdf <= (u * mass)[:, None]).astype(jnp.int32), axis=1)
        pick = pl.program_id(1) * block + jnp.minimum(inside, block - 1)
        key_ref[...] = top / t + jnp.log(mass) + gumbel
    tok_ref[...] = pick
    logit_ref[...] = jnp.max(jnp.where(token == pick[:, None], z, -jnp.inf), axis=1)


def _pick_kernel(lse_ref, key_ref, tok_ref, logit_ref, tok_out, lp_out, *, rows: int,
                 chunk: int):
    """`rows` rows of the `[N, tiles]` statistics: the tile with the largest key (the first of
    equal ones), its token, and that token's logit minus the logsumexp over tiles. `chunk`
    tiles a step, masked past the last."""
    from jax.experimental.pallas import triton as pl_triton

    tiles = lse_ref.shape[1]
    lanes = pl.program_id(0) * rows + jnp.arange(rows)                        # [R]

    def step(c, carry):
        run_max, run_sum, best, best_tile = carry
        t = c * chunk + jnp.arange(chunk)                                     # [C]
        inside = jnp.broadcast_to((t < tiles)[None, :], (rows, chunk))
        load = lambda ref: pl_triton.load(ref.at[lanes[:, None], t[None, :]], mask=inside,
                                          other=-jnp.inf)                     # [R, C]
        lse, key = load(lse_ref), load(key_ref)
        new_max = jnp.maximum(run_max, jnp.max(lse, axis=1))                  # [R]
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(
            jnp.exp(lse - new_max[:, None]), axis=1)
        top = jnp.max(key, axis=1)                                            # [R]
        first = jnp.min(jnp.where(key == top[:, None], t[None, :], tiles), axis=1)
        better = top > best                       # strictly: an earlier chunk keeps a tie
        return new_max, run_sum, jnp.where(better, top, best), jnp.where(better, first,
                                                                         best_tile)

    init = (jnp.full((rows,), -jnp.inf, F32), jnp.zeros((rows,), F32),
            jnp.full((rows,), -jnp.inf, F32), jnp.zeros((rows,), jnp.int32))
    run_max, run_sum, _, tile = jax.lax.fori_loop(0, pl.cdiv(tiles, chunk), step, init)
    tok_out[...] = tok_ref[lanes, tile]
    lp_out[...] = logit_ref[lanes, tile] - (run_max + jnp.log(run_sum))


@functools.partial(jax.jit, static_argnames=("greedy", "softcap", "interpret", "block",
                                             "num_warps", "num_stages"))
def draw(h: jax.Array, emb: jax.Array, rng: jax.Array, temperature, *, greedy: bool,
         softcap: float | None, interpret: bool = False, block: int = BLOCK,
         num_warps: int = 8, num_stages: int = 4) -> tuple[jax.Array, jax.Array]:
    """One token per row from `softmax(softcap(h @ emb^T) / temperature)` (greedy: the argmax),
    and its log-prob at temperature 1: `(tokens int32 [N], logprobs float32 [N])`.

    h: `[N, D]` final-normed hidden states; emb: `[V, D]` the tied embedding, same dtype;
    rng: a `jax.random` key; temperature: a traced scalar > 0 (unused when greedy); softcap:
    the final logit soft-cap or None. `interpret=True` runs the kernel in Pallas's interpreter
    (CPU tests). Tuning: `block` tokens per tile, Triton's warps and stages. Under a mesh in
    context, each device takes its own rows (a `shard_map` over `data`)."""
    n, d = h.shape
    v = emb.shape[0]
    if emb.ndim != 2 or emb.shape[1] != d or emb.dtype != h.dtype:
        raise ValueError(f"draw: h {h.shape} {h.dtype} and emb {emb.shape} {emb.dtype} do not "
                         "fit [N, D] and [V, D] of one dtype")
    block, k_block = largest_tile(v, block), largest_tile(d, 128)
    if not block or not k_block:
        raise ValueError(f"draw: a vocabulary of {v} and a width of {d} need a power-of-two "
                         f"factor of at least {MIN_TILE}; use the XLA path "
                         "(sampling.select_tokens) for this model")
    words = jax.random.key_data(rng).reshape(-1).astype(U32)
    temp = jnp.asarray(temperature, F32).reshape(1)
    local = functools.partial(_draw_rows, greedy=greedy, softcap=softcap, interpret=interpret,
                              block=block, k_block=k_block, num_warps=num_warps,
                              num_stages=num_stages)
    return tuple(on_each_devices_rows(
        local, (words, temp, jnp.arange(n, dtype=jnp.int32), h, emb),
        in_specs=(P(), P(), P(DATA), P(DATA), P()), out_specs=(P(DATA),) * 2,
        rows=n, what="decode_sampling.draw"))


def _draw_rows(words, temp, rows, h, emb, *, greedy, softcap, interpret, block, k_block,
               num_warps, num_stages):
    """`draw` on the rows of one device: the tiles' statistics, then the pick over tiles."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    n = h.shape[0]
    stats = _tiles(words, temp, rows, h, emb, greedy=greedy, softcap=softcap,
                   interpret=interpret, block=block, k_block=k_block, num_warps=num_warps,
                   num_stages=num_stages)                             # [N', V / block] each
    padded, tiles = stats[0].shape
    whole = pl.BlockSpec((padded, tiles), lambda i: (0, 0))
    per_row = pl.BlockSpec((PICK_ROWS,), lambda i: (i,))
    tok, lp = pl.pallas_call(
        early_launch.first(functools.partial(
            _pick_kernel, rows=PICK_ROWS, chunk=min(PICK_CHUNK, pl.next_power_of_2(tiles))),
            interpret=interpret),
        grid=(padded // PICK_ROWS,),
        in_specs=[whole] * 4,
        out_specs=[per_row] * 2,
        out_shape=[jax.ShapeDtypeStruct((padded,), jnp.int32),
                   jax.ShapeDtypeStruct((padded,), F32)],
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=PICK_WARPS, num_stages=1),
    )(*stats)
    return tok[:n], lp[:n]


def _tiles(words, temp, rows, h, emb, *, greedy, softcap, interpret, block, k_block, num_warps,
           num_stages):
    """The tile kernel on the rows of one device, padded to its row block: `(logsumexp at
    T = 1, key, drawn token, its logit)`, each `[N', V / block]`, N' the padded rows."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    v, d = emb.shape
    rows_each = row_block(h.shape[0], ROWS_PER_PROGRAM)
    h, rows = pad_rows(h, rows_each), pad_rows(rows, rows_each)   # results of padding dropped
    padded = h.shape[0]
    grid = (padded // rows_each, v // block)
    per_tile = pl.BlockSpec((rows_each, pl.squeezed), lambda i, j: (i, j))
    vector = lambda size: pl.BlockSpec((size,), lambda i, j: (0,))
    return tuple(pl.pallas_call(
        early_launch.first(functools.partial(_kernel, k_block=k_block, softcap=softcap,
                                             greedy=greedy), interpret=interpret),
        grid=grid,
        in_specs=[vector(words.shape[0]), vector(1),
                  pl.BlockSpec((rows_each,), lambda i, j: (i,)),
                  pl.BlockSpec((rows_each, d), lambda i, j: (i, 0)),
                  pl.BlockSpec((block, d), lambda i, j: (j, 0))],
        out_specs=[per_tile] * 4,
        out_shape=[jax.ShapeDtypeStruct((padded, v // block), F32)] * 2
                  + [jax.ShapeDtypeStruct((padded, v // block), jnp.int32),
                     jax.ShapeDtypeStruct((padded, v // block), F32)],
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
    )(words, temp, rows, h, emb))
