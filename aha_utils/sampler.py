"""The sampler: prompts in, completions (tokens, texts, per-token log-probs) out.

`generate(model, tokenizer, prompts, ...)` is the notebook-level call; `sample_tokens(model,
tokens, positions, rng, config)` is the jitted, array-level core that the GRPO loop calls.

Design decisions:
- One jitted program per shape bucket: prefill, then a single `lax.while_loop` that emits one
  token per iteration and exits as soon as every row has stopped (or `max_new_tokens` is
  reached). Nothing leaves the device until the loop is over: no host round-trip per token.
- KV cache: the model's own (`kv_cache.init_cache`). Each step runs the model on one token per
  row and projects only that position, so the largest per-step array is the `[N, V]` float32
  logit row; the chosen token's log-prob is taken from it inside the loop (`aha_utils.sampling`)
  and only `[N, max_new_tokens]` floats are kept.
- Left padding with per-row positions (-1 = padding): the model derives every mask from
  positions, so each row decodes at its own position. Buckets (`aha_utils.buckets`): prompt
  columns and batch round up to powers of two, so similar calls reuse the compiled program.
- `num_samples=G`: each prompt is prefilled once; its cache and last hidden state are repeated
  G times (samples of one prompt adjacent), and G continuations are drawn from there.
- Stop strings end a row inside the loop, for every tokenization the model can produce: one
  automaton state per row and one table gather per step (`aha_utils.stop_strings`). The text is
  cut right after the stop string (kept: rewards look for `</answer>`); `.tokens`/`.lengths`
  keep the whole last token. `<eos>` and `<end_of_turn>` count in `.lengths`, not in `.texts`.
- The loop runs a decode copy of the model built once per call (`decode_copy`): LoRA merged
  (else every step rebuilds `W + s A B`) and weights cast to `compute_dtype` (GRPO samples in its
  update's compute dtype: half the bytes a step, at a small, measured log-prob gap;
  `benchmarks/experiments/logprob_gap.py`). `aha_utils.memory` counts it.
- The fast path: with `SampleConfig.kernels` (by default on GPUs where they apply) the decode
  step and the token draw run through the GPU wing (`aha_utils.kernels`: Pallas kernels on the
  wing's own copy of the weights), entered from one place, `_decoder`. Otherwise, and on CPUs
  and TPUs, plain XLA: `model.hidden` with the cache, then `sampling.select_tokens`.
- Host time counts: the program is a plain `jax.jit` (see `_sample_program`), and on GPUs the
  whole loop, condition included, runs as one CUDA graph.
- Sharding: rows over the mesh's `data` axis, parameters wherever their specs put them (the mesh
  is read off the model's parameters); per-row arrays constrained to `P("data")` and
  partitionable random draws, so 1 device and 8 give the same tokens. The loop is traced under
  the mesh, so the wing's kernels run on each device's own rows.
Measured figures behind these choices: docs/SAMPLER_TUNING.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from aha_utils.buckets import (DEFAULT_MAX_PROMPT_LEN, PAD_ID, batch_bucket, left_pad,  # noqa: F401
                               prompt_bucket)
from aha_utils.kv_cache import init_cache
from aha_utils.layers import cast_floats
from aha_utils.lora import has_lora, merge_lora
from aha_utils.model import Gemma
from aha_utils.sampling import select_tokens
from aha_utils.sharding import DATA, fetch, model_mesh, put, traced_under
from aha_utils.stop_strings import cached_stop_table, padded_stop_table, truncate_at_stop


# ----------------------------------------------------------------------------------------------
# The jitted core
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Everything that changes the compiled program (hashable: a static jit argument)."""
    max_new_tokens: int
    num_samples: int = 1
    greedy: bool = True
    top_k: int | None = None
    use_top_p: bool = False
    stop_ids: tuple[int, ...] = ()
    compute_dtype: str | None = None   # weights and cache in this dtype; None: the model's own
    # The decode step and token draw through the GPU wing (`aha_utils.kernels`) or plain XLA.
    # "auto": on GPUs where the wing supports the model; `sample_tokens` resolves it to a bool.
    kernels: bool | str = "auto"

    def __post_init__(self):
        if self.compute_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be None, 'float32' or 'bfloat16'; "
                             f"got {self.compute_dtype!r}")
        if not (isinstance(self.kernels, bool) or self.kernels == "auto"):
            raise ValueError(f"kernels must be True, False or 'auto' (the GPU kernels where they "
                             f"run); got {self.kernels!r}")


class SampleOutput(NamedTuple):
    tokens: jax.Array    # [N, M] int32, PAD_ID after the end
    logprobs: jax.Array  # [N, M] float32, 0 after the end
    lengths: jax.Array   # [N] int32, generated tokens including the stop token
    stopped: jax.Array   # [N] bool, a stop token or stop string ended the row


class _Loop(NamedTuple):
    step: jax.Array        # [] int32, index of the next token to emit
    token: jax.Array       # [N] int32, last emitted token (input of the next step)
    pos: jax.Array         # [N] int32, its position (-1 for padding rows)
    done: jax.Array        # [N] bool
    stop_state: jax.Array  # [N] int32, stop-string automaton state
    cache: list            # [LayerCache] per layer, rows [N, ...]
    out_tok: jax.Array     # [N, M] int32
    out_lp: jax.Array      # [N, M] float32
    length: jax.Array      # [N] int32


def _rows(mesh: Mesh | None):
    """Constrain an array's leading (row) axis to the mesh's data axis; identity without mesh."""
    def constrain(x):
        if mesh is None:
            return x
        spec = P(DATA, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return constrain


def decode_copy(model: Gemma, compute_dtype: str | None) -> Gemma:
    """The model the sampler runs: a clone with LoRA adapters merged and floating weights cast
    to `compute_dtype` (None: kept). `model` is not changed: `nnx.merge(*nnx.split(model))`
    would share its variables, and under `nnx.jit` the cast would flow back into it."""
    copy = nnx.clone(model)
    if has_lora(copy):
        merge_lora(copy)
    if compute_dtype is not None:
        copy.dtype = jnp.dtype(compute_dtype)
        nnx.update(copy, cast_floats(nnx.state(copy), copy.dtype))
    return copy


def _gpu_wing():
    """The GPU wing (`aha_utils.kernels`): the sampler's one way in, imported only when used."""
    from aha_utils import kernels
    return kernels


def _decoder(model: Gemma, config: SampleConfig):
    """`(step, draw)` of the decode loop: `step(tokens [N], positions [N], cache) -> (h [N, D],
    cache)` and `draw(h, rng, temperature, top_p) -> (tokens [N], logprobs [N])`. Plain XLA
    (the model's cached forward, then `sampling.select_tokens` on the logits), or with
    `config.kernels` the GPU wing's, built here from the decode copy `model`."""
    def step(tokens, positions, cache):
        h, cache = model.hidden(tokens[:, None], positions[:, None], cache)   # [N, 1, D]
        return h[:, 0], cache

    def draw(h, rng, temperature, top_p):
        return select_tokens(model.logits(h), rng, greedy=config.greedy, temperature=temperature,
                             top_k=config.top_k, top_p=top_p if config.use_top_p else None)

    if not config.kernels:
        return step, draw
    return _gpu_wing().decoder(model, draw, greedy=config.greedy,
                               plain=config.top_k is None and not config.use_top_p)


def _resolve_kernels(config: SampleConfig, model: Gemma, mesh: Mesh | None) -> SampleConfig:
    """`config` with `kernels` a bool: "auto" is True on GPUs where the wing supports the model;
    True where it does not is an error that says why (no silent fallback)."""
    if config.kernels is False:
        return config
    use = _wing_supports(model.config, mesh, insist=config.kernels is True)
    return config if config.kernels is use else dataclasses.replace(config, kernels=use)


@functools.lru_cache(maxsize=64)
def _wing_supports(model_cfg, mesh: Mesh | None, *, insist: bool) -> bool:
    """Whether the GPU wing decodes this model here (cached: it runs on every sampler call)."""
    if not insist and jax.default_backend() != "gpu":
        return False
    why = _gpu_wing().unsupported(model_cfg, mesh)
    if why is not None and insist:
        raise ValueError(f"kernels=True, but {why}")
    return why is None


# By default XLA on GPUs runs the loop's body as CUDA graphs but returns to the host after every
# iteration to test the loop's condition; WHILE and CONDITIONAL among its command-buffer kinds put
# the whole loop in one graph. An option replaces XLA's list, so the list is its default kinds
# plus those two.
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_command_buffer": "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,"
                        "CUDNN,DYNAMIC_SLICE_FUSION,WHILE,CONDITIONAL"}


@functools.cache
def _sample_program(backend: str, top_level: bool = True):
    """The jitted sampler for `backend`: `jax.jit` of `_sample` (NNX modules are pytrees), with
    the options above on GPUs when it is called at top level. Inside another trace (an outer
    `jax.jit`, `jax.make_jaxpr`) JAX refuses per-program options, and the loop compiles as part
    of the outer program, with its options. Not `nnx.jit`: the model is only read, and
    `nnx.jit`'s graph traversal of it on the way in and out cost more host time a call than
    the rest of the call's fixed cost."""
    options = GPU_COMPILER_OPTIONS if backend == "gpu" and top_level else None
    return jax.jit(_sample, static_argnames=("config", "mesh"), compiler_options=options)


def _sample(model: Gemma, tokens, positions, rng, temperature, top_p, table, *,
            config: SampleConfig, mesh: Mesh | None) -> SampleOutput:
    model = decode_copy(model, config.compute_dtype)                  # once, before the loop
    b, p = tokens.shape
    g, m = config.num_samples, config.max_new_tokens
    rows = _rows(mesh)

    # Prefill: the whole prompt bucket in one forward, once per prompt (not per sample).
    cache = jax.tree.map(rows, init_cache(model.config, b, p + m, model.dtype))
    h, cache = model.hidden(tokens, positions, cache)                 # [B, P, D]
    h = h[:, -1]                                                       # [B, D]; left padding:
    last_pos = positions[:, -1]                                        # [B]; the last column is real
    if g > 1:  # G continuations per prompt, samples of one prompt adjacent
        cache = jax.tree.map(lambda x: rows(jnp.repeat(x, g, axis=0)), cache)
        h, last_pos = jnp.repeat(h, g, axis=0), jnp.repeat(last_pos, g)
    n = b * g
    active = last_pos >= 0                                             # [N]; padding rows: False
    step, draw = _decoder(model, config)            # after the prefill: the wing's weights here

    def emit(st: _Loop, h) -> _Loop:
        """Choose token `st.step` of every live row from its final hidden state `[N, D]`;
        update stops."""
        with traced_under(mesh):     # the token-draw kernel splits its call by rows
            tok, lp = draw(h, jax.random.fold_in(rng, st.step), temperature, top_p)  # [N], [N]
        live = ~st.done
        tok = jnp.where(live, tok, PAD_ID)
        lp = jnp.where(live, lp, 0.0)
        # One comparison per stop id: elementwise, so it fuses with the ops around it
        # (`jnp.isin` is a reduction, a kernel of its own each step).
        stop = functools.reduce(jnp.logical_or, [tok == s for s in config.stop_ids],
                                jnp.zeros_like(live))
        nxt = table[st.stop_state, tok].astype(jnp.int32)              # [N] one gather per step
        stop, state = stop | (nxt < 0), jnp.maximum(nxt, 0)
        return st._replace(
            step=st.step + 1, token=tok, done=rows(st.done | (live & stop)), stop_state=state,
            out_tok=jax.lax.dynamic_update_slice(st.out_tok, tok[:, None], (0, st.step)),
            out_lp=jax.lax.dynamic_update_slice(st.out_lp, lp[:, None], (0, st.step)),
            length=st.length + live.astype(jnp.int32))

    def body(st: _Loop) -> _Loop:
        with traced_under(mesh):     # the decode-attention kernel splits its call by rows
            h, cache = step(st.token, st.pos, st.cache)                # [N, D]
        st = st._replace(cache=jax.tree.map(rows, cache),
                         pos=jnp.where(st.pos >= 0, st.pos + 1, -1))
        return emit(st, h)

    def cond(st: _Loop):
        return (st.step < m) & ~jnp.all(st.done)

    st = _Loop(step=jnp.int32(0), token=jnp.zeros((n,), jnp.int32),
               pos=jnp.where(active, last_pos + 1, -1), done=rows(~active),
               stop_state=jnp.zeros((n,), jnp.int32), cache=cache,
               out_tok=rows(jnp.full((n, m), PAD_ID, jnp.int32)),
               out_lp=rows(jnp.zeros((n, m), jnp.float32)), length=jnp.zeros((n,), jnp.int32))
    st = jax.lax.while_loop(cond, body, emit(st, h))
    return SampleOutput(st.out_tok, st.out_lp, st.length, st.done & active)


def sample_tokens(model: Gemma, prompt_tokens, prompt_positions, rng, config: SampleConfig, *,
                  temperature: float = 1.0, top_p: float = 1.0,
                  stop_table: np.ndarray | None = None) -> SampleOutput:
    """Sample continuations of a left-padded batch of prompts, on device, in one jitted program.

    prompt_tokens, prompt_positions: int32 `[B, P]`, positions -1 on the left padding (a row of
    only -1 is a padding row: it produces nothing). Rows come back as `N = B * num_samples`,
    the samples of one prompt adjacent. `rng`: a `jax.random.key`. `stop_table`: from
    `stop_strings.stop_table(tokenizer, strings)` (None: no stop strings; `config.stop_ids`
    still apply). `temperature`/`top_p` are traced (no recompile per value);
    `config` is static; its `kernels` ("auto", True or False) is resolved here (see
    `SampleConfig`). B must be a multiple of the mesh's data axis when the model is sharded.
    The batch is put on the mesh here when it is not there already.
    """
    tokens = prompt_tokens if isinstance(prompt_tokens, jax.Array) else np.asarray(prompt_tokens)
    positions = (prompt_positions if isinstance(prompt_positions, jax.Array)
                 else np.asarray(prompt_positions))
    if tokens.ndim != 2 or tokens.shape != positions.shape:
        raise ValueError(f"prompt_tokens and prompt_positions must both be [batch, time]; got "
                         f"{tokens.shape} and {positions.shape}")
    if config.max_new_tokens < 1 or config.num_samples < 1:
        raise ValueError(f"max_new_tokens and num_samples must be >= 1; got {config}")
    mesh = model_mesh(model)
    if mesh is not None and tokens.shape[0] % mesh.shape[DATA]:
        raise ValueError(f"batch of {tokens.shape[0]} prompts does not split over the "
                         f"{mesh.shape[DATA]} data-parallel devices; pad it (padding rows: "
                         "positions all -1) to a multiple of that")
    config = _resolve_kernels(config, model, mesh)
    table = padded_stop_table(stop_table, model.config.vocab_size)
    scalars = np.float32(temperature), np.float32(top_p)
    if mesh is not None:   # `put`, not `device_put`: the mesh may span several processes
        rows = NamedSharding(mesh, P(DATA, None))
        tokens, positions = put(tokens, rows), put(positions, rows)
        replicated = NamedSharding(mesh, P())
        rng, table = put(rng, replicated), put(table, replicated)
        scalars = tuple(put(x, replicated) for x in scalars)
    # While a transformation traces, every array made is its tracer, even a constant: a probe
    # that also sees an outer jit whose arguments are all closed over (and costs no flatten).
    top_level = not isinstance(jnp.zeros(()), jax.core.Tracer)
    return _sample_program(jax.default_backend(), top_level)(
        model, tokens.astype(jnp.int32), positions.astype(jnp.int32), rng, *scalars, table,
        config=config, mesh=mesh)


# ----------------------------------------------------------------------------------------------
# Host side: text in, text out
# ----------------------------------------------------------------------------------------------
def encode_prompts(tokenizer, prompts: Sequence[str],
                   max_prompt_len: int = DEFAULT_MAX_PROMPT_LEN) -> tuple[list[list[int]], int]:
    """Each prompt's token ids (with `<bos>`) and the batch's prompt columns (its bucket).
    A prompt longer than `max_prompt_len` tokens is an error, not silently cut."""
    ids = [tokenizer.encode(t, add_bos=True) for t in prompts]
    longest = max(len(x) for x in ids)
    if longest > max_prompt_len:
        worst = max(range(len(ids)), key=lambda i: len(ids[i]))
        raise ValueError(f"prompt {worst} has {longest} tokens, more than max_prompt_len="
                         f"{max_prompt_len}; shorten it or pass a larger max_prompt_len")
    return ids, prompt_bucket(longest, max_prompt_len)


@dataclasses.dataclass
class Completions:
    """`N = len(prompts) * num_samples` completions, the samples of one prompt adjacent."""
    texts: list[str]              # stop tokens removed; a stop string is kept, text after it cut
    tokens: np.ndarray            # [N, M] int32 generated tokens, PAD_ID after the end
    logprobs: np.ndarray          # [N, M] float32 log p(token) at temperature 1, 0 after the end
    lengths: np.ndarray           # [N] int32 valid generated tokens, a stop token included
    stopped: np.ndarray           # [N] bool: ended by a stop token/string, not by the length cap
    prompt_tokens: np.ndarray     # [N, P] int32 left-padded prompt of each row (with <bos>)
    prompt_lengths: np.ndarray    # [N] int32


def _check_args(prompts, max_new_tokens, temperature, top_k, top_p, num_samples, stop_strings,
                vocab_size):
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings; wrap a single prompt as [prompt]")
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError("prompts is empty: pass a non-empty list of prompt strings")
    if not all(isinstance(t, str) for t in prompts):
        raise ValueError("every prompt must be a str (for token ids use sample_tokens)")
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1; got {num_samples!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy); "
                         f"got {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= vocab_size):
        raise ValueError(f"top_k must be None or an int in [1, {vocab_size}]; got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1]; got {top_p!r}")
    if stop_strings is not None and (isinstance(stop_strings, str) or not all(
            isinstance(s, str) and s for s in stop_strings)):
        raise ValueError(f"stop_strings must be a list of non-empty strings, e.g. "
                         f"('</answer>',); got {stop_strings!r}")


def generate(model: Gemma, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             num_samples: int = 1, seed: int = 0, stop_strings: Sequence[str] | None = None,
             max_prompt_len: int = DEFAULT_MAX_PROMPT_LEN,
             compute_dtype: str | None = None, kernels: bool | str = "auto") -> Completions:
    """Complete every prompt `num_samples` times. `temperature=0.0` is greedy.
    `compute_dtype` (e.g. "bfloat16"): decode with the weights and cache cast to it, once per
    call; None decodes in the model's own dtype. `kernels`: decode through the GPU kernels
    (`aha_utils.kernels`); "auto" where they run, True to insist (an error says why not), False
    for plain XLA.

    Stops a row at `<eos>`, `<end_of_turn>`, or the end of any of `stop_strings`; see the module
    docstring for what `.texts`, `.tokens` and `.lengths` then hold. Prompts are encoded with
    `<bos>`; one longer than `max_prompt_len` tokens is an error, not silently cut.
    """
    _check_args(prompts, max_new_tokens, temperature, top_k, top_p, num_samples, stop_strings,
                model.config.vocab_size)
    ids, columns = encode_prompts(tokenizer, prompts, max_prompt_len)
    mesh = model_mesh(model)
    n_data = 1 if mesh is None else mesh.shape[DATA]
    tokens, positions = left_pad(ids, columns, batch_bucket(len(ids), n_data))
    greedy = temperature == 0.0
    config = SampleConfig(max_new_tokens=max_new_tokens, num_samples=num_samples, greedy=greedy,
                          top_k=None if greedy else top_k,
                          use_top_p=not greedy and top_p is not None and top_p < 1.0,
                          stop_ids=(tokenizer.eos_id, tokenizer.end_of_turn_id),
                          compute_dtype=compute_dtype, kernels=kernels)
    stops = tuple(stop_strings) if stop_strings else ()
    table = cached_stop_table(tokenizer, stops, model.config.vocab_size) if stops else None
    out = sample_tokens(model, tokens, positions, jax.random.key(seed), config,
                        temperature=temperature if not greedy else 1.0,
                        top_p=1.0 if top_p is None else top_p, stop_table=table)
    out = fetch(out)   # every process gets every row (multi-process runs)

    n = len(prompts) * num_samples                  # real rows come first; padding rows follow
    toks, lps, lens, stopped = (np.asarray(x[:n]) for x in out)
    texts = []
    for row, length, ended in zip(toks, lens, stopped):
        row = row[:length]
        if ended and length and row[-1] in config.stop_ids:
            row = row[:-1]
        text = tokenizer.decode(row)
        texts.append(truncate_at_stop(text, stops) if ended and stops else text)
    prompt_rows = np.repeat(tokens[:len(prompts)], num_samples, axis=0)
    return Completions(
        texts=texts, tokens=toks.astype(np.int32), logprobs=lps.astype(np.float32),
        lengths=lens.astype(np.int32), stopped=stopped.astype(bool), prompt_tokens=prompt_rows,
        prompt_lengths=np.repeat(np.array([len(x) for x in ids], np.int32), num_samples))
