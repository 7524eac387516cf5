# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Sampling: a jitted KV-cache decode loop, fast and exact
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/03_sampling.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/03_sampling.ipynb)
#
# **Hardware:** anything. The outputs below come from a shared **2-core CPU**, so every timing
# shown is a CPU timing; on a TPU v5e or a GPU the same cells run unchanged and far faster (the
# last section measures your device). No account or download beyond PyPI.
#
# GRPO spends most of its time *sampling*: every step draws several completions for every prompt
# before it can score a single one. This notebook builds up the sampler that `aha_utils` uses:
# 1. the KV cache, and why sliding-window layers only keep their window;
# 2. prefill versus decode, and the roofline that bounds decoding speed;
# 3. the maths of choosing a token (greedy, temperature, top-k, top-p) and the log-prob GRPO needs;
# 4. stopping at `</answer>` when the loop only sees tokens;
# 5. shape buckets, so that a second call does not compile again;
# 6. live samples from Gemma 3 270M, and the throughput measured on your device.
#
# The loop itself (`aha_utils/sampler.py`) is imported, not re-typed: it is one jitted
# `lax.while_loop`, sharded over the batch, that never returns to Python between tokens.

# %% [markdown]
# ## Setup

# %%
# Use the course's repository if this notebook sits in a clone (or aha_utils was installed from
# one); otherwise (Colab, Kaggle, a notebook opened alone) clone it and run colab_setup.sh, which
# installs the right JAX for this machine and the pinned requirements (a few minutes).
# AHA_REPO_URL and AHA_SETUP_FLAGS (e.g. "--test") override the defaults below.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = os.environ.get("AHA_REPO_URL", "https://github.com/getting-to-aha/getting-to-aha")
SETUP_FLAGS = os.environ.get("AHA_SETUP_FLAGS", "").split()


def is_repo(d: Path) -> bool:
    return (d / "aha_utils").is_dir() and (d / "colab_setup.sh").is_file()


def find_repo_root() -> Path | None:
    here = Path.cwd().resolve()
    for d in [here, *here.parents]:  # this folder or one above it
        if is_repo(d):
            return d
    spec = importlib.util.find_spec("aha_utils")  # `pip install -e .` from a clone elsewhere
    if spec and spec.origin and is_repo(Path(spec.origin).resolve().parents[1]):
        return Path(spec.origin).resolve().parents[1]
    return None


ROOT = find_repo_root()
if ROOT is None:  # no clone here: make one (kept, so rerunning this cell does not clone again)
    ROOT = Path("getting-to-aha").resolve()
    if not ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(ROOT)], check=True)
    subprocess.run(["bash", "colab_setup.sh", *SETUP_FLAGS], cwd=ROOT, check=True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # a clone works without `pip install -e .` too
print("repo root:", os.path.relpath(ROOT))  # relative: no machine's path in the outputs

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.sampler import device_bandwidth, roofline_seconds
from aha_utils.config import config_for
from aha_utils.kv_cache import cache_slots, init_cache
from aha_utils.sampler import batch_bucket, generate, prompt_bucket
from aha_utils.stop_strings import stop_table, token_bytes
from aha_utils.sampling import block_size, select_tokens, two_level_gumbel_max

print("jax", jax.__version__, "| backend:", jax.default_backend(), "|", jax.devices())

# %% [markdown]
# ## Hyperparameters
# `AHA_QUICK=1` (set by CI) only shrinks the sizes; the code path is the same.

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
MODEL_NAME = "gemma3-270m"  # @param ["gemma3-270m", "gemma3-1b"]
# ^ the offline default; gemma3-1b needs Kaggle credentials (see notebook 02)
DTYPE = jnp.bfloat16  # what TPUs compute in; the KV cache uses it too
NUM_PROMPTS = 2 if AHA_QUICK else 4  # Countdown problems sampled in the live demo
NUM_SAMPLES = 2 if AHA_QUICK else 4  # GRPO's group size G: completions per prompt
MAX_NEW_TOKENS = 24 if AHA_QUICK else 128  # long enough to see a <think> ... </answer> attempt
TEMPERATURE = 1.0  # R1-Zero samples at T=1: the policy's own distribution
TOP_K = None  # no truncation: GRPO's log-probs then describe exactly what was sampled
STOP_STRINGS = ("</answer>",)  # a finished answer ends the completion
SEED = 0  # same seed, same samples
print(f"AHA_QUICK={AHA_QUICK}: {NUM_PROMPTS} prompts x {NUM_SAMPLES} samples, "
      f"{MAX_NEW_TOKENS} new tokens")

# %% [markdown]
# ## 1. The KV cache
#
# A causal transformer computes, at every layer, keys $k_j$ and values $v_j$ for each token $j$,
# and token $i$ attends to $k_{1..i}, v_{1..i}$. Those never change once computed, so generating
# token $T+1$ needs only *one* new row per layer — if the old keys and values were kept. Without
# a cache, generating $n$ tokens re-runs the whole sequence $n$ times: $O(n^2)$ token-forwards
# instead of $O(n)$ (notebook 02's naive greedy loop did exactly that).
#
# Per token, the cache holds $L \times 2 \times K \times d_h$ numbers ($L$ layers, keys and
# values, $K$ KV heads of size $d_h$). Gemma 3 saves twice:
# - **multi-query attention**: $K = 1$ KV head serves all 4 query heads (4x smaller);
# - **sliding windows**: 5 of every 6 layers only look back 512 tokens, so they keep a *ring
#   buffer* of 512 slots, token $p$ written at slot $p \bmod 512$; only the global layers keep
#   the full length.
#
# The model derives every mask from *positions* (each cache slot remembers the position it holds,
# -1 = empty), so the ring buffer, left padding and per-row lengths need no special cases.

# %%
cfg = config_for(MODEL_NAME)
for total in (640, 4096):
    caches = init_cache(cfg, 1, total, DTYPE)   # only shapes matter here
    slots = [c.k.shape[1] for c in caches]
    kv_bytes = sum(c.k.nbytes + c.v.nbytes for c in caches)
    full = cfg.num_layers * total * 2 * cfg.num_kv_heads * cfg.head_dim * 2
    print(f"{total:5d} positions: slots per layer {sorted(set(slots))} "
          f"({slots.count(min(slots))} local, {slots.count(max(slots))} global) -> "
          f"{kv_bytes / 2**20:6.1f} MiB per sequence (every layer full-length: {full / 2**20:6.1f})")

# %% [markdown]
# ## 2. Prefill, decode, and the roofline
#
# Generation has two phases. **Prefill** runs the whole prompt through the model in one forward
# and fills the cache: a big matrix product per layer, many FLOPs per weight read, so it is
# *compute*-bound. **Decode** then makes one token per step for each row: each step multiplies
# a batch of $B$ vectors by every weight matrix, about $2B$ FLOPs per 2-byte weight — a tiny
# arithmetic intensity. A chip does hundreds of FLOPs in the time it reads one byte, so decode
# is *memory*-bound: a step cannot be faster than the time to read every parameter once, plus
# the keys and values each row attends to:
# $$ t_\text{step} \;\ge\; \frac{\text{param bytes} + B \cdot \text{KV bytes per row}}
#    {\text{HBM bandwidth}}, \qquad
#    \text{tokens/s} \;\le\; \frac{B}{t_\text{step}}. $$
# That is the **roofline**. Two lessons follow: batching is nearly free until the KV term
# dominates (the weights are read once for all rows), and the only way to beat the bound is to
# move fewer bytes (smaller dtypes, fewer KV heads, windows).
#
# The table below puts numbers on it for this device; `python -m benchmarks.sampler` measures
# the real thing against it.

# %%
kind, bandwidth, measured = device_bandwidth()
print(f"device {kind}: roofline bandwidth {bandwidth / 1e9:.0f} GB/s "
      f"(a measured copy here: {measured / 1e9:.0f} GB/s)")
PROMPT_LEN, NEW = 128, 512
print(f"prompt {PROMPT_LEN}, {NEW} new tokens, bf16 — best possible tokens/s:")
for name in ("gemma3-270m", "gemma3-1b"):
    c = config_for(name)
    row = [f"B={b}: {b * NEW / roofline_seconds(c, b, PROMPT_LEN, NEW, bandwidth):9,.0f}"
           for b in (1, 16, 64, 256)]
    print(f"  {name:12s} params {c.num_params() * 2 / 1e9:.2f} GB |", " | ".join(row))

# %% [markdown]
# ## 3. Choosing a token, and the log-prob GRPO needs
#
# From the last position's logits $\ell \in \mathbb{R}^V$:
# - **greedy**: $\arg\max_v \ell_v$ (temperature 0);
# - **temperature** $T$: sample from $\mathrm{softmax}(\ell / T)$ — $T<1$ sharpens, $T>1$ flattens;
# - **top-k**: keep the $k$ largest logits, renormalise;
# - **top-p** (nucleus): keep the most probable tokens until their mass reaches $p$.
#
# We sample by the **Gumbel-max trick**: $\arg\max_v (\ell_v/T + g_v)$ with $g_v$ i.i.d.
# Gumbel noise is an exact draw from $\mathrm{softmax}(\ell/T)$ — one pass over the vocabulary,
# no cumulative sums; truncated tokens get $-\infty$.
#
# Whatever the sampling settings, the sampler returns $\log \mathrm{softmax}(\ell)_{v}$ at
# **temperature 1**: the policy's own log-probability of the token it emitted, which is what the
# GRPO ratio $\pi_\theta / \pi_{\text{old}}$ and the KL term are made of. It is computed inside
# the loop as $\ell_v - \log\sum e^{\ell}$, so no `[batch, tokens, 262144]` array is ever kept.
#
# A toy check on a 5-token vocabulary: empirical frequencies against the formulas.

# %%
probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
logits = jnp.log(jnp.asarray(np.tile(probs, (20000, 1)), jnp.float32))   # [N, 5]
key = jax.random.key(SEED)
for label, kw in [("T=1", dict(temperature=1.0)), ("T=2", dict(temperature=2.0)),
                  ("top-k 2", dict(top_k=2)), ("top-p 0.8", dict(top_p=0.8))]:
    tok, lp = select_tokens(logits, key, greedy=False, **kw)
    freq = np.bincount(np.asarray(tok), minlength=5) / len(tok)
    assert np.allclose(np.asarray(lp), np.log(probs)[np.asarray(tok)], rtol=1e-5)  # always T=1
    print(f"{label:10s} frequencies {np.round(freq, 3)}")
print("T=2 formula ", np.round(np.sqrt(probs) / np.sqrt(probs).sum(), 3))
print("top-p 0.8:   keeps 0.5 + 0.25 + 0.15 (0.75 < 0.8 was not enough) ->",
      np.round(probs[:3] / probs[:3].sum(), 3))

# %% [markdown]
# One Gumbel per vocabulary entry is 262,144 random numbers per row per step, and on a GPU making
# them costs more than reading the logits. So with no top-k or top-p (GRPO's rollouts) the
# library draws in two levels: a **block** of $c$ tokens with probability equal to its mass
# (Gumbel-max over the blocks' $\log\sum e^{\ell}$), then a **token inside it** (Gumbel-max over
# its $c$ logits). Since $P(v) = P(\text{block}) \, P(v \mid \text{block})$, it is the same
# distribution, from $2\sqrt{V} = 1024$ Gumbels instead of 262,144 ($c = 512$). A toy check with
# 64 tokens in blocks of 8, one block impossible:

# %%
toy = np.random.default_rng(SEED).dirichlet(np.full(64, 0.3))
toy[8:16] = 0.0                                              # a whole block with probability 0
toy /= toy.sum()
draws = two_level_gumbel_max(jnp.log(jnp.asarray(np.tile(toy, (40000, 1)), jnp.float32)), key)
freq = np.bincount(np.asarray(draws), minlength=64) / 40000
print(f"block size {block_size(64)}; largest |frequency - p| {np.abs(freq - toy).max():.4f}; "
      f"draws from the impossible block: {int(freq[8:16].sum() * 40000)}")

# %% [markdown]
# ## 4. Stopping at `</answer>` when the loop sees tokens
#
# A row stops at `<eos>`, at `<end_of_turn>`, or when its text completes a stop string. The last
# one is subtle: `</answer>` is text, and the model can spell it with many token sequences —
# `"</" "answer" ">"`, `"▁</" "answer" ">"`, a `">\n"` token that ends the tag and starts a line,
# even byte tokens. Checking a few known token sequences would miss some; decoding text every step
# would need the host.
#
# Instead the stop strings become a small automaton (Aho-Corasick) over bytes — its state is
# "how much of a stop string the text currently ends with" — and we precompute, for every state
# and every one of the 262,144 tokens, the state after that token's bytes (or *stop*). Inside the
# loop each row carries one integer; checking the stop strings is one table lookup per step, and
# it is exact for every tokenization (`aha_utils/stop_strings.py` builds the table).

# %%
from aha_utils.tokenizer import gguf_tokenizer

tokenizer = gguf_tokenizer()
t0 = time.perf_counter()
table = stop_table(tokenizer, STOP_STRINGS)   # [states, vocab]
print(f"stop table {table.shape} built in {time.perf_counter() - t0:.1f} s; "
      f"{(table < 0).any(axis=0).sum()} tokens can end '{STOP_STRINGS[0]}' from some state")
for text in ["</answer>", " </answer>\n", "(3+7)*2</answer>.", "<answer> 5 </ans"]:
    ids = tokenizer.encode(text, add_bos=False)
    state, walk = 0, []
    for t in ids:
        state = int(table[state, t])
        walk.append(f"{tokenizer.id_to_piece(t)!r}->{'STOP' if state < 0 else state}")
        if state < 0:
            break
    print(f"{text!r:22s} " + "  ".join(walk))

# %% [markdown]
# ## 5. Buckets: one compilation for many calls
#
# `jit` compiles one program per input *shape*. Prompts differ in length and batches in size, so
# the sampler pads them to **buckets**: prompt columns to the next power of two (left padding,
# positions -1), the batch to a power of two that the data-parallel devices divide. A GRPO step
# with new prompts of a similar length then re-uses the compiled program. Temperature and top-p
# are passed as traced numbers, so changing them does not compile either.

# %%
for n in (9, 40, 130, 700):
    print(f"a {n:3d}-token prompt -> {prompt_bucket(n, 4096):4d} columns", end=" | ")
print()
for b in (1, 3, 16, 17):
    print(f"{b:2d} prompts -> {batch_bucket(b, 1):2d} rows (on 8 devices: {batch_bucket(b, 8)})",
          end=" | ")
print()

# %% [markdown]
# ## 6. Live samples from Gemma 3 270M
#
# The R1-Zero Countdown prompt, `NUM_SAMPLES` completions each, at temperature 1. The base model
# has never been trained to answer in this format: expect rambling, the occasional `<answer>`,
# rarely a correct equation — exactly the starting point GRPO improves on.

# %%
from aha_utils.data.countdown import make_problems
from aha_utils.data.prompts import countdown_prompt
from aha_utils.weights import load_model

model, tokenizer = load_model(MODEL_NAME, dtype=DTYPE)
problems = make_problems(NUM_PROMPTS, num_numbers=3, seed=SEED)
prompts = [countdown_prompt(p["nums"], p["target"]) for p in problems]

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(secs)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def sample(seed):
    t = time.perf_counter()
    out = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS,
                   temperature=TEMPERATURE, top_k=TOP_K, num_samples=NUM_SAMPLES, seed=seed,
                   stop_strings=STOP_STRINGS)
    return out, time.perf_counter() - t


out, first_s = sample(SEED)
print(f"first call: {first_s:.1f} s, of which compiling {sum(compiles):.1f} s")
for i, (text, n, lp) in enumerate(zip(out.texts, out.lengths, out.logprobs)):
    p = problems[i // NUM_SAMPLES]
    print(f"--- nums {p['nums']} target {p['target']} | sample {i % NUM_SAMPLES} | {n} tokens, "
          f"mean log-prob {lp[:n].mean():.2f}")
    print(text[:400])

# %% [markdown]
# What came back, besides text: `.tokens` `[N, MAX_NEW_TOKENS]` (padding 0 after the end),
# `.logprobs` (0 after the end), `.lengths` (a stop token counts), `.stopped` (ended by a stop
# rather than the length cap), and the left-padded `.prompt_tokens` — what GRPO scores.

# %%
print("tokens", out.tokens.shape, out.tokens.dtype, "| logprobs", out.logprobs.shape,
      "| lengths", out.lengths.tolist(), "| stopped", out.stopped.tolist())
print("prompt_tokens", out.prompt_tokens.shape, "(columns = the prompt bucket)")

# %% [markdown]
# ## 7. Throughput on this device
#
# A second call with new problems of a similar length: no compilation (the count of compilations
# does not move), and now the time is the sampler's own.

# %%
n_before = len(compiles)
problems = make_problems(NUM_PROMPTS, num_numbers=3, seed=SEED + 1)
prompts = [countdown_prompt(p["nums"], p["target"]) for p in problems]
out2, second_s = sample(SEED + 1)
assert len(compiles) == n_before, "the second call compiled again"
made = int(out2.lengths.sum())
rows = NUM_PROMPTS * NUM_SAMPLES
steps = int(out2.lengths.max())
roof = roofline_seconds(cfg, rows, out2.prompt_tokens.shape[1], steps, bandwidth)
print(f"second call: {second_s:.2f} s, 0 compilations, {made} tokens "
      f"-> {made / second_s:,.0f} tokens/s ({rows} rows, {steps} steps)")
print(f"roofline for {rows} rows x {steps} steps on {kind}: {rows * steps / roof:,.0f} tokens/s "
      f"-> {100 * roof / second_s:.0f}% of it")

# %% [markdown]
# On a CPU the percentage means little: bfloat16 arithmetic is emulated there, so even the
# "bandwidth" copy above is limited by arithmetic, and the prefill of the prompt bucket is part
# of the time. On a TPU or GPU it is the number to watch. For reference, on an
# H100 (`python -m benchmarks.sampler`, random weights, prompt 128, 512 new tokens) the
# 1B model at batch 64 makes about 40,000 tokens/s, 49% of this roofline (54% of a looser one,
# `% whole cache`, that counts every slot of the cache as a decode of fixed shapes reads it),
# 3.7x transformers' compiled `generate` in the same run (3.7-4.97x across runs, as HF's own
# speed varied). `--profile DIR`
# shows where a decode step's time goes: about 9 kernels per layer (matrix products at 64 rows
# that reach 20-70% of the bandwidth, the attention, the norms), each with a fixed cost that a
# step of 0.8 ms of pure memory traffic cannot hide. That is why an H200, with 1.43x the H100's
# bandwidth, makes only 1.12x the tokens (about 44,700 a second, 42% of its whole-cache
# roofline): the small kernels take as long on both. `docs/SAMPLER_TUNING.md` logs
# every round of tuning behind these figures.
# On GPUs the sampler goes one step further by default: an optional wing, `aha_utils.kernels`,
# runs each decode step and the token draw as a handful of Pallas kernels on its own fused copy
# of the weights (attention over only the filled cache slots, residual joins in one pass, a draw
# that never writes the `[N, V]` logits), switched by `generate(..., kernels=...)` and entered
# from one place in the sampler. The course's decode step stays the plain XLA one above, which
# the kernels are tested against; what each kernel does and what it bought is in
# [docs/SAMPLER_TUNING.md](../docs/SAMPLER_TUNING.md).
# Host time counts too: the host waits
# for the loop, so the sampler is a plain `jax.jit` (no per-call traversal of the model's
# graph, which cost 27 ms a call for the 1B) and, on GPUs, runs the whole loop as one CUDA graph.

# %% [markdown]
# ## Key takeaways
# - Generation = one prefill (compute-bound) + many decode steps (memory-bound). A decode step
#   cannot beat *bytes moved / bandwidth*: weights once per step plus each row's KV cache.
# - The KV cache turns $O(n^2)$ re-computation into $O(n)$; multi-query attention and sliding
#   windows (ring buffers of 512 slots) keep it small.
# - The whole loop is one jitted `lax.while_loop`: no Python per token, exit when every row has
#   stopped, shapes bucketed so the next call re-uses the compiled program.
# - Tokens are *drawn* from the tempered, truncated distribution, but the *log-prob returned* is
#   the model's own at temperature 1 — the number GRPO's ratio needs.
# - Stop strings are exact over every tokenization: an automaton over bytes, lifted to a
#   `[states, vocab]` table, one lookup per step.
