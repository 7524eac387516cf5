"""Training checkpoints: a thin wrapper over orbax's `CheckpointManager`.

`Checkpointer(directory, every=N)` saves, at the steps it is asked to, three items of one step:
- `trainable`: the trained parameters as a pure dict (the LoRA adapters with LoRA, every
  `nnx.Param` for full fine-tuning). The frozen base of a LoRA run is not saved: it is the
  loaded model, and saving 270M-4B frozen weights every N steps would cost disk and minutes.
- `optimizer`: `nnx.state(optimizer)` as a pure dict (AdamW moments and the update count).
- `meta`: JSON with the step, the data position, the RNG (base key data) and the run config,
  so `--resume` can refuse a different config instead of silently mixing two runs.

Design decisions:
- orbax writes each step into a temporary folder and renames it only once complete, and the
  keep-last policy (`max_to_keep`) deletes old steps only after a newer one is finalized; so a
  crash or a failed save mid-write leaves the previous good checkpoint in place, and
  `latest_step()` never returns a partial one.
- Saves are asynchronous (training continues while the arrays are written);
  `wait_until_finished()` is called before reading, before a restore and by `close()`.
- Restore goes into abstract targets built from the live model and optimizer
  (`jax.ShapeDtypeStruct` with each array's sharding), so arrays land directly on the right
  devices and dtypes, then `nnx.update` writes them into the modules.
- The step a checkpoint is filed under is the number of completed GRPO steps: resuming from
  step s runs step s next.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx


def _abstract(tree):
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: orbax's restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


class Checkpointer:
    """Save and restore (trainable params, optimizer state, meta) under `directory`."""

    def __init__(self, directory: str | Path, *, every: int, keep: int = 3):
        if every < 1 or keep < 1:
            raise ValueError(f"checkpoint every={every} and keep={keep} must both be >= 1")
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                                 create=True),
            item_names=("trainable", "optimizer", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer, trainable,
             meta: dict, *, force: bool = False) -> bool:
        """Save when `step` is on the interval (or `force`); returns whether a save started."""
        args = ocp.args.Composite(
            trainable=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model, trainable))),
            optimizer=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(optimizer))),
            meta=ocp.args.JsonSave(meta))
        return self.manager.save(step, args=args, force=force)

    def restore(self, model: nnx.Module, optimizer: nnx.Optimizer, trainable,
                step: int | None = None) -> dict:
        """Load checkpoint `step` (default: the latest) into `model` and `optimizer` in place;
        returns its meta dict."""
        self.manager.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        params = nnx.state(model, trainable)
        opt_state = nnx.state(optimizer)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            trainable=ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(params))),
            optimizer=ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(opt_state))),
            meta=ocp.args.JsonRestore()))
        nnx.replace_by_pure_dict(params, restored.trainable)
        nnx.replace_by_pure_dict(opt_state, restored.optimizer)
        nnx.update(model, params)
        nnx.update(optimizer, opt_state)
        return dict(restored.meta)

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
