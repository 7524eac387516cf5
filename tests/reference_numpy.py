"""An independent NumPy Gemma 2/3 forward, written from the published architecture and reading
the official Flax parameter layout directly (`transformer/layer_{i}/attn/q_einsum/w`, ...).

It shares no code with `aha_utils.model` or `aha_utils.layers`: loops over heads and positions
instead of einsums, float64 throughout, masks built from index arithmetic. Tests use it to prove
that every array of a checkpoint lands in the right place and that the JAX forward computes the
same function.
"""

from __future__ import annotations

import numpy as np


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _rope(x, pos, base, scale):
    """x: [T, hd]; rotate the pair (j, j + hd/2) by angle pos/scale * base^(-2j/hd)."""
    hd = x.shape[-1]
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        for j in range(hd // 2):
            a = (pos[t] / scale) * base ** (-2.0 * j / hd)
            c, s = np.cos(a), np.sin(a)
            out[t, j] = x[t, j] * c - x[t, j + hd // 2] * s
            out[t, j + hd // 2] = x[t, j + hd // 2] * c + x[t, j] * s
    return out


def reference_logits(flat: dict[str, np.ndarray], cfg, ids) -> np.ndarray:
    """Logits [T, V] (float64) of the sequence `ids` at positions 0..T-1."""
    p = {k: np.asarray(v, np.float64) for k, v in flat.items()}
    ids = np.asarray(ids)
    T = len(ids)
    pos = np.arange(T)
    emb = p["transformer/embedder/input_embedding"]
    x = emb[ids] * np.sqrt(cfg.d_model)
    H, K, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    for i in range(cfg.num_layers):
        L = f"transformer/layer_{i}/"
        is_global = (i + 1) % cfg.global_every == 0
        base = cfg.rope_global_base if is_global else cfg.rope_local_base
        scale = cfg.rope_global_scale if is_global else 1.0
        h = _rms(x, p[L + "pre_attention_norm/scale"], cfg.norm_eps)
        wq = p[L + "attn/q_einsum/w"]                 # [H, D, hd]
        wk, wv = p[L + "attn/kv_einsum/w"]            # [K, D, hd] each
        wo = p[L + "attn/attn_vec_einsum/w"]          # [H, hd, D]
        attn_out = np.zeros_like(x)
        for head in range(H):
            kv = head // (H // K)
            q, k, v = h @ wq[head], h @ wk[kv], h @ wv[kv]      # [T, hd]
            if cfg.use_qk_norm:
                q = _rms(q, p[L + "attn/_query_norm/scale"], cfg.norm_eps)
                k = _rms(k, p[L + "attn/_key_norm/scale"], cfg.norm_eps)
            q, k = _rope(q, pos, base, scale), _rope(k, pos, base, scale)
            s = (q @ k.T) * cfg.query_pre_attn_scalar ** -0.5   # [T, T]
            if cfg.attn_softcap:
                s = np.tanh(s / cfg.attn_softcap) * cfg.attn_softcap
            for t in range(T):
                for u in range(T):
                    allowed = u <= t and (is_global or t - u < cfg.sliding_window)
                    if not allowed:
                        s[t, u] = -np.inf
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            attn_out += (s @ v) @ wo[head]
        x = x + _rms(attn_out, p[L + "post_attention_norm/scale"], cfg.norm_eps)
        h = _rms(x, p[L + "pre_ffw_norm/scale"], cfg.norm_eps)
        gate, up = p[L + "mlp/gating_einsum/w"]       # [F, D] each
        m = (_gelu_tanh(h @ gate.T) * (h @ up.T)) @ p[L + "mlp/linear/w"]
        x = x + _rms(m, p[L + "post_ffw_norm/scale"], cfg.norm_eps)
    x = _rms(x, p["transformer/final_norm/scale"], cfg.norm_eps)
    logits = x @ emb.T
    if cfg.final_softcap:
        logits = np.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits


def random_flax_params(cfg, seed: int = 0) -> dict[str, np.ndarray]:
    """Random parameters in the exact Kaggle/Flax layout and key names, float32."""
    rng = np.random.default_rng(seed)
    D, H, K, hd, F, V = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                         cfg.ffn_dim, cfg.vocab_size)

    def w(*shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def norm(n):  # non-zero so that a norm landing in the wrong place changes the output
        return (0.3 * rng.standard_normal(n)).astype(np.float32)

    flat = {"transformer/embedder/input_embedding": w(V, D, fan_in=D),
            "transformer/final_norm/scale": norm(D)}
    for i in range(cfg.num_layers):
        L = f"transformer/layer_{i}/"
        flat[L + "attn/q_einsum/w"] = w(H, D, hd, fan_in=D)
        flat[L + "attn/kv_einsum/w"] = w(2, K, D, hd, fan_in=D)
        flat[L + "attn/attn_vec_einsum/w"] = w(H, hd, D, fan_in=H * hd)
        if cfg.use_qk_norm:
            flat[L + "attn/_query_norm/scale"] = norm(hd)
            flat[L + "attn/_key_norm/scale"] = norm(hd)
        flat[L + "mlp/gating_einsum/w"] = w(2, F, D, fan_in=D)
        flat[L + "mlp/linear/w"] = w(F, D, fan_in=F)
        for n in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            flat[L + n + "/scale"] = norm(D)
    return flat


def nest(flat: dict[str, np.ndarray]) -> dict:
    """'transformer/layer_0/attn/q_einsum/w' -> {'transformer': {'layer_0': {...}}}."""
    root: dict = {}
    for key, val in flat.items():
        node = root
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = val
    return root
