"""Shape buckets: how many rows and prompt columns a batch is padded to, and the left padding.

Every jitted program (the sampler, the train step) is compiled for one shape; rounding rows
and prompt columns up to powers of two means a run compiles a handful of programs, not one per
batch. Pure numpy: the sampler, SFT batches and the memory estimate all size things with it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PAD_ID = 0            # Gemma's <pad>: fills `.tokens` after the end and the left of prompts
MIN_PROMPT_BUCKET = 16
DEFAULT_MAX_PROMPT_LEN = 4096


def prompt_bucket(longest: int, max_prompt_len: int) -> int:
    """Columns for a batch whose longest prompt has `longest` tokens."""
    return min(max(MIN_PROMPT_BUCKET, 1 << (longest - 1).bit_length()), max_prompt_len)


def batch_bucket(n: int, n_data: int = 1) -> int:
    """Rows for `n` prompts: a power of two, and a multiple of the data-parallel devices."""
    rows = 1 << (n - 1).bit_length()
    return math.ceil(rows / n_data) * n_data


def left_pad(ids: Sequence[Sequence[int]], columns: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 `(tokens, positions)` `[rows, columns]`, right-aligned; padding rows at the end."""
    tokens = np.full((rows, columns), PAD_ID, np.int32)
    positions = np.full((rows, columns), -1, np.int32)
    for r, seq in enumerate(ids):
        if seq:
            tokens[r, columns - len(seq):] = seq
            positions[r, columns - len(seq):] = np.arange(len(seq))
    return tokens, positions
