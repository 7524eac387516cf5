"""LoRA (Hu et al. 2021) on the Gemma projections, without changing the model's code.

`apply_lora(model, rank=8, alpha=16, rngs=nnx.Rngs(0))` replaces each target projection weight
(`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj` by default) by a
small `LoRAWeight` module. The model reads every projection as `self.q_proj[...]`; `LoRAWeight`
answers that with the merged weight `W + (alpha / rank) * A @ B`, so `model.py` is untouched and
every forward (training, the sampler, the notebooks) sees the adapted model.

Design decisions:
- Variable types carry the roles. The base weight becomes `LoRABase`, a plain `nnx.Variable`
  and *not* an `nnx.Param`: no optimizer or `nnx.Param` filter can ever update it. `A` and `B`
  are `LoRAParam(nnx.Param)`, so `nnx.state(model, LoRAParam)` is exactly the trainable set (and
  a LoRA checkpoint can hold only that). Embedding and norms stay `nnx.Param` but are not trained
  when the optimizer's `wrt` is `LoRAParam`.
- Shapes keep the projection's named axes: `A` is `[in-dims..., r]` and `B` is `[r, out-dims...]`
  (q/k/v: `[D, r]` and `[r, N, hd]`; o: `[H, hd, r]` and `[r, D]`; MLP: `[in, r]`, `[r, out]`), so
  `A @ B` is a `tensordot` over the rank and has the base layout. Parameters are named
  `<target>_lora_a` / `<target>_lora_b`, because sharding rules are keyed by the last path
  element and A's rule depends on the target (`aha_utils.sharding.PARAM_AXES`: A keeps the
  base's input axes, B its output axes). When the base is sharded, `apply_lora` places A and B
  on the same mesh; shard the model first (or load it with a mesh), then apply LoRA.
- Initialisation as in the paper and PEFT: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), B = 0, so the
  adapted model starts *equal* to the base. Scale `alpha / rank` (the original LoRA scaling).
- The frozen base is the reference policy for free: with every A and B set to zero the merged
  weights are the base weights. `zero_adapters` does that functionally (on a split state), which
  is how `aha_utils.train_step` computes reference log-probs without a second copy of the model.
- Merging in the weight rather than `x @ A @ B` on the activations costs one `[in, out]` matmul
  per projection and forward, and a weight-sized gradient buffer per layer in the backward pass;
  the memory LoRA saves is the optimizer state (AdamW's two moments of every base weight), which
  is what decides whether the 1B/4B fit a 16 GB chip. `merge_lora` folds the adapters back into
  plain `nnx.Param` weights (for export or faster sampling).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding

from aha_utils.sharding import param_spec

# Projection name -> how many leading axes are inputs (o_proj contracts heads and head_dim).
TARGET_INPUT_AXES = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2,
                     "gate_proj": 1, "up_proj": 1, "down_proj": 1}
ALL_TARGETS = tuple(TARGET_INPUT_AXES)


class LoRAParam(nnx.Param):
    """A trainable LoRA adapter matrix (A or B)."""


class LoRABase(nnx.Variable):
    """The frozen base weight of an adapted projection (deliberately not an `nnx.Param`)."""


class LoRAWeight(nnx.Module):
    """Stands where a projection weight stood; `self[...]` is the merged weight."""

    def __init__(self, base: jax.Array, target: str, rank: int, alpha: float, rngs: nnx.Rngs):
        n_in = TARGET_INPUT_AXES[target]
        in_shape, out_shape = base.shape[:n_in], base.shape[n_in:]
        bound = 1.0 / math.sqrt(math.prod(in_shape))
        a = jax.random.uniform(rngs.params(), (*in_shape, rank), jnp.float32, -bound, bound)
        b = jnp.zeros((rank, *out_shape), jnp.float32)
        # Adapters stay float32 (they are small and trained); the step casts them for compute.
        a, b = _place_like(base, f"{target}_lora_a", a), _place_like(base, f"{target}_lora_b", b)
        self.target = target
        self.scale = alpha / rank
        self.base = LoRABase(base)
        setattr(self, f"{target}_lora_a", LoRAParam(a))
        setattr(self, f"{target}_lora_b", LoRAParam(b))

    @property
    def lora_a(self) -> LoRAParam:
        return getattr(self, f"{self.target}_lora_a")

    @property
    def lora_b(self) -> LoRAParam:
        return getattr(self, f"{self.target}_lora_b")

    def merged(self) -> jax.Array:
        w = self.base[...]                                               # base layout
        delta = jnp.tensordot(self.lora_a[...], self.lora_b[...], axes=1)  # [in..., out...]
        return w + (self.scale * delta).astype(w.dtype)

    def __getitem__(self, index):
        return self.merged()[index]


def _place_like(base: jax.Array, name: str, x: jax.Array) -> jax.Array:
    """Put an adapter on the base weight's mesh, with its own PARAM_AXES rule."""
    sharding = getattr(base, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        return x
    return jax.device_put(x, NamedSharding(sharding.mesh, param_spec(name, x.shape, sharding.mesh)))


def _projections(model: nnx.Module):
    """(parent module, attribute name) of every projection weight, adapted or not."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and not isinstance(node, LoRAWeight):
            for name in TARGET_INPUT_AXES:
                if name in vars(node):
                    yield node, name


def apply_lora(model: nnx.Module, *, rank: int, alpha: float, rngs: nnx.Rngs,
               targets=ALL_TARGETS) -> nnx.Module:
    """Adapt `targets` of every layer in place (returns the model). Starts equal to the base."""
    if rank < 1:
        raise ValueError(f"LoRA rank={rank} must be >= 1 (typical: 8 to 64)")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha={alpha} must be > 0 (typical: 2 x rank)")
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown or not targets:
        raise ValueError(f"LoRA targets must be a non-empty subset of {ALL_TARGETS}; "
                         f"got {tuple(targets)}")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; call merge_lora(model) first "
                         "to fold them in, or keep training the ones it has")
    found = [(parent, name) for parent, name in _projections(model) if name in targets]
    if not found:
        raise ValueError(f"no {tuple(targets)} weights found in {type(model).__name__}")
    for parent, name in found:
        weight = getattr(parent, name)
        setattr(parent, name, LoRAWeight(weight[...], name, rank, alpha, rngs))
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every adapter into its weight (`W + s A @ B`, in the base dtype) as a plain
    `nnx.Param` again, in place. The result computes what the adapted model computed."""
    for parent, name in list(_projections(model)):
        weight = getattr(parent, name)
        if isinstance(weight, LoRAWeight):
            setattr(parent, name, nnx.Param(weight.merged()))
    return model


def has_lora(model: nnx.Module) -> bool:
    return any(isinstance(node, LoRAWeight) for _, node in nnx.iter_graph(model))


def lora_state(model: nnx.Module) -> nnx.State:
    """The trainable adapter weights (what a LoRA checkpoint needs to hold)."""
    return nnx.state(model, LoRAParam)


def zero_adapters(state: nnx.State) -> nnx.State:
    """The same LoRA state with A and B zeroed: merged into the model, it is the frozen base
    (the reference policy), with no copy of the base weights made."""
    return jax.tree.map(jnp.zeros_like, state)
