"""Issue 33: a corrupt checkpoint, readable errors, resume semantics, --help, live view, memory.

Uses test_train's tiny model (2 layers, the real tokenizer's vocabulary) and its test reward."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from aha_utils.checkpoint import CorruptCheckpoint
from aha_utils.run_config import RunConfig
from aha_utils.train import main, train
from tests.test_train import CFG, run, text_reward, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    from aha_utils.tokenizer import gguf_tokenizer
    return gguf_tokenizer()


def truncate_arrays(step_dir):
    """Cut every array data file of a checkpoint short, as a full disk or a kill would."""
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:20])


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_resumes_from_the_newest_good_one(tmp_path, tokenizer, capsys):
    run(CFG, tmp_path, tokenizer)                                    # checkpoints 2 and 3 kept
    truncate_arrays(tmp_path / "checkpoints" / "3")
    resumed = run(dataclasses.replace(CFG, steps=4), tmp_path, tokenizer, resume=True)
    out = capsys.readouterr().out
    assert "checkpoint step 3" in out and "is corrupt" in out and "resuming from step 2" in out
    assert "Traceback" not in out
    assert [r["step"] for r in resumed] == [3, 4]
    assert (tmp_path / "checkpoints.corrupt" / "3").is_dir()        # moved aside, not deleted
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]


def test_no_checkpoint_restores_stops_and_moves_nothing(tmp_path, tokenizer):
    run(CFG, tmp_path, tokenizer)
    for step in ("2", "3"):
        truncate_arrays(tmp_path / "checkpoints" / step)
    with pytest.raises(CorruptCheckpoint, match=r"no checkpoint .* restores \(step 3: .*step 2"
                                                r".*Nothing was deleted.*--out"):
        run(dataclasses.replace(CFG, steps=4), tmp_path, tokenizer, resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]
