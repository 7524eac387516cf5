"""What `--resume` may change (GRPO's `check_resume`; `changed_settings`, which SFT uses too),
and the undo copy of a step that `skip_nonfinite` takes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from aha_utils.run_config import RunConfig
from aha_utils.train_step import trainable_filter

# Fields a checkpoint from before they existed ran with (so an old run resumes unchanged).
LEGACY_DEFAULTS = {"lr_floor": 1.0, "val_n": 0}
# Fields --resume may change: cadence, options that do not alter training, a moved data path,
# and how the batch is split in memory (the same update, up to float rounding).
RESUME_FREE = ("steps", "eval_every", "sample_every", "checkpoint_every", "keep_checkpoints",
               "gsm8k_path", "skip_nonfinite", "tensorboard", "micro_batch_size", "remat")


def changed_settings(saved: dict, now: dict, free=()) -> dict:
    """`{name: (saved value, value now)}` of the settings in `now` that differ from `saved`
    (a checkpoint's, read back from JSON), except the `free` ones. GRPO and SFT both refuse a
    resume with any."""
    return {k: (saved.get(k), v) for k, v in now.items() if k not in free and saved.get(k) != v}


def check_resume(cfg: RunConfig, meta: dict, data=None) -> None:
    """Refuse a resume with settings that alter training (`RESUME_FREE` ones may change) or
    with another training pool than the checkpoint's."""
    changed = changed_settings({**LEGACY_DEFAULTS, **meta["config"]}, dataclasses.asdict(cfg),
                               RESUME_FREE)
    if changed:
        raise ValueError(f"--resume with settings that alter training: {sorted(changed)} "
                         f"(saved, now): {changed}; use the saved values (--set FIELD=VALUE) or "
                         f"a new --out. Free to change: {', '.join(RESUME_FREE)}")
    if data is not None and meta.get("pool_sha256") not in (None, data.pool_hash()):
        raise ValueError("--resume: the training problems differ from the checkpoint's (another "
                         "GSM8K copy at --gsm8k-path?); point --gsm8k-path at the data the run "
                         "started with, or use a new --out")


def snapshot(model, optimizer, train_cfg):
    """Copies of the trainable parameters and the optimizer state (undo for a skipped step)."""
    copy = lambda state: jax.tree.map(jnp.copy, state)   # noqa: E731
    return copy(nnx.state(model, trainable_filter(train_cfg))), copy(nnx.state(optimizer))
