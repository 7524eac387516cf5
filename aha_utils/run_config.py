"""`RunConfig`: every knob of a GRPO run, with named presets per task and hardware.

Presets (`RunConfig.preset(task, backend)`; `quick()` shrinks any of them for `AHA_QUICK=1`):
- `countdown_cpu` / `gsm8k_cpu` (a laptop or a free CPU runtime): Gemma 3 270M with LoRA rank 8
  (lr 1e-4, the usual LoRA scale: adapters start at B = 0 and need larger steps than full
  fine-tuning), 4 prompts x G=4 samples, 128 new tokens, float32 throughout (bfloat16 matmuls
  are emulated and slower on CPUs), micro-batches of 2 rows (GSM8K's longer prompts: 1) so a
  laptop holds it (`aha_utils.memory` estimates the process's peak under 5 GB; 16 rows at once
  peaked at 14.9 GB). A step takes a few minutes
  on 2 cores; it shows the loop working, not learning.
- `countdown_gpu` / `gsm8k_gpu` (also used on TPU): the setting of DESIGN.md's HF TRL baseline,
  so the two can be compared: 16 prompts x G=8, 256 new tokens, full fine-tuning at lr 1e-5,
  no KL (beta=0, TRL's default), mu=1, float32 master weights (AdamW steps of 1e-5 vanish in
  bfloat16) with bfloat16 compute, micro-batches of 32 rows so 128 completions fit a 16 GB chip.
- Per device (`memory.preset_for_device(task, device_kind, n_devices, memory_bytes)`, or
  `named(task, name)` with a name of `DEVICE_PRESETS`): `cpu` and `gpu` are the two above;
  `tpu_v5e_1` / `tpu_v5e_8` run Gemma 3 1B-IT (Kaggle) with LoRA and the chat template, sized
  with `aha_utils.memory.estimate_memory` to fit 16 GB per chip with room to spare.
- Learning rate: linear warmup over `warmup_steps` updates, then cosine down to `lr_floor` x
  the peak at the end of the steps *planned* (`train_config(planned_steps)`): `steps`, or fewer
  when `--time-limit` sizes the run (`aha_utils.train` says how). `lr_floor=1.0` is the old
  constant rate, which the committed runs used.
- Validation: `val_n` problems drawn from the train split and kept out of training
  (`aha_utils.problems`), evaluated greedily every `eval_every` steps; the loop keeps the
  parameters that score best there. The test set (`eval_n`) is never used to choose.
- This module is a config: it imports only other configs (`train_config`), so anything may
  import it. Device presets sized by the memory estimate live in `aha_utils.memory`.
"""

from __future__ import annotations

import dataclasses

from aha_utils.train_config import GRPOConfig, TrainConfig

TASKS = ("countdown", "gsm8k")   # as aha_utils.rewards.TASKS (tests/test_imports.py checks)

DTYPES = ("float32", "bfloat16")
CPU_MICRO_BATCH = 2   # rows per forward/backward of the CPU presets: ~5 GB, not ~15 GB


@dataclasses.dataclass(frozen=True)
class RunConfig:
    task: str = "countdown"
    model: str = "gemma3-270m"
    # Warm start (aha_utils.sft): an SFT --out folder (or its params/) loaded into the model
    # before LoRA and the optimizer, also on --resume (a LoRA checkpoint holds adapters only).
    init_from: str | None = None
    steps: int = 100                    # GRPO steps (sample -> score -> mu updates)
    # data and prompts
    prompts_per_step: int = 4
    num_samples: int = 4                # G, completions per prompt
    num_numbers: int = 3                # Countdown numbers per problem
    template: str = "base"
    gsm8k_path: str | None = None       # local GSM8K JSONL folder; None = the HF Hub
    # sampling
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    # reward and objective
    reward_scheme: str = "tinyzero"
    loss_type: str = "grpo"
    scale_rewards: bool = True
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    num_iterations: int = 1             # mu
    # optimisation
    learning_rate: float = 1e-4
    warmup_steps: int = 0               # in optimizer updates
    lr_floor: float = 0.1               # cosine ends at lr_floor x learning_rate; 1.0 = constant
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    lora_rank: int | None = 8           # None = full fine-tuning
    lora_alpha: float = 16.0
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    micro_batch_size: int | None = None
    remat: bool = False
    # evaluation, logging, checkpoints
    eval_every: int = 5
    eval_n: int = 8                     # test problems (greedy), before and after
    val_n: int = 8                      # validation problems (greedy, every eval_every); 0 = none
    sample_every: int = 5               # save sampled completions every this many steps
    checkpoint_every: int = 5
    keep_checkpoints: int = 3
    seed: int = 0
    skip_nonfinite: bool = False        # skip a non-finite step (restoring the model) vs stop
    tensorboard: bool = False           # also write TensorBoard events beside metrics.jsonl

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {TASKS}")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.num_samples < 2:
            raise ValueError(f"num_samples={self.num_samples}: GRPO compares the samples of one "
                             "prompt, use at least 2 (e.g. 8)")
        for name in ("prompts_per_step", "max_new_tokens", "eval_every", "eval_n",
                     "sample_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.lr_floor <= 1.0:
            raise ValueError(f"lr_floor={self.lr_floor} must lie in [0, 1] (a fraction of "
                             "learning_rate; 1.0 = constant after warmup)")
        if self.val_n < 0:
            raise ValueError(f"val_n={self.val_n} must be >= 0 (0 = no validation)")
        if self.param_dtype not in DTYPES:
            raise ValueError(f"param_dtype={self.param_dtype!r}; choose one of {DTYPES}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 for GRPO sampling "
                             "(greedy samples of one prompt are identical: zero advantage)")
        self.grpo_config()   # validate the objective's fields eagerly, with its messages
        rows = self.prompts_per_step * self.num_samples
        if self.micro_batch_size is not None and rows % self.micro_batch_size:
            raise ValueError(f"{self.prompts_per_step} prompts x {self.num_samples} samples = "
                             f"{rows} rows is not a multiple of micro_batch_size="
                             f"{self.micro_batch_size}; change one of them")

    # ----- the library configs this run uses -------------------------------------------------
    def grpo_config(self) -> GRPOConfig:
        return GRPOConfig(loss_type=self.loss_type, epsilon=self.epsilon,
                               epsilon_high=self.epsilon_high, beta=self.beta,
                               scale_rewards=self.scale_rewards,
                               num_iterations=self.num_iterations,
                               max_completion_length=self.max_new_tokens)

    def train_config(self, planned_steps: int | None = None) -> TrainConfig:
        """The optimizer's config; its schedule ends at `planned_steps` (default `steps`)."""
        # a constant rate after warmup does not depend on the length: keep one program
        planned = self.steps if self.lr_floor == 1.0 else planned_steps or self.steps
        updates = planned * self.num_iterations
        return TrainConfig(learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
                           total_steps=max(updates, self.warmup_steps + 1),
                           final_lr_fraction=self.lr_floor,
                           weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
                           micro_batch_size=self.micro_batch_size, remat=self.remat,
                           lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                           compute_dtype=self.compute_dtype)

    # ----- presets -------------------------------------------------------------------------
    @classmethod
    def countdown_cpu(cls, **overrides) -> "RunConfig":
        return cls(**{"task": "countdown", "micro_batch_size": CPU_MICRO_BATCH, **overrides})

    @classmethod
    def gsm8k_cpu(cls, **overrides) -> "RunConfig":
        return cls(**{"task": "gsm8k", "micro_batch_size": CPU_MICRO_BATCH // 2, **overrides})

    @classmethod
    def countdown_gpu(cls, **overrides) -> "RunConfig":
        base = dict(task="countdown", prompts_per_step=16, num_samples=8, max_new_tokens=256,
                    learning_rate=1e-5, lora_rank=None, param_dtype="float32",
                    compute_dtype="bfloat16", micro_batch_size=32, eval_every=10, eval_n=128,
                    val_n=128, sample_every=10, checkpoint_every=10)
        return cls(**{**base, **overrides})

    @classmethod
    def gsm8k_gpu(cls, **overrides) -> "RunConfig":
        return cls.countdown_gpu(**{"task": "gsm8k", **overrides})

    @classmethod
    def preset(cls, task: str, backend: str, **overrides) -> "RunConfig":
        """The preset for `task` on `backend` (`jax.default_backend()`: cpu, gpu or tpu)."""
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        if backend not in ("cpu", "gpu", "tpu"):
            raise ValueError(f"unknown backend {backend!r}; expected cpu, gpu or tpu")
        kind = "cpu" if backend == "cpu" else "gpu"
        return getattr(cls, f"{task}_{kind}")(**overrides)

    # ----- presets per device (sized with aha_utils.memory.estimate_memory) ------------------
    @classmethod
    def tpu_v5e_1(cls, task: str = "countdown", **overrides) -> "RunConfig":
        """One TPU v5e chip (16 GB, free Colab): Gemma 3 1B-IT from Kaggle with its chat turn,
        LoRA rank 16 on a bfloat16 base (full fine-tuning needs ~16 GB before activations:
        float32 weights, AdamW moments and gradients), 16 prompts x 8 samples of 256
        new tokens in 8-row micro-batches with remat. `estimate_memory`: 5.4 GB (Countdown) and
        6.1 GB (GSM8K) of 16 (the sampler's merged weights included), room for the 2x by which
        it under-counted LoRA on an H100."""
        base = dict(task=task, model="gemma3-1b-it", template="chat", prompts_per_step=16,
                    num_samples=8, max_new_tokens=256, learning_rate=3e-5, lora_rank=16,
                    lora_alpha=32.0, param_dtype="bfloat16", compute_dtype="bfloat16",
                    micro_batch_size=8, remat=True, eval_every=10, eval_n=128, val_n=128,
                    sample_every=10,
                    checkpoint_every=10)
        return cls(**{**base, **overrides})

    @classmethod
    def tpu_v5e_8(cls, task: str = "countdown", **overrides) -> "RunConfig":
        """Eight TPU v5e chips (Kaggle), data parallel: the v5e-1 recipe with 4x the prompts
        (64 x 8 = 512 rows, 64 per chip) and 64-row micro-batches (8 per chip). Still LoRA: data
        parallelism replicates weights and optimizer state on every chip, so full fine-tuning of
        the 1B needs as much per chip as on one."""
        return cls.tpu_v5e_1(task, **{"prompts_per_step": 64, "micro_batch_size": 64,
                                      **overrides})

    @classmethod
    def named(cls, task: str, name: str, **overrides) -> "RunConfig":
        """The device preset `name` (one of `DEVICE_PRESETS`) for `task`."""
        if name not in DEVICE_PRESETS:
            raise ValueError(f"unknown device preset {name!r}; choose one of {DEVICE_PRESETS}")
        if name in ("cpu", "gpu"):
            return cls.preset(task, name, **overrides)
        return getattr(cls, name)(task, **overrides)

    def quick(self) -> "RunConfig":
        """`AHA_QUICK=1`: the same code path at CI size (2 prompts x 4, 32 tokens, 4 eval problems,
        every step logged, sampled and checkpointed)."""
        return dataclasses.replace(
            self, prompts_per_step=2, num_samples=4, max_new_tokens=32, eval_n=4, eval_every=1,
            sample_every=1, checkpoint_every=1, val_n=min(self.val_n, 2),
            micro_batch_size=None if self.micro_batch_size is None
            else min(8, self.micro_batch_size))


DEVICE_PRESETS = ("cpu", "gpu", "tpu_v5e_1", "tpu_v5e_8")

# One line per field for `--help` (tests check that every field has one).
FIELD_HELP = {
    "task": "countdown or gsm8k (--task)",
    "model": "model name (--model); gemma3-270m needs no download",
    "init_from": "SFT --out folder to start from (python -m aha_utils.sft)",
    "steps": "GRPO steps to train up to (--steps)",
    "prompts_per_step": "problems sampled per step",
    "num_samples": "G: completions per problem, compared with each other",
    "num_numbers": "Countdown numbers per problem",
    "template": "prompt template: base, chat or few_shot",
    "gsm8k_path": "folder of GSM8K train/test JSONL (--gsm8k-path); none = the shipped copy/hub",
    "max_new_tokens": "longest completion, in tokens",
    "temperature": "sampling temperature (> 0)",
    "top_k": "sample from the k likeliest tokens only; none = all",
    "top_p": "nucleus sampling mass; none = off",
    "reward_scheme": "how answers and format are scored (aha_utils.rewards)",
    "loss_type": "grpo, bnpo, dapo or dr_grpo: how token losses are averaged",
    "scale_rewards": "divide advantages by the group's std (false = Dr.GRPO)",
    "epsilon": "PPO clip: ratio kept within [1 - epsilon, 1 + epsilon_high]",
    "epsilon_high": "upper clip (DAPO: 0.28); none = epsilon",
    "beta": "KL penalty to the starting model; 0 = off (no reference copy)",
    "num_iterations": "mu: optimizer updates per sampled batch",
    "learning_rate": "peak AdamW learning rate",
    "warmup_steps": "linear warmup, in optimizer updates",
    "lr_floor": "cosine ends at lr_floor x learning_rate; 1.0 = constant",
    "max_grad_norm": "gradient clipping norm",
    "weight_decay": "AdamW weight decay",
    "lora_rank": "LoRA rank; none = full fine-tuning",
    "lora_alpha": "LoRA scale (alpha / rank)",
    "param_dtype": "weights' dtype: float32 or bfloat16",
    "compute_dtype": "matmul dtype: float32 or bfloat16",
    "micro_batch_size": "rows per forward/backward (less memory); none = whole batch",
    "remat": "recompute activations in the backward pass (less memory, slower)",
    "eval_every": "validate and test every this many steps",
    "eval_n": "test problems (greedy), before, during and after",
    "val_n": "validation problems (choose the best step); 0 = none",
    "sample_every": "save sampled completions every this many steps",
    "checkpoint_every": "save a checkpoint every this many steps",
    "keep_checkpoints": "how many recent checkpoints to keep",
    "seed": "seed of problems and sampling (--seed)",
    "skip_nonfinite": "skip a step whose loss/gradient is not finite instead of stopping",
    "tensorboard": "also write TensorBoard event files under --out/tensorboard",
}
