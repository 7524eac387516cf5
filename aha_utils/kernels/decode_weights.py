"""The weights the GPU decode step reads, in its own layout, built from a model (not in it).

A decode step multiplies a few rows by every weight, so each matmul is a kernel that streams one
matrix from memory, and small ones (q, k, v) cost their launch and split-K reduction more than
their bytes. So the wing reads q/k/v as one matrix, gate/up as one, and the down projection
transposed (read along its rows); o is the model's own, reshaped (no copy). The model is not
changed: its forward, the train step and the checkpoints keep their layout. Built once per
sampler call inside its program, from the sampler's decode copy (LoRA merged, cast); it costs a
copy of every projection but o while the call runs (`aha_utils.memory`, decode_weights).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LayerWeights(NamedTuple):
    qkv: jax.Array       # [D, (H + 2K) hd]: q's heads, then k's, then v's
    o: jax.Array         # [H hd, D]
    gate_up: jax.Array   # [D, 2F]: gate, then up
    down_t: jax.Array    # [D, F]: the down projection transposed


class DecodeWeights(NamedTuple):
    """One `LayerWeights` a layer (a pytree). The norms and the embedding stay the model's."""
    layers: tuple[LayerWeights, ...]

    @classmethod
    def build(cls, model) -> DecodeWeights:
        """From a `model.Gemma` (its weights as they are: merge LoRA and cast first)."""
        return cls(tuple(layer_weights(layer) for layer in model.layers))


def layer_weights(layer) -> LayerWeights:
    """A `model.Block`'s weights in the decode layout."""
    attn, mlp = layer.attn, layer.mlp
    o = attn.o_proj[...]
    return LayerWeights(
        qkv=qkv_weights(attn), o=o.reshape(-1, o.shape[-1]),            # [H hd, D]
        gate_up=jnp.concatenate([mlp.gate_proj[...], mlp.up_proj[...]], axis=1),  # [D, 2F]
        down_t=mlp.down_proj[...].T)                                    # [D, F]


def qkv_weights(attn) -> jax.Array:
    """`[D, (H + 2K) hd]`: a `model.Attention`'s q, k and v projections as one matrix."""
    d = attn.q_proj.shape[0]
    return jnp.concatenate([attn.q_proj[...].reshape(d, -1), attn.k_proj[...].reshape(d, -1),
                            attn.v_proj[...].reshape(d, -1)], axis=1)
