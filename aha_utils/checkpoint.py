"""Checkpoints: training state (`Checkpointer`, a thin wrapper over orbax's `CheckpointManager`),
parameters on disk (`save_params` / `load_params`: the SFT result a GRPO run starts from) and the
best-on-validation parameters of a run (`BestParams`).

`Checkpointer(directory, every=N)` saves, at the steps it is asked to, three items of one step:
- `trainable`: the trained parameters as a pure dict (the LoRA adapters with LoRA, every
  `nnx.Param` for full fine-tuning). The frozen base of a LoRA run is not saved: it is the
  loaded model, and saving 270M-4B frozen weights every N steps would cost disk and minutes.
- `optimizer`: `nnx.state(optimizer)` as a pure dict (AdamW moments and the update count).
- `meta`: JSON with the step, the data position, the RNG (base key data) and the run config,
  so `--resume` can refuse a different config instead of silently mixing two runs.

Design notes: docs/TRAINING.md, "Checkpoints (`aha_utils.checkpoint`)".
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx


def _abstract(tree):
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: orbax's restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree)


def _quiet_closed_loop() -> None:
    """During and after a failed restore, orbax's callbacks report `Event loop is closed`
    hundreds of times as unraisable errors: drop those (and only those)."""
    previous = sys.unraisablehook
    if getattr(previous, "_aha_quiet", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError)
                and "Event loop is closed" in str(unraisable.exc_value)):
            previous(unraisable)
    hook._aha_quiet = True
    sys.unraisablehook = hook


class CorruptCheckpoint(RuntimeError):
    """No checkpoint of a run restores."""


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

    def read_meta(self, step: int | None = None) -> dict:
        """The meta dict of checkpoint `step` (default: the latest), without loading arrays."""
        self.manager.wait_until_finished()
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        return dict(restored.meta)

    def newest_meta(self) -> dict | None:
        """The meta of the newest checkpoint whose meta reads (None: no checkpoint)."""
        for step in sorted(self.all_steps(), reverse=True):
            try:
                return self.read_meta(step)
            except Exception:   # noqa: BLE001 - a damaged one: restore_newest reports it
                continue
        return None

    def start_meta(self, resume: bool, held: str) -> dict | None:
        """The meta to resume from (None for a fresh start), after the checks both CLIs make
        before anything loads: `--resume` needs a checkpoint whose meta reads, and a fresh start
        refuses a folder that holds checkpoints (`held` names what they are, in the message)."""
        latest = self.latest_step()
        if resume and latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.directory}; run without "
                                    "--resume to start a fresh run there")
        if not resume and latest is not None:
            raise FileExistsError(f"{self.directory.parent} {held} (checkpoint at step "
                                  f"{latest}); pass --resume to continue it, or choose another "
                                  "--out")
        meta = self.newest_meta() if resume else None
        if resume and meta is None:
            raise CorruptCheckpoint(f"no checkpoint in {self.directory} has readable metadata; "
                                    "nothing was deleted. Start a fresh run with another --out")
        return meta

    def restore_newest(self, model: nnx.Module, optimizer: nnx.Optimizer, trainable,
                       report=print) -> dict:
        """Restore the newest checkpoint that loads and return its meta. Damaged newer ones
        are named via `report` and moved to `<directory>.corrupt/` (nothing is deleted);
        if none loads, `CorruptCheckpoint` says so and nothing is moved."""
        self.manager.wait_until_finished()
        _quiet_closed_loop()   # before any attempt: a failing one reports while it fails
        bad = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                meta = self.restore(model, optimizer, trainable, step)
            except Exception as err:   # noqa: BLE001 - orbax/tensorstore raise many kinds
                bad.append((step, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))
                continue
            if bad:
                aside = self.directory.with_name(self.directory.name + ".corrupt")
                aside.mkdir(exist_ok=True)
                for s, why in bad:
                    os.replace(self.directory / str(s), aside / str(s))
                    report(f"checkpoint step {s} in {self.directory} is corrupt ({why}); "
                           f"moved to {aside / str(s)}")
                self.manager.reload()
                report(f"resuming from step {step}, the newest checkpoint that restores")
            return meta
        listed = "; ".join(f"step {s}: {why}" for s, why in bad)
        raise CorruptCheckpoint(
            f"no checkpoint in {self.directory} restores ({listed}). Nothing was deleted. "
            "Start a fresh run with another --out (or without --resume after moving "
            f"{self.directory} aside)")

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


# ----------------------------------------------------------------------------------------------
# Parameters on disk
# ----------------------------------------------------------------------------------------------
def _shapes(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(x.shape)
            for path, x in flat}


def save_state(model: nnx.Module, path: str | Path, what=nnx.Param) -> Path:
    """The `what` variables of `model` (an nnx filter) to the orbax folder `path`, as a pure dict."""
    path = Path(path).absolute()
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, nnx.to_pure_dict(nnx.state(model, what)))
    ckpt.wait_until_finished()
    return path


def load_state(model: nnx.Module, path: str | Path, what=nnx.Param, *,
               hint: str = "load the model the saving run used") -> None:
    """Restore `save_state`'s folder into `model` in place, with the model's dtypes and
    shardings; a checkpoint of other shapes is a ValueError that lists a few differences."""
    path = Path(path).absolute()
    ckpt = ocp.StandardCheckpointer()
    saved = ckpt.metadata(path).item_metadata
    state = nnx.state(model, what)
    target = nnx.to_pure_dict(state)
    want, got = _shapes(target), _shapes(getattr(saved, "tree", saved))
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise ValueError(f"parameters in {path} do not fit this model ({len(diff)} differ, e.g. "
                         f"{[(k, got.get(k), want.get(k)) for k in diff[:3]]} as (name, saved, "
                         f"model)); {hint}")
    restored = ckpt.restore(path, _abstract(target))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def save_params(model, path: str | Path) -> Path:
    """Every `nnx.Param` of `model` to the orbax folder `path` (which must not exist)."""
    path = Path(path).absolute()
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another --out or remove it")
    return save_state(model, path, nnx.Param)


def load_params(model, path: str | Path) -> None:
    """Restore parameters saved by `save_params` (or an SFT `--out` folder holding `params/`)
    into `model` in place, with the model's dtypes and shardings."""
    path = Path(path).absolute()
    if (path / "params").is_dir():
        path = path / "params"
    if not path.is_dir():
        raise FileNotFoundError(f"no saved parameters at {path}: pass the --out folder of a "
                                "`python -m aha_utils.sft` run (or its params/ folder)")
    load_state(model, path, nnx.Param,
               hint="load the model the SFT run used, before applying LoRA")


class BestParams:
    """The trainable parameters that scored best on validation so far, under `directory`:
    `step_XXXXX/` (orbax) and `best.json` (`step`, `val_accuracy`, `params`), written after the
    parameters are complete (temporary file + os.replace), the older folder deleted last."""

    def __init__(self, directory: str | Path, trainable):
        self.directory, self.trainable = Path(directory).absolute(), trainable
        file = self.directory / "best.json"
        self._record = json.loads(file.read_text()) if file.exists() else None
        self.is_main = jax.process_index() == 0

    def record(self) -> dict | None:
        return self._record

    def offer(self, step: int, val_accuracy: float, model: nnx.Module) -> bool:
        """Keep `model`'s parameters if `val_accuracy` is strictly the best so far (ties keep
        the earlier step); returns whether they were kept."""
        if self._record is not None and val_accuracy <= self._record["val_accuracy"]:
            return False
        name = f"step_{step:05d}"
        if self.is_main and (self.directory / name).exists():
            shutil.rmtree(self.directory / name)   # left by a run that resumed before it
        save_state(model, self.directory / name, self.trainable)
        self._record = {"step": step, "val_accuracy": val_accuracy, "params": name}
        if self.is_main:
            self._write_record()
        return True

    def _write_record(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".best.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self._record))
        os.replace(tmp, self.directory / "best.json")
        keep = None if self._record is None else self._record["params"]
        for old in self.directory.glob("step_*"):
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def forget_after(self, step: int) -> None:
        """On resume from `step`: a best found after it is dropped (those steps run again)."""
        if self._record is not None and self._record["step"] > step:
            self._record = None
            if self.is_main:
                (self.directory / "best.json").unlink(missing_ok=True)
                self._write_record()

    def swap_in(self, model: nnx.Module):
        """Load the best parameters into `model`; returns a copy of what it held before."""
        current = jax.tree.map(jnp.copy, nnx.state(model, self.trainable))
        load_state(model, self.directory / self._record["params"], self.trainable)
        return current

    def swap_out(self, model: nnx.Module, state) -> None:
        nnx.update(model, state)
