"""A live view of a run: TensorBoard event files beside `metrics.jsonl` (`--set
tensorboard=true`), so a learner watches reward, accuracy, length, KL and the self-correction
metrics move (Colab: `%load_ext tensorboard`, `%tensorboard --logdir OUT/tensorboard`).

The writer is `tensorboardX` (pure Python; `pip install tensorboardX` or `pip install -e
.[live]`), imported only when the option is on; the events go to `OUT/tensorboard/`."""

from __future__ import annotations

import math
from pathlib import Path

# metrics.jsonl key -> TensorBoard tag (grouped into panels by the part before the slash)
TAGS = {
    "reward_mean": "reward/mean", "reward_std": "reward/std", "accuracy": "reward/accuracy",
    "format_rate": "reward/format_rate", "val_accuracy": "eval/val_accuracy",
    "eval_accuracy": "eval/test_accuracy", "completion_len_mean": "length/mean",
    "completion_len_max": "length/max", "truncated_frac": "length/truncated_frac",
    "kl": "policy/kl", "loss": "policy/loss", "entropy": "policy/entropy",
    "clip_frac": "policy/clip_frac", "grad_norm": "policy/grad_norm",
    "learning_rate": "policy/learning_rate", "self_correction": "aha/self_correction",
    "self_correction_any": "aha/self_correction_any", "false_step_rate": "aha/false_step_rate",
    "attempts_mean": "aha/attempts_mean", "token_accuracy": "sft/token_accuracy",
    "step_time_s": "time/step_s",
}


def require_writer():
    """The writer class, or ModuleNotFoundError saying what to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ModuleNotFoundError(
            "tensorboard=true needs the tensorboardX package: pip install tensorboardX (or "
            f"pip install -e .[live]); or drop --set tensorboard=true ({err})") from err
    return SummaryWriter


class LiveView:
    """`log(row)` writes the row's known, finite numbers at `row["step"]`; a no-op when off.
    The folder is made at the first row, so a run that fails to start leaves none."""

    def __init__(self, directory: str | Path, enabled: bool, prefix: str = ""):
        self.directory, self.prefix, self._writer = Path(directory), prefix, None
        self._cls = require_writer() if enabled else None

    def log(self, row: dict) -> None:
        if self._cls is None:
            return
        if self._writer is None:
            self._writer = self._cls(logdir=str(self.directory))
        for key, value in row.items():
            if key in TAGS and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(self.prefix + TAGS[key], float(value), row["step"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
