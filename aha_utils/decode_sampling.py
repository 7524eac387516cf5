"""A decode step's vocabulary projection and token draw as one GPU kernel (Pallas on Triton): the
logits `h @ emb^T` are made, reduced and drawn from tile by tile, and never written to memory.

`sampler._choose` calls `draw(...)` on GPUs for greedy decoding and for plain sampling (no top-k,
no top-p: GRPO's rollouts) where `kernel_available(...)`; elsewhere it keeps the XLA path
(`model.logits`, then `sampling.select_tokens`). Both return the same kind of tokens, and the
same log-probs: the drawn token's under the untempered softmax (tests: greedy tokens and
log-probs equal the XLA path's; sampled tokens follow `softmax(logits / T)`).

Design decisions:
- Why a kernel: at 64 rows the 1B's logits are a `[64, 262144]` float32 array, 67 MB, written by
  the projection and read twice by the draw (`sampling.two_level_sample`: each block's max, then
  its sums of `exp`), about 200 MB of traffic a step beside the embedding's 604 MB. Here each
  program computes one tile of `block` tokens for its rows in registers and writes five numbers
  per row and tile.
- The draw is `sampling.two_level_sample`'s, with the tile as the block: P(token) = P(tile)
  P(token | tile). Inside the kernel each tile draws its own candidate from its tokens, and
  keeps its max `m`, its sums of `exp` at T = 1 and at T, and the candidate's logit. Outside, a
  Gumbel-max over the tiles' masses `log sum exp(z / T)` picks the tile, and its candidate is
  the token: an exact draw, because the two levels' noises are independent. The log-prob is the
  candidate's logit minus the logsumexp of the tiles' T = 1 sums. Greedy is the same with no
  noise: the first largest logit, as `jnp.argmax` picks it.
- The candidate is an exponential race, `argmax p / E` with `p = exp((z - m) / T)` (already
  made for the tile's sum at T) and `E` standard exponential: the same law as Gumbel-max
  (`-log E` is a Gumbel), one logarithm a token instead of two. The random numbers come from
  a counter-based hash, not `jax.random` (which cannot run inside a Triton kernel): murmur3's
  32-bit finaliser over (global row, token), keyed per row by a seed drawn from the step's key.
  Rows are numbered globally, so rows split over devices get different noise. The 24 high bits
  make a uniform `u` in (0, 1), and `E = -log u`. Making them is the kernel's main cost beyond
  the embedding's bytes (H100, 1B, 64 rows: greedy decoding, no noise, 35,759 tokens/s;
  sampling with a Gumbel-max's two logarithms a token 35,259, with the race's one 35,437).
  The tile-level Gumbels are `jax.random`'s.
- Rows are taken 16, 32 or 64 at a time (padded with zero rows whose results are dropped), and
  the sampler uses the kernel only up to `MAX_ROWS` rows a device, where it wins: on an H100
  (1B, 512 new tokens) it sampled 35,437 tokens/s at 64 rows against XLA's 34,632 (+2.3%), 758
  against 762 at 1 row, 53,665-53,965 against 54,104 at 128 rows, and 68,852-71,290 against
  74,963 at 256 rows, with 64, 128 or 256 rows a program (wider programs, narrower tiles) alike.
  Past 64 rows cuBLAS's GEMM, which reads the embedding once for all rows, is the better one.
- Several devices: rows split over the `data` axis run the kernel on each device's own rows
  (`sharding.on_each_devices_rows`); an embedding split over a `model` axis keeps the XLA path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from aha_utils import early_launch
from aha_utils.decode_residual import MIN_TILE, largest_tile, pad_rows, row_block
from aha_utils.sharding import DATA, on_each_devices_rows, rows_per_device, rows_split_only

F32 = jnp.float32
U32 = jnp.uint32
BLOCK = 128                # tokens per tile (the 1B at 64 rows on an H100: 128 tokens, 8 warps
                           # and 4 stages beat 256 (no room), 4 warps and 3 stages)
ROWS_PER_PROGRAM = 64
MAX_ROWS = 64              # rows a device, at most, for which the sampler uses the kernel

USE_KERNEL: bool | None = None   # None: on GPUs. Tests set True to run the kernel,
                                 # interpreted, inside the sampler on a CPU.


def kernel_available(d_model: int, vocab_size: int, rows: int) -> bool:
    """Whether a draw of `rows` rows traced now uses this kernel: on GPUs (or with
    `USE_KERNEL`), for a width and a vocabulary that Triton's tiles divide, with the rows on one
    device or split over the `data` axis of the mesh in context (as
    `decode_attention.kernel_available`), at most `MAX_ROWS` of them a device."""
    use = jax.default_backend() == "gpu" if USE_KERNEL is None else USE_KERNEL
    if not (use and largest_tile(d_model, 128) and largest_tile(vocab_size, BLOCK)
            and rows_split_only()):
        return False
    return rows_per_device(rows) <= MAX_ROWS


def _mix(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: every input bit flips each output bit with probability ~1/2."""
    x = x ^ jax.lax.shift_right_logical(x, U32(16))
    x = x * U32(0x85EBCA6B)
    x = x ^ jax.lax.shift_right_logical(x, U32(13))
    x = x * U32(0xC2B2AE35)
    return x ^ jax.lax.shift_right_logical(x, U32(16))


def hash_exponential(seed: jax.Array, rows: jax.Array, tokens: jax.Array) -> jax.Array:
    """Standard exponential noise `[R, C]` float32 from uint32 `seed []`, int32 global row ids
    `[R]` and token ids `[R, C]`: a pure function of the three, the same inside the kernel and
    out. One finaliser a token (the row's key takes two, once a row)."""
    row_key = _mix(seed ^ _mix(rows.astype(U32) * U32(0x9E3779B9) + U32(1)))       # [R]
    bits = _mix(tokens.astype(U32) * U32(0x9E3779B1) + row_key[:, None])           # [R, C]
    u = (jax.lax.shift_right_logical(bits, U32(8)).astype(F32) + 0.5) * (1.0 / (1 << 24))
    return -jnp.log(u)                                                             # u in (0, 1)


def _kernel(seed_ref, temp_ref, rows_ref, h_ref, e_ref, max_ref, sum1_ref, sumt_ref, tok_ref,
            logit_ref, *, k_block: int, softcap: float | None, greedy: bool):
    """One (row tile, vocabulary tile): the tile's logits in registers, their max and sums of
    `exp` at T = 1 and T, and one candidate token drawn from them with its logit."""
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
    sum1 = jnp.sum(jnp.exp(z - top[:, None]), axis=1)                             # [R]
    if greedy:
        score, sumt = z, sum1
    else:
        p = jnp.exp((z - top[:, None]) / temp_ref[0])                              # [R, C]
        sumt = jnp.sum(p, axis=1)                                                  # [R]
        score = p / hash_exponential(seed_ref[0], rows_ref[...], token)            # [R, C]
    best = jnp.max(score, axis=1)
    pick = jnp.min(jnp.where(score == best[:, None], token, jnp.iinfo(jnp.int32).max), axis=1)
    max_ref[...] = top
    sum1_ref[...] = sum1
    sumt_ref[...] = sumt
    tok_ref[...] = pick
    logit_ref[...] = jnp.max(jnp.where(token == pick[:, None], z, -jnp.inf), axis=1)


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
    k_tiles, k_tokens = jax.random.split(rng)
    seed = jax.random.bits(k_tokens, (1,), U32)
    temp = jnp.asarray(temperature, F32).reshape(1)
    local = functools.partial(_tiles, greedy=greedy, softcap=softcap, interpret=interpret,
                              block=block, k_block=k_block, num_warps=num_warps,
                              num_stages=num_stages)
    stats = on_each_devices_rows(
        local, (seed, temp, jnp.arange(n, dtype=jnp.int32), h, emb),
        in_specs=(P(), P(), P(DATA), P(DATA), P()), out_specs=(P(None, DATA),) * 5,
        rows=n, what="decode_sampling.draw")
    top, sum1, sumt, cand, cand_logit = stats                             # [V / block, N] each
    lse = jax.nn.logsumexp(top + jnp.log(sum1), axis=0)                   # [N] at T = 1
    if greedy:
        tile = jnp.argmax(top, axis=0)                                     # the first largest
    else:
        mass = top / temp[0] + jnp.log(sumt)                               # [V / block, N]
        tile = jnp.argmax(mass + jax.random.gumbel(k_tiles, mass.shape, F32), axis=0)
    pick = lambda x: jnp.take_along_axis(x, tile[None], axis=0)[0]         # [N]
    return pick(cand), pick(cand_logit) - lse


def _tiles(seed, temp, rows, h, emb, *, greedy, softcap, interpret, block, k_block, num_warps,
           num_stages):
    """The kernel on the rows of one device: `(max, sum at T = 1, sum at T, candidate, its
    logit)`, each `[V / block, N]`."""
    from jax.experimental.pallas import triton as pl_triton   # here: TPU hosts never need it

    n, d = h.shape
    v = emb.shape[0]
    rows_each = row_block(n, ROWS_PER_PROGRAM)
    h, rows = pad_rows(h, rows_each), pad_rows(rows, rows_each)   # results of padding dropped
    padded = h.shape[0]
    grid = (padded // rows_each, v // block)
    per_tile = pl.BlockSpec((pl.squeezed, rows_each), lambda i, j: (j, i))
    scalar = pl.BlockSpec((1,), lambda i, j: (0,))
    out = pl.pallas_call(
        early_launch.first(functools.partial(_kernel, k_block=k_block, softcap=softcap,
                                             greedy=greedy), interpret=interpret),
        grid=grid,
        in_specs=[scalar, scalar, pl.BlockSpec((rows_each,), lambda i, j: (i,)),
                  pl.BlockSpec((rows_each, d), lambda i, j: (i, 0)),
                  pl.BlockSpec((block, d), lambda i, j: (j, 0))],
        out_specs=[per_tile] * 5,
        out_shape=[jax.ShapeDtypeStruct((v // block, padded), F32)] * 3
                  + [jax.ShapeDtypeStruct((v // block, padded), jnp.int32),
                     jax.ShapeDtypeStruct((v // block, padded), F32)],
        interpret=interpret,
        compiler_params=pl_triton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
    )(seed, temp, rows, h, emb)
    return tuple(x[:, :n] for x in out)
