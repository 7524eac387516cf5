"""The mesh and the parameter PartitionSpecs: one codepath for 1 CPU, 1 TPU chip, a v5e-8, or GPUs.

Design decisions:
- Two mesh axes: `data` (batch rows) and `model` (tensor parallel over heads, FFN and vocab).
  The default puts every device on `data`: Gemma 3 270M/1B fit one chip many times over, so
  data parallelism is the fast choice; `model_parallel > 1` is there for the 4B on 16 GB chips.
- Specs live here, keyed by parameter name, not inside the modules, so the model file stays a
  plain transcription of the architecture and the layout can change without touching it.
- An axis is sharded only when the mesh divides it. The one case this matters for is the single
  KV head of the 270M/1B (multi-query attention): it cannot be split, so k/v are replicated
  across `model`, which is also what Megatron-style tensor parallelism does for MQA.
"""

from __future__ import annotations

import contextlib
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"

# Parameter name -> the mesh axis of each array dimension (None = replicated).
PARAM_AXES: dict[str, tuple[str | None, ...]] = {
    "embedding": (MODEL, None),        # [V, D]  vocab-parallel: logits come out sharded on V
    "q_proj": (None, MODEL, None),     # [D, H, hd]
    "k_proj": (None, MODEL, None),     # [D, K, hd]
    "v_proj": (None, MODEL, None),     # [D, K, hd]
    "o_proj": (MODEL, None, None),     # [H, hd, D]
    "gate_proj": (None, MODEL),        # [D, F]
    "up_proj": (None, MODEL),          # [D, F]
    "down_proj": (MODEL, None),        # [F, D]
    "scale": (None,),                  # norms: tiny, replicated
    # LoRA adapters (aha_utils.lora): A [in-dims..., r] keeps the base's input axes, B
    # [r, out-dims...] its output axes, so A @ B comes out sharded like the base weight.
    "q_proj_lora_a": (None, None),            # [D, r]
    "q_proj_lora_b": (None, MODEL, None),     # [r, H, hd]
    "k_proj_lora_a": (None, None),            # [D, r]
    "k_proj_lora_b": (None, MODEL, None),     # [r, K, hd]
    "v_proj_lora_a": (None, None),            # [D, r]
    "v_proj_lora_b": (None, MODEL, None),     # [r, K, hd]
    "o_proj_lora_a": (MODEL, None, None),     # [H, hd, r]
    "o_proj_lora_b": (None, None),            # [r, D]
    "gate_proj_lora_a": (None, None),         # [D, r]
    "gate_proj_lora_b": (None, MODEL),        # [r, F]
    "up_proj_lora_a": (None, None),           # [D, r]
    "up_proj_lora_b": (None, MODEL),          # [r, F]
    "down_proj_lora_a": (MODEL, None),        # [F, r]
    "down_proj_lora_b": (None, None),         # [r, D]
}
BATCH = P(DATA)  # batches [B, ...]: rows split over `data`, the rest replicated


def make_mesh(model_parallel: int = 1, devices=None) -> Mesh:
    """A (data, model) mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if model_parallel < 1 or n % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} must divide the {n} devices present")
    shape = (n // model_parallel, model_parallel)
    if devices == jax.devices():
        return jax.make_mesh(shape, (DATA, MODEL), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    return Mesh(np.asarray(devices).reshape(shape), (DATA, MODEL),
                axis_types=(jax.sharding.AxisType.Auto,) * 2)


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The PartitionSpec of a parameter called `name` (its last path element) with `shape`."""
    if name not in PARAM_AXES:
        raise KeyError(f"No sharding rule for parameter {name!r}; add one to PARAM_AXES")
    axes = PARAM_AXES[name]
    if len(axes) != len(shape):
        raise ValueError(f"Rule for {name!r} has {len(axes)} axes but the array has shape {shape}")
    return P(*(ax if ax is None or dim % mesh.shape[ax] == 0 else None
               for ax, dim in zip(axes, shape)))


def param_shardings(model: nnx.Module, mesh: Mesh) -> dict[tuple, NamedSharding]:
    """{parameter path: NamedSharding} for every `nnx.Param` of `model`."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {tuple(path): NamedSharding(mesh, param_spec(str(path[-1]), var.shape, mesh))
            for path, var in flat}


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Move every parameter onto its sharding (in place; returns the model for chaining)."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    shardings = param_shardings(model, mesh)
    for path, var in flat:
        var.set_value(jax.device_put(var.get_value(), shardings[tuple(path)]))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def model_mesh(model: nnx.Module) -> Mesh | None:
    """The mesh the model's parameters live on (None for an unsharded, single-device model)."""
    sharding = getattr(model.embedding[...], "sharding", None)
    return sharding.mesh if isinstance(sharding, NamedSharding) else None


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, P(DATA, *([None] * (ndim - 1))))


def shard_batch(x, mesh: Mesh):
    """Put a batch `[B, ...]` on the mesh, rows split over `data`. B must divide evenly."""
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    n = mesh.shape[DATA]
    if x.shape[0] % n:
        raise ValueError(f"batch of {x.shape[0]} rows does not split over {n} data-parallel "
                         f"devices; use a multiple of {n} (pad the batch)")
    return put(x, batch_sharding(mesh, x.ndim))


def put(x, sharding: NamedSharding):
    """`jax.device_put` that also works when `sharding` spans several processes.

    Multi-process (`jax.distributed`) runs cannot `device_put` a `jax.Array` that lives on one
    local device onto a mesh with other processes' devices; a host (numpy) value that every
    process holds identically can be. So a local jax value goes through the host first (typed
    PRNG keys through their key data). Single-process calls take the plain path unchanged."""
    if not isinstance(x, jax.Array):
        return jax.device_put(np.asarray(x), sharding)
    if x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)


def traced_under(mesh: Mesh | None):
    """A context that traces under `mesh`'s abstract mesh (a no-op without mesh). The sampler
    and the train step trace their model calls under it, so that GPU kernels deep in the model
    can see how the rows are split (`rows_split_only`)."""
    return contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(
        mesh.abstract_mesh)


def rows_split_only() -> bool:
    """Whether the arrays traced now are whole on each device apart from their rows: no mesh in
    context and a single device, or a mesh in context whose axes other than `data` are 1. The
    GPU kernels that XLA cannot split by heads (the decode-attention Pallas call, cuDNN's fused
    attention) run only then; elsewhere the model keeps its XLA path."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return jax.device_count() == 1
    return all(size == 1 for name, size in mesh.shape.items() if name != DATA)


def rows_per_device(rows: int) -> int:
    """How many of `rows` rows each device holds under the mesh in context (all of them with no
    mesh): what the GPU kernels' row limits are measured against."""
    mesh = jax.sharding.get_abstract_mesh()
    return rows // (1 if mesh.empty else mesh.shape[DATA])


def on_each_devices_rows(fn, args, in_specs, out_specs, *, rows: int, what: str):
    """`fn(*args)` for a GPU kernel that XLA cannot partition: called as it is with no mesh in
    context (or one device); under a mesh (where `rows_split_only()`), wrapped in a `shard_map`
    so that each device runs it on its own rows. `in_specs` / `out_specs` name the `data` axis
    of each per-row argument and output (`P()`: whole on every device); `rows` is the batch,
    which must split evenly (`what` names the caller in the error)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fn(*args)
    if rows % mesh.shape[DATA]:
        raise ValueError(f"{what}: {rows} rows do not split over the mesh's "
                         f"{mesh.shape[DATA]} data-parallel devices; pad the batch")
    # check_vma=False: pallas_call's output shapes carry no varying-axes annotation to check.
    return jax.shard_map(fn, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*args)


def fetch(tree):
    """Host numpy copies of every array in `tree`, including rows held by other processes
    (`jax.device_get` can only read this process's devices)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(one, tree)


def describe(mesh: Mesh) -> str:
    kinds = {d.device_kind for d in mesh.devices.flat}
    return (f"mesh {dict(mesh.shape)} over {math.prod(mesh.devices.shape)} x "
            f"{'/'.join(sorted(kinds))}")
