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
# before it can score a single one. This notebook builds a sampler, then looks at what a fast one
# needs:
# 1. the KV cache, and why sliding-window layers only keep their window;
# 2. a minimal KV-cache decode loop, written here and checked token for token against the
#    library's `aha_utils.sampler.generate`;
# 3. what the library adds to it;
# 4. prefill versus decode, and the roofline that bounds decoding speed;
# 5. the maths of choosing a token (greedy, temperature, top-k, top-p) and the log-prob GRPO needs;
# 6. stopping at `</answer>` when the loop only sees tokens;
# 7. shape buckets, so that a second call does not compile again;
# 8. live samples from Gemma 3 270M, and the throughput measured on your device against the roofline.
#
# Three exercises (with solutions) follow sections 1, 5 and 7.

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
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from benchmarks.sampler import device_bandwidth, roofline_seconds
from aha_utils.config import config_for
from aha_utils.kv_cache import cache_slots, init_cache
from aha_utils.sampler import SampleConfig, batch_bucket, generate, prompt_bucket, sample_tokens
from aha_utils.stop_strings import stop_table
from aha_utils.sampling import block_size, select_tokens, two_level_gumbel_max

print("jax", jax.__version__, "| backend:", jax.default_backend(), "|", jax.devices())

# Every XLA compilation in this notebook is counted here (the lessons on buckets use it).
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(secs)
    if event == "/jax/core/compile/backend_compile_duration" else None)
plt.rcParams.update({"font.size": 12})

# %% [markdown]
# ## Hyperparameters
# `AHA_QUICK=1` (set by CI) only shrinks the sizes; the code path is the same.

# %%
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
MODEL_NAME = "gemma3-270m"  # @param ["gemma3-270m", "gemma3-1b"]
# ^ the offline default; gemma3-1b needs Kaggle credentials (see notebook 02)
DTYPE = jnp.bfloat16  # what TPUs compute in; the KV cache uses it too
LOOP_PROMPTS = ["Question: What is 12 + 7?\nAnswer:", "The capital of France is"]
LOOP_PROMPTS = LOOP_PROMPTS[-1:] if AHA_QUICK else LOOP_PROMPTS  # checked against generate
LOOP_NEW_TOKENS = 4 if AHA_QUICK else 24  # tokens our own decode loop makes per prompt
NUM_PROMPTS = 2 if AHA_QUICK else 4  # Countdown problems sampled in the live demo
NUM_SAMPLES = 2 if AHA_QUICK else 4  # GRPO's group size G: completions per prompt
MAX_NEW_TOKENS = 24 if AHA_QUICK else 128  # long enough to see a <think> ... </answer> attempt
TEMPERATURE = 1.0  # R1-Zero samples at T=1: the policy's own distribution
TOP_K = None  # no truncation: GRPO's log-probs then describe exactly what was sampled
STOP_STRINGS = ("</answer>",)  # a finished answer ends the completion
ROOFLINE_BATCHES = (1,) if AHA_QUICK else (1, 2, 4, 8, 16)  # rows per call, measured
ROOFLINE_PROMPT_LEN = 16  # short random prompts: the time is the decode's
ROOFLINE_NEW_TOKENS = 4 if AHA_QUICK else 32  # decode steps per measured call
SEED = 0  # same seed, same samples
print(f"AHA_QUICK={AHA_QUICK}: loop {LOOP_NEW_TOKENS} tokens; {NUM_PROMPTS} prompts x "
      f"{NUM_SAMPLES} samples, {MAX_NEW_TOKENS} new tokens; roofline batches {ROOFLINE_BATCHES}")

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
# `aha_utils.kv_cache.init_cache` builds an empty cache: one `LayerCache(k, v, pos)` per layer.

# %%
cfg = config_for(MODEL_NAME)
BYTES = jnp.dtype(DTYPE).itemsize
for total in (640, 4096):
    caches = jax.eval_shape(lambda: init_cache(cfg, 1, total, DTYPE))   # shapes only, no memory
    slots = [c.k.shape[1] for c in caches]
    kv_bytes = sum(c.k.size + c.v.size for c in caches) * BYTES
    full = cfg.num_layers * total * 2 * cfg.num_kv_heads * cfg.head_dim * BYTES
    print(f"{total:5d} positions: slots per layer {sorted(set(slots))} "
          f"({slots.count(min(slots))} local, {slots.count(max(slots))} global) -> "
          f"{kv_bytes / 2**20:6.1f} MiB per sequence (every layer full-length: {full / 2**20:6.1f})")

# %% [markdown]
# The same arithmetic over lengths: the local layers' share stops growing at the window, the
# global layers' grows with every token, and a model whose every layer were global would pay the
# top curve.

# %%
lengths = 2 ** np.arange(7, 16)                                   # 128 ... 32,768 tokens
per_slot = 2 * cfg.num_kv_heads * cfg.head_dim * BYTES            # k and v of one token, one layer


def kv_mib(kinds, n):
    return sum(cache_slots(cfg, kind, n) for kind in kinds) * per_slot / 2**20


kinds = cfg.layer_kinds
local_kinds = [k for k in kinds if k == "local"]
global_kinds = [k for k in kinds if k != "local"]
fig, ax = plt.subplots(figsize=(7, 4.2))
ax.plot(lengths, [kv_mib(kinds, n) for n in lengths], "k-o", label="total (this cache)")
ax.plot(lengths, [kv_mib(local_kinds, n) for n in lengths], "-s",
        label=f"{len(local_kinds)} sliding-window layers")
ax.plot(lengths, [kv_mib(global_kinds, n) for n in lengths], "-^",
        label=f"{len(global_kinds)} global layers")
ax.plot(lengths, [kv_mib(["global"] * len(kinds), n) for n in lengths], "--", color="gray",
        label="if every layer were global")
ax.set(xscale="log", yscale="log", xlabel="sequence length (tokens)",
       ylabel="KV cache per sequence (MiB)",
       title=f"{MODEL_NAME}: KV cache memory ({jnp.dtype(DTYPE).name})")
ax.set_xticks(lengths[::2], [f"{n:,}" for n in lengths[::2]])
ax.legend(fontsize=10)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()
n = lengths[-1]
print(f"at {n:,} tokens: {kv_mib(kinds, n):.0f} MiB per sequence, "
      f"{kv_mib(['global'] * len(kinds), n) / kv_mib(kinds, n):.1f}x less than all-global")

# %% [markdown]
# ### Exercise 1: the KV cache of Gemma 3 1B at 4k tokens
# `config_for("gemma3-1b")` has 26 layers, one KV head of size 256 and a 512-token window on 5
# layers of every 6. Compute by hand (with `cache_slots`, or plain arithmetic) how many MiB of
# bf16 keys and values one 4,096-token sequence needs, and how many it would need if every layer
# were global. Check your number against the shapes `init_cache` builds.

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
cfg_1b = config_for("gemma3-1b")
n_local = sum(kind == "local" for kind in cfg_1b.layer_kinds)
n_global = cfg_1b.num_layers - n_local
token_bytes = 2 * cfg_1b.num_kv_heads * cfg_1b.head_dim * 2           # k and v, bf16: 1 KiB
by_hand = (n_local * 512 + n_global * 4096) * token_bytes
shapes = jax.eval_shape(lambda: init_cache(cfg_1b, 1, 4096, jnp.bfloat16))
from_shapes = sum(c.k.size + c.v.size for c in shapes) * 2
assert by_hand == from_shapes
print(f"{n_local} local x 512 + {n_global} global x 4,096 slots, {token_bytes} bytes each -> "
      f"{by_hand / 2**20:.1f} MiB (all global: {cfg_1b.num_layers * 4096 * token_bytes / 2**20:.1f} MiB)")

# %% [markdown]
# ## 2. A minimal decode loop
#
# Greedy generation with a cache is two functions and a loop. For a prompt $x_{1..n}$:
# 1. **prefill**: one forward over positions $0..n-1$ fills every layer's cache and gives the
#    logits $\ell_n$ of the last position;
# 2. **decode**: repeat $t_{k} = \arg\max_v \ell_v$, then run the model on that one token at its
#    position $n + k$: it attends over the cache, writes its own key and value into it, and
#    returns the next logits.
#
# The model accepts a cache: `model(tokens, positions, cache)` returns `(logits, new_cache)`.
# Each function is jitted on its own (`nnx.jit` takes the NNX model as an argument); the cache
# is built for a fixed `CACHE_LEN`, so the decode step has one shape and compiles once.

# %%
from aha_utils.weights import load_model

model, tokenizer = load_model(MODEL_NAME, dtype=DTYPE)
CACHE_LEN = 64   # prompt + generated tokens our loop can hold
STOP_IDS = (tokenizer.eos_id, tokenizer.end_of_turn_id)


@nnx.jit
def prefill(model, tokens, cache):
    positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]      # [1, n]
    logits, cache = model(tokens, positions, cache)                     # [1, n, V]
    return logits[:, -1], cache                                          # the last position's


@nnx.jit
def decode_step(model, token, position, cache):
    logits, cache = model(token[:, None], position[:, None], cache)     # one token: [1, 1, V]
    return logits[:, 0], cache


def greedy(logits, step):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)                # [1]


def decode(model, ids, max_new_tokens, choose=greedy):
    """Token ids of one prompt in, generated token ids out (a stop token included)."""
    assert len(ids) + max_new_tokens <= CACHE_LEN, "the cache is too short for this prompt"
    cache = init_cache(model.config, 1, CACHE_LEN, model.dtype)
    logits, cache = prefill(model, jnp.asarray([ids], jnp.int32), cache)
    out = []
    for step in range(max_new_tokens):
        token = choose(logits, step)
        out.append(int(token[0]))                                        # back to Python: a sync
        if out[-1] in STOP_IDS:
            break
        position = jnp.asarray([len(ids) + step], jnp.int32)
        logits, cache = decode_step(model, token, position, cache)
    return out


# %% [markdown]
# Now the check: the same prompts through the library's sampler at temperature 0 (greedy) must
# give exactly the same tokens. The library pads the prompt on the left to a bucket and runs its
# own loop, so equal tokens also say that padding and bucketing change nothing. Times include
# compiling, counted too: a new prompt length is a new shape for our `prefill`.

# %%
greedy_tokens = {}
for prompt in LOOP_PROMPTS:
    ids = tokenizer.encode(prompt)
    t, n0 = time.perf_counter(), len(compiles)
    mine = decode(model, ids, LOOP_NEW_TOKENS)
    mine_s, mine_c = time.perf_counter() - t, len(compiles) - n0
    t, n0 = time.perf_counter(), len(compiles)
    lib = generate(model, tokenizer, [prompt], max_new_tokens=LOOP_NEW_TOKENS, temperature=0.0)
    lib_s, lib_c = time.perf_counter() - t, len(compiles) - n0
    theirs = lib.tokens[0, :lib.lengths[0]].tolist()
    assert mine == theirs, (mine, theirs)
    greedy_tokens[prompt] = mine
    print(f"{prompt!r} ({len(ids)} prompt tokens) -> {tokenizer.decode(mine)!r}")
    print(f"   {len(mine)} tokens, equal to generate's | our loop {mine_s:.1f} s with "
          f"{mine_c} compilations, generate {lib_s:.1f} s with {lib_c}")

# %% [markdown]
# ## 3. What the library adds
#
# The loop above is the whole idea; `aha_utils.sampler.generate` is the same prefill and decode
# step, with what GRPO's rollouts need around them:
# - **one jitted `lax.while_loop`** for the whole generation: no return to Python per token (our
#   loop syncs on `int(token[0])` every step), an exit as soon as every row has stopped, and a
#   whole loop that XLA compiles and optimises as one program;
# - **batches**: many prompts at once, left-padded (positions -1 on the padding), each prompt
#   prefilled once and its cache repeated for its $G$ samples;
# - **shape buckets** (section 7): prompt columns and batch rounded up to powers of two, so a new
#   batch re-uses the compiled program (our `prefill` compiles again for every new prompt length);
# - **sampling** with temperature, top-k and top-p, and the **log-prob of each token** computed
#   inside the loop (section 5);
# - **exact stop strings** such as `</answer>`, one table lookup per step (section 6);
# - **sharding**: rows split over the devices' `data` axis, so one chip and eight give the same
#   tokens;
# - an optional **GPU wing** (`aha_utils.kernels`): on GPUs each decode step and the token draw
#   run as a few Pallas kernels that read only the filled cache slots and never write the
#   `[N, V]` logits, entered from one place in the sampler and tested against the plain XLA step
#   used here. What each kernel does and what it bought is in
#   [docs/SAMPLER_TUNING.md](../docs/SAMPLER_TUNING.md).

# %% [markdown]
# ## 4. Prefill, decode, and the roofline
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
# The table below puts numbers on it for this device (`benchmarks.sampler`'s `roofline_seconds`);
# section 8 measures the sampler against it.

# %%
kind, bandwidth, measured = device_bandwidth()   # a known GPU/TPU: its datasheet figure
if jax.default_backend() == "cpu":
    # XLA's bf16 copy is slowed by arithmetic on a CPU (bf16 is emulated there); a plain memory
    # copy (NumPy's, 256 MiB) measures what the memory itself can move.
    a = np.ones(64 * 2**20, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    bandwidth = 2 * a.nbytes / min(times)                 # bytes read + bytes written
    del a, b
print(f"device {kind}: roofline bandwidth {bandwidth / 1e9:.0f} GB/s "
      f"(XLA's bf16 copy here: {measured / 1e9:.0f} GB/s)")
PROMPT_LEN, NEW = 128, 512
print(f"prompt {PROMPT_LEN}, {NEW} new tokens, bf16 — best possible tokens/s:")
for name in ("gemma3-270m", "gemma3-1b"):
    c = config_for(name)
    row = [f"B={b}: {b * NEW / roofline_seconds(c, b, PROMPT_LEN, NEW, bandwidth):9,.0f}"
           for b in (1, 16, 64, 256)]
    print(f"  {name:12s} params {c.num_params() * 2 / 1e9:.2f} GB |", " | ".join(row))

# %% [markdown]
# ## 5. Choosing a token, and the log-prob GRPO needs
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
# ### Exercise 2: top-k sampling in our loop
# `decode` takes a `choose(logits, step)` function; `greedy` is one. Write `top_k_choice(k,
# temperature, seed)` that returns a `choose` drawing the next token from the $k$ largest logits
# divided by the temperature (hints: `jax.lax.top_k`, `jax.random.categorical`, and
# `jax.random.fold_in(key, step)` for a fresh key each step). Check: with $k = 1$ it must give
# exactly the greedy tokens; then print a sample with $k = 40$, $T = 1$.

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
def top_k_choice(k, temperature=1.0, seed=0):
    key = jax.random.key(seed)

    def choose(logits, step):
        values, indices = jax.lax.top_k(logits / temperature, k)               # [1, k] each
        pick = jax.random.categorical(jax.random.fold_in(key, step), values)    # [1] in 0..k-1
        return jnp.take_along_axis(indices, pick[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return choose


prompt = LOOP_PROMPTS[-1]
ids = tokenizer.encode(prompt)
assert decode(model, ids, LOOP_NEW_TOKENS, top_k_choice(1)) == greedy_tokens[prompt]
print("k=1 equals greedy")
print("k=40, T=1:", repr(tokenizer.decode(decode(model, ids, LOOP_NEW_TOKENS, top_k_choice(40)))))

# %% [markdown]
# ## 6. Stopping at `</answer>` when the loop sees tokens
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
# ## 7. Buckets: one compilation for many calls
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
# ### Exercise 3: count the compilations
# Take a small jitted function of a batch, e.g. `jax.jit(lambda x: jnp.tanh(x @ w).sum(-1))` with
# `x` of shape `[b, 64]`. Call it once for each batch size $b = 1, \dots, 12$ as is, and count the
# compilations (the `compiles` list of the imports cell grows by one per compilation). Then do the
# same with each batch padded with zero rows to `batch_bucket(b)` (and the padding rows' outputs
# dropped). How many compilations does each way cost? (With the sampler, each one costs seconds.)

# %% [markdown]
# #### Solution

# %% jupyter={"source_hidden": true}
# Solution
# Inputs are made, padded and cut in NumPy: an eager jnp operation on a new shape would be
# compiled (and counted) too.
w = np.ones((64, 8), np.float32) / 64
raw = jax.jit(lambda x: jnp.tanh(x @ w).sum(-1))
padded = jax.jit(lambda x: jnp.tanh(x @ w).sum(-1))   # a second function: its own cache
sizes = range(1, 13)
n0 = len(compiles)
for b in sizes:
    raw(np.ones((b, 64), np.float32))
n_raw = len(compiles) - n0
n0 = len(compiles)
for b in sizes:
    x = np.ones((b, 64), np.float32)
    rows = batch_bucket(b)
    y = np.asarray(padded(np.pad(x, ((0, rows - b), (0, 0)))))[:b]   # padding rows dropped
    assert np.allclose(y, np.asarray(raw(x)))
n_bucketed = len(compiles) - n0
print(f"batch sizes 1..12: {n_raw} compilations as is, {n_bucketed} with buckets "
      f"({sorted({batch_bucket(b) for b in sizes})})")

# %% [markdown]
# ## 8. Live samples from Gemma 3 270M
#
# The R1-Zero Countdown prompt, `NUM_SAMPLES` completions each, at temperature 1. The base model
# has never been trained to answer in this format: expect rambling, the occasional `<answer>`,
# rarely a correct equation — exactly the starting point GRPO improves on.

# %%
from aha_utils.data.countdown import make_problems
from aha_utils.data.prompts import countdown_prompt

problems = make_problems(NUM_PROMPTS, num_numbers=3, seed=SEED)
prompts = [countdown_prompt(p["nums"], p["target"]) for p in problems]


def sample(seed):
    t = time.perf_counter()
    out = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS,
                   temperature=TEMPERATURE, top_k=TOP_K, num_samples=NUM_SAMPLES, seed=seed,
                   stop_strings=STOP_STRINGS)
    return out, time.perf_counter() - t


n_before = len(compiles)
out, first_s = sample(SEED)
print(f"first call: {first_s:.1f} s, of which compiling {sum(compiles[n_before:]):.1f} s")
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
# ### Throughput on this device
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
# The roofline as a figure: the sampler's tokens/s against the batch size, each row making
# `ROOFLINE_NEW_TOKENS` tokens after a short random prompt (no stop: every row runs to the end),
# next to the bound of section 4 for the same shapes. Each batch size is a new shape, so each is
# compiled by an untimed first call.

# %%
hardware = (f"CPU, {os.cpu_count()} cores" if jax.default_backend() == "cpu"
            else jax.devices()[0].device_kind)
rng = np.random.default_rng(SEED)
bench_config = SampleConfig(max_new_tokens=ROOFLINE_NEW_TOKENS, greedy=False, stop_ids=())


def tokens_per_second(batch):
    tokens = rng.integers(3, cfg.vocab_size, (batch, ROOFLINE_PROMPT_LEN)).astype(np.int32)
    positions = np.broadcast_to(np.arange(ROOFLINE_PROMPT_LEN, dtype=np.int32), tokens.shape)

    def run(seed):
        return np.asarray(sample_tokens(model, tokens, positions, jax.random.key(seed),
                                        bench_config).lengths)   # waits for the device
    run(0)                                                        # compiles this shape
    t = time.perf_counter()
    assert (run(1) == ROOFLINE_NEW_TOKENS).all()
    return batch * ROOFLINE_NEW_TOKENS / (time.perf_counter() - t)


def bound(batch):
    return batch * ROOFLINE_NEW_TOKENS / roofline_seconds(
        cfg, batch, ROOFLINE_PROMPT_LEN, ROOFLINE_NEW_TOKENS, bandwidth)


measured_tps = {b: tokens_per_second(b) for b in ROOFLINE_BATCHES}
for b, tps in measured_tps.items():
    print(f"batch {b:3d}: {tps:8,.1f} tokens/s measured, bound {bound(b):9,.1f} "
          f"-> {100 * tps / bound(b):.0f}% of the roofline")
grid = 2 ** np.arange(0, 9)
fig, ax = plt.subplots(figsize=(7, 4.2))
ax.plot(grid, [bound(b) for b in grid], "--", color="gray",
        label=f"roofline: memory traffic at {bandwidth / 1e9:,.0f} GB/s")
ax.plot(list(measured_tps), list(measured_tps.values()), "o-", label="measured (generate's loop)")
ax.set(xscale="log", yscale="log", xlabel="batch (rows decoded together)", ylabel="tokens / s",
       title=f"{MODEL_NAME} decode on {hardware}")
ax.set_xticks(grid, [str(b) for b in grid])
ax.legend(fontsize=10)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# The bound rises almost linearly with the batch (the weights are read once for all rows) until
# the keys and values of every row weigh as much as the weights. The gap between a measured
# point and the bound is time spent on something other than moving bytes. On a CPU that is
# mostly arithmetic: bfloat16 is emulated there, and a step's matrix products grow with the
# batch while the weights it reads do not. On a TPU or GPU the share of the bound is the number
# to watch; `python -m benchmarks.sampler` prints the same comparison at larger shapes, and
# [docs/SAMPLER_TUNING.md](../docs/SAMPLER_TUNING.md) records it on an H100.

# %% [markdown]
# ## Key takeaways
# - Generation = one prefill (compute-bound) + many decode steps (memory-bound). A decode step
#   cannot beat *bytes moved / bandwidth*: weights once per step plus each row's KV cache.
# - The KV cache turns $O(n^2)$ re-computation into $O(n)$; multi-query attention and sliding
#   windows (ring buffers of 512 slots) keep it small.
# - A decode loop is a prefill, then one-token steps that read and extend the cache: a few dozen
#   lines, token for token the same as the library's greedy sampler.
# - The library's loop is one jitted `lax.while_loop`: no Python per token, exit when every row
#   has stopped, shapes bucketed so the next call re-uses the compiled program.
# - Tokens are *drawn* from the tempered, truncated distribution, but the *log-prob returned* is
#   the model's own at temperature 1 — the number GRPO's ratio needs.
# - Stop strings are exact over every tokenization: an automaton over bytes, lifted to a
#   `[states, vocab]` table, one lookup per step.
