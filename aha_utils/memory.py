"""How much accelerator memory a GRPO run needs, per device, before it starts.

`estimate_memory(model_cfg, run_cfg, n_data=1)` returns a `MemoryEstimate` (bytes per device):
`.table()` prints one line per term, `.fits(device_bytes)` says whether the total leaves room.
The notebooks and the CLI print it before a run, and `preset_for_device` picks the presets that
fit it. It is arithmetic on shapes: no JAX array is created.

Design notes: docs/TRAINING.md, "The memory estimate (`aha_utils.memory`)".
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp

from aha_utils.config import ModelConfig, config_for
from aha_utils.kv_cache import cache_slots
from aha_utils.buckets import DEFAULT_MAX_PROMPT_LEN, batch_bucket, prompt_bucket
from aha_utils.run_config import RunConfig

GB = 1e9
# Longest prompt in tokens (BOS included, Gemma tokenizer) by task and template: Countdown over
# 200 problems, GSM8K over 3,000 train questions (`data.prompts.prompt_token_stats`, max).
PROMPT_TOKENS = {("countdown", "base"): 144, ("countdown", "chat"): 116,
                 ("countdown", "few_shot"): 448, ("gsm8k", "base"): 288,
                 ("gsm8k", "chat"): 266, ("gsm8k", "few_shot"): 556}
LOGPROB_BUFFERS = 3     # float32 [rows, chunk, V]: an upper bound (see above)
SAMPLER_LOGIT_BUFFERS = 3
TRAIN_TERMS = ("gradients", "activations")
SAMPLER_TERMS = ("kv_cache", "decode_weights")
# On a CPU the estimate is of the process: Python, the JAX/XLA runtime and its compiled
# programs, the tokenizer and the GGUF file read while loading. Measured: peak RSS 6.34 GB vs
# 4.83 GB of terms (countdown CPU preset at micro-batches of 4, 2-core CPU, docs/TRAINING.md).
CPU_RUNTIME_BYTES = int(1.5e9)


def lora_param_count(cfg: ModelConfig, rank: int) -> int:
    """Adapter parameters of rank `rank` on the seven projections of every layer:
    rank x (fan-in + fan-out) each (`aha_utils.lora`'s A `[in..., r]` and B `[r, out...]`)."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    d, f = cfg.d_model, cfg.ffn_dim
    per_layer = (d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d)
    return rank * cfg.num_layers * per_layer


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, one field per term (see the module docstring)."""
    params: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    kv_cache: int
    decode_weights: int = 0
    runtime: int = 0                  # the process itself (CPU only: `CPU_RUNTIME_BYTES`)
    n_data: int = 1
    note: str = ""

    @property
    def persistent(self) -> int:
        return self.params + self.optimizer + self.reference + self.runtime

    @property
    def train_step(self) -> int:
        """What the compiled train step holds: arguments, outputs and temporaries."""
        return self.persistent + sum(getattr(self, k) for k in TRAIN_TERMS)

    @property
    def total(self) -> int:
        return self.persistent + max(sum(getattr(self, k) for k in TRAIN_TERMS),
                                     sum(getattr(self, k) for k in SAMPLER_TERMS))

    def fits(self, device_bytes: int | float | None, margin: float = 0.9) -> bool:
        """True when the total is at most `margin` of `device_bytes` (None: unknown, True)."""
        return device_bytes is None or self.total <= margin * device_bytes

    def table(self, device_bytes: int | float | None = None) -> str:
        rows = [("parameters", self.params), ("gradients (float32 accumulator)", self.gradients),
                ("AdamW moments", self.optimizer),
                ("reference policy copy", self.reference),
                ("activations (one micro-batch)", self.activations),
                ("sampler KV cache + logits", self.kv_cache),
                ("sampler's decode copy of the weights", self.decode_weights)]
        if self.runtime:
            rows.append(("runtime (Python, XLA, programs; CPU)", self.runtime))
        head = f"estimated memory per device ({self.n_data} data-parallel)"
        lines = [head + (f": {self.note}" if self.note else "")]
        lines += [f"  {name:42} {b / GB:7.2f} GB" for name, b in rows]
        lines.append(f"  {'train step (persistent + its terms)':42} {self.train_step / GB:7.2f} GB")
        lines.append(f"  {'total (persistent + max(train, sampler))':42} {self.total / GB:7.2f} GB")
        if device_bytes:
            verdict = "fits" if self.fits(device_bytes) else "does NOT fit"
            lines.append(f"  device memory {device_bytes / GB:.1f} GB: {verdict} (90% budget)")
        return "\n".join(lines)


def _nbytes(dtype: str) -> int:
    return jnp.dtype(dtype).itemsize


def estimate_memory(model_cfg: ModelConfig, run_cfg, *, n_data: int = 1,
                    prompt_len: int | None = None, kernels: bool | None = None,
                    host: bool = False) -> MemoryEstimate:
    """Per-device bytes of a GRPO run of `model_cfg` with `run_cfg` (a `RunConfig`) on `n_data`
    data-parallel devices. `prompt_len`: the longest prompt in tokens (default: the measured
    maximum for the run's task and template, `PROMPT_TOKENS`). `kernels`: whether the sampler
    decodes through the GPU wing (None: when JAX's backend here is a GPU). `host`: the run is
    on a CPU, so the process's own memory (`CPU_RUNTIME_BYTES`) counts too."""
    if n_data < 1:
        raise ValueError(f"n_data={n_data} must be >= 1")
    if kernels is None:
        import jax

        kernels = jax.default_backend() == "gpu"
    cfg, run = model_cfg, run_cfg
    train_cfg = run.train_config()
    p, c = _nbytes(run.param_dtype), _nbytes(run.compute_dtype)
    d, f, h, k, hd = cfg.d_model, cfg.ffn_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    L, V = cfg.num_layers, cfg.vocab_size
    n_all = cfg.num_params()
    lora = run.lora_rank is not None

    # Parameters, gradients, optimizer state.
    if lora:
        n_train, t_bytes = lora_param_count(cfg, run.lora_rank), 4
        params = n_all * p + n_train * 4
    else:
        n_train, t_bytes = n_all, p
        params = n_all * p
    gradients = n_train * 4
    optimizer = 2 * n_train * t_bytes
    reference = n_all * p if run.beta > 0 and not lora else 0

    # Activations of one micro-batch.
    if prompt_len is None:
        prompt_len = PROMPT_TOKENS.get((run.task, run.template), 512)
    cols = prompt_bucket(prompt_len, DEFAULT_MAX_PROMPT_LEN)
    t = cols + run.max_new_tokens
    rows_total = run.prompts_per_step * run.num_samples
    r = max(1, -(-(run.micro_batch_size or rows_total) // n_data))
    per_token_layer = c * (8 * d + 4 * f + 4 * h * hd + 4 * k * hd) + h * t * (4 + c)
    layer = r * t * per_token_layer
    n_mats = n_all - V * d                      # the projection weights of all layers
    if train_cfg.remat:
        acts = L * r * t * d * c + 2 * layer
        lora_weights = n_mats // L * c
    else:
        acts = (L + 1) * layer
        lora_weights = n_mats * c
    if lora:
        acts += lora_weights
    elif run.compute_dtype != run.param_dtype:
        acts += n_all * c
    chunk = min(train_cfg.logprob_chunk, run.max_new_tokens)
    acts += LOGPROB_BUFFERS * r * chunk * V * 4 + r * t * d * (c + 4)

    # Sampler: KV cache of prompts x G rows, the per-step logits, its copy of the weights.
    rows = batch_bucket(run.prompts_per_step, n_data) * run.num_samples // n_data
    length = cols + run.max_new_tokens
    slots = sum(cache_slots(cfg, kind, length) for kind in cfg.layer_kinds)
    cache_row = slots * (2 * k * hd * c + 4)
    kv = rows * cache_row + -(-rows // run.num_samples) * cache_row
    kv += SAMPLER_LOGIT_BUFFERS * rows * V * 4
    copy = n_all * c if c != p else n_mats * c if lora else 0
    wing = (n_mats - L * h * hd * d) * c if kernels else 0   # every projection but o, rebuilt
    decode_weights = copy + wing

    return MemoryEstimate(params=params, gradients=gradients, optimizer=optimizer,
                          reference=reference, activations=acts,
                          kv_cache=kv, decode_weights=decode_weights, n_data=n_data,
                          runtime=CPU_RUNTIME_BYTES if host else 0,
                          note=f"{cfg.name}, {'LoRA r=' + str(run.lora_rank) if lora else 'full FT'}"
                               f", {rows_total} rows in micro-batches of "
                               f"{run.micro_batch_size or rows_total}, {cols}+{run.max_new_tokens}"
                               f" tokens{', remat' if train_cfg.remat else ''}")


def device_summary() -> tuple[str, int, int | None]:
    """`(device_kind, device count, bytes_limit per device or None)` of the devices present:
    the arguments `preset_for_device` takes. CPUs usually report no memory limit."""
    import jax

    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:   # some backends raise instead of returning None
        stats = {}
    limit = stats.get("bytes_limit")
    if limit is None and dev.platform == "cpu":
        limit = host_memory_bytes()
    return dev.device_kind, jax.device_count(), limit


def host_memory_bytes() -> int | None:
    """The machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def advice(run_cfg, limit: float) -> str:
    """What to change when the estimate does not fit `limit` bytes."""
    rows = run_cfg.prompts_per_step * run_cfg.num_samples
    now = run_cfg.micro_batch_size or rows
    smaller = max([m for m in range(1, now) if rows % m == 0] or [1])
    return (f"WARNING: the estimate exceeds 90% of the {limit / GB:.1f} GB here and the run may "
            f"be killed: lower the micro-batch (--set micro_batch_size={smaller}; now {now}), "
            "or --set remat=true, or lower max_new_tokens / prompts_per_step")


def describe(run_cfg, *, n_data: int | None = None, memory_bytes: int | None = None) -> str:
    """The estimate's table for `run_cfg` on the devices present (or `n_data` devices of
    `memory_bytes`): what the CLI and the notebooks print before a run."""
    kind, n, limit = device_summary()
    n = n if n_data is None else n_data
    limit = limit if memory_bytes is None else memory_bytes
    est = estimate_memory(config_for(run_cfg.model), run_cfg, n_data=n, host=kind == "cpu")
    text = f"{n} x {kind}\n" + est.table(limit)
    return text if est.fits(limit) else text + "\n" + advice(run_cfg, limit)


def preset_for_device(task: str, device_kind: str, n_devices: int = 1,
                      memory_bytes: int | None = None, **overrides) -> RunConfig:
    """The preset for `n_devices` devices of `device_kind` (`jax.devices()[0].device_kind`,
    e.g. "TPU v5 lite", "NVIDIA H100 80GB HBM3", "cpu"), each with `memory_bytes` (from
    `memory_stats()["bytes_limit"]`; None = unknown). See `device_preset_name`."""
    name = device_preset_name(task, device_kind, n_devices, memory_bytes, **overrides)
    return RunConfig.named(task, name, **overrides)


def device_preset_name(task: str, device_kind: str, n_devices: int = 1,
                       memory_bytes: int | None = None, **overrides) -> str:
    """Which of `DEVICE_PRESETS` suits `n_devices` devices of `device_kind`.

    "cpu" -> `cpu`. Any TPU ("TPU v5 lite", "TPU v5e", "TPU v6 lite", ...) -> `tpu_v5e_8` from
    8 chips on, else `tpu_v5e_1`. Anything else is taken for a GPU -> `gpu`. When
    `memory_bytes` (per device) is known, the first candidate whose `estimate_memory` fits 90%
    of it wins, falling back to smaller presets (`tpu_v5e_8` -> `tpu_v5e_1` -> `cpu`;
    `gpu` -> `cpu`)."""
    if n_devices < 1:
        raise ValueError(f"n_devices={n_devices} must be >= 1")
    kind = device_kind.strip().lower()
    if kind == "cpu":
        return "cpu"
    if "tpu" in kind:
        candidates = (["tpu_v5e_8"] if n_devices >= 8 else []) + ["tpu_v5e_1", "cpu"]
    else:
        candidates = ["gpu", "cpu"]
    if memory_bytes is None:
        return candidates[0]
    for name in candidates:
        cfg = RunConfig.named(task, name, **overrides)
        if estimate_memory(config_for(cfg.model), cfg, n_data=n_devices).fits(memory_bytes):
            return name
    return candidates[-1]
