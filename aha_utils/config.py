"""Model configuration: one frozen dataclass, one named preset per Gemma variant.

Every architectural difference between Gemma 2 and Gemma 3 that the forward pass cares about is a
field here (QK-norm, soft-capping, the local/global layer pattern, RoPE bases and scaling), so
`model.py` has no `if gemma2:` branches — only `if cfg.use_qk_norm:` and the like.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

LayerKind = Literal["local", "global"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int
    sliding_window: int
    # Layer i is global when (i + 1) % global_every == 0 (Gemma 3: 6, Gemma 2: 2).
    global_every: int
    query_pre_attn_scalar: float
    rope_local_base: float = 10_000.0
    rope_global_base: float = 1_000_000.0
    # Gemma 3 4B stretches global RoPE positions by 8 (linear scaling) for its 128k context.
    rope_global_scale: float = 1.0
    use_qk_norm: bool = True
    attn_softcap: float | None = None
    final_softcap: float | None = None
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.global_every < 1:
            raise ValueError("global_every must be >= 1 (1 makes every layer global)")

    # ----- derived -------------------------------------------------------------------------
    def layer_kind(self, i: int) -> LayerKind:
        return "global" if (i + 1) % self.global_every == 0 else "local"

    @property
    def layer_kinds(self) -> tuple[LayerKind, ...]:
        return tuple(self.layer_kind(i) for i in range(self.num_layers))

    def num_params(self) -> int:
        """Parameter count (embedding counted once: it is tied to the output layer)."""
        d, h, k, hd, f = self.d_model, self.num_heads, self.num_kv_heads, self.head_dim, self.ffn_dim
        attn = d * h * hd * 2 + d * k * hd * 2 + (2 * hd if self.use_qk_norm else 0)
        per_layer = attn + 3 * d * f + 4 * d
        return self.vocab_size * d + self.num_layers * per_layer + d

    # ----- presets (DESIGN.md table; checked against HF configs and the GGUF metadata) ------
    @classmethod
    def gemma3_270m(cls) -> "ModelConfig":
        return cls(name="gemma3-270m", vocab_size=262_144, d_model=640, num_layers=18,
                   num_heads=4, num_kv_heads=1, head_dim=256, ffn_dim=2048,
                   sliding_window=512, global_every=6, query_pre_attn_scalar=256)

    @classmethod
    def gemma3_1b(cls) -> "ModelConfig":
        return cls(name="gemma3-1b", vocab_size=262_144, d_model=1152, num_layers=26,
                   num_heads=4, num_kv_heads=1, head_dim=256, ffn_dim=6912,
                   sliding_window=512, global_every=6, query_pre_attn_scalar=256)

    @classmethod
    def gemma3_4b(cls) -> "ModelConfig":
        return cls(name="gemma3-4b", vocab_size=262_144, d_model=2560, num_layers=34,
                   num_heads=8, num_kv_heads=4, head_dim=256, ffn_dim=10240,
                   sliding_window=1024, global_every=6, query_pre_attn_scalar=256,
                   rope_global_scale=8.0)

    @classmethod
    def gemma2_2b(cls) -> "ModelConfig":
        return cls(name="gemma2-2b", vocab_size=256_000, d_model=2304, num_layers=26,
                   num_heads=8, num_kv_heads=4, head_dim=256, ffn_dim=9216,
                   sliding_window=4096, global_every=2, query_pre_attn_scalar=256,
                   rope_global_base=10_000.0, use_qk_norm=False,
                   attn_softcap=50.0, final_softcap=30.0)

    @classmethod
    def tiny(cls, **overrides) -> "ModelConfig":
        """A Gemma-3-shaped toy for tests: every code path (GQA, local+global layers, a window
        shorter than the test sequences) at a size that compiles in seconds on a CPU."""
        base = dict(name="tiny", vocab_size=512, d_model=64, num_layers=4, num_heads=4,
                    num_kv_heads=2, head_dim=16, ffn_dim=128, sliding_window=8,
                    global_every=2, query_pre_attn_scalar=16)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny_gemma2(cls, **overrides) -> "ModelConfig":
        """Tiny Gemma-2-shaped toy: no QK-norm, both soft-caps on."""
        base = dict(use_qk_norm=False, attn_softcap=50.0, final_softcap=30.0,
                    rope_global_base=10_000.0, name="tiny-gemma2")
        base.update(overrides)
        return cls.tiny(**base)


PRESETS = {
    "gemma3-270m": ModelConfig.gemma3_270m,
    "gemma3-1b": ModelConfig.gemma3_1b,
    "gemma3-4b": ModelConfig.gemma3_4b,
    "gemma2-2b": ModelConfig.gemma2_2b,
}


def config_for(name: str) -> ModelConfig:
    """The architecture for a model name; `-it` variants share their base's architecture."""
    base = name.removesuffix("-it")
    if base not in PRESETS:
        names = ", ".join(sorted(PRESETS) + [n + "-it" for n in sorted(PRESETS) if n != "gemma3-270m"])
        raise ValueError(f"Unknown model {name!r}. Known models: {names}")
    return PRESETS[base]()
