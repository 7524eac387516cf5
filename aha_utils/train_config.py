"""The training configs: `GRPOConfig` (the objective) and `TrainConfig` (the optimizer and its
schedule). Frozen dataclasses that validate themselves; they sit at the bottom of the import graph
(stdlib only), so every module can import them and they import nothing of ours."""

from __future__ import annotations

import dataclasses

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
IS_LEVELS = ("token", "sequence", "gspo-token")
KL_ESTIMATORS = ("k1", "k3")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """The objective's knobs (TRL names where TRL has the same knob)."""

    loss_type: str = "grpo"
    importance_sampling_level: str = "token"
    epsilon: float = 0.2                 # lower clip: ratio >= 1 - epsilon
    epsilon_high: float | None = None    # upper clip (DAPO clip-higher: 0.28); None = epsilon
    beta: float = 0.0                    # KL coefficient; 0 = no reference model
    kl_estimator: str = "k3"
    scale_rewards: bool = True           # False = Dr.GRPO advantages (mean only)
    mask_truncated_completions: bool = False
    num_iterations: int = 1              # mu: optimizer updates per sampled batch
    max_completion_length: int | None = None  # dr_grpo normaliser; None = the mask's width

    def __post_init__(self):
        for field, value, allowed in (("loss_type", self.loss_type, LOSS_TYPES),
                                      ("importance_sampling_level",
                                       self.importance_sampling_level, IS_LEVELS),
                                      ("kl_estimator", self.kl_estimator, KL_ESTIMATORS)):
            if value not in allowed:
                raise ValueError(f"{field}={value!r}; choose one of {allowed}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon={self.epsilon} must lie in (0, 1), e.g. 0.2")
        if self.epsilon_high is not None and self.epsilon_high <= 0:
            raise ValueError(f"epsilon_high={self.epsilon_high} must be > 0 (or None = epsilon)")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0 (0 switches the KL term off)")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations={self.num_iterations} must be >= 1")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError("max_completion_length must be >= 1 (or None = the mask's width)")

    @property
    def eps_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    total_steps: int = 1000            # optimizer updates (batches x num_iterations)
    final_lr_fraction: float = 0.1     # cosine decays to learning_rate x this
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.99
    max_grad_norm: float = 1.0
    micro_batch_size: int | None = None  # rows per forward/backward; None = the whole batch
    remat: bool = False                # recompute each block in the backward pass
    lora_rank: int | None = None       # None = full fine-tuning
    lora_alpha: float = 16.0
    compute_dtype: str = "bfloat16"    # "bfloat16" or "float32"
    logprob_chunk: int = 64            # completion tokens per vocabulary projection

    def __post_init__(self):
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({self.warmup_steps}) < total_steps "
                             f"({self.total_steps})")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError("micro_batch_size must be >= 1 (or None = the whole batch)")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError("lora_rank must be >= 1 (or None = full fine-tuning)")
        if self.compute_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"compute_dtype={self.compute_dtype!r}; use 'bfloat16' or 'float32'")
        if self.logprob_chunk < 1:
            raise ValueError("logprob_chunk must be >= 1")
