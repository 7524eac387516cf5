"""`benchmarks.sampler`: its two rooflines against numbers worked by hand and against the
issue's estimates, and the script end to end on a toy model."""

import json

import pytest

from benchmarks import sampler as bench
from aha_utils.config import ModelConfig, config_for


def test_rooflines_count_the_bytes_worked_by_hand():
    # Layers local, global, local, global; a window of 16; k and v of 2 heads x 16 dims in bf16:
    # 128 bytes a slot. A prompt of 20 and 4 new tokens: the prefill and 3 decode steps read the
    # weights, and the decode steps attend over 21, 22 and 23 keys. The cache is built for 24
    # tokens: 16 slots on a local layer, 32 (24 rounded up to 16s) on a global one.
    cfg = ModelConfig.tiny(sliding_window=16)
    assert cfg.layer_kinds == ("local", "global", "local", "global")
    weights = 4 * 2 * cfg.num_params()
    # Filled slots: 16 on each local layer (its window), the key count on each global one.
    filled = (16 + 21) * 2 + (16 + 22) * 2 + (16 + 23) * 2             # 228
    # Whole cache: every built slot, every step.
    whole = 3 * (16 + 32) * 2                                         # 288
    batch, bw = 3, 1e9
    assert bench.roofline_seconds(cfg, batch, 20, 4, bw) == pytest.approx(
        (weights + batch * filled * 128) / bw, rel=1e-12)
    assert bench.roofline_seconds(cfg, batch, 20, 4, bw, whole_cache=True) == pytest.approx(
        (weights + batch * whole * 128) / bw, rel=1e-12)


@pytest.mark.parametrize("bandwidth, half_roofline", [(3.35e12, 37_000), (4.8e12, 53_000)])
def test_whole_cache_roofline_is_the_issues_estimate(bandwidth, half_roofline):
    """The issue puts 50% of the roofline for the 1B at 64 rows (prompt 128, 512 new tokens) at
    about 37k tokens/s on an H100 and 53k on an H200: the whole-cache roofline. Counting only the
    filled slots, a kernel that skips the empty ones must go faster for the same share."""
    cfg, tokens = config_for("gemma3-1b"), 64 * 512
    whole = tokens / bench.roofline_seconds(cfg, 64, 128, 512, bandwidth, whole_cache=True)
    filled = tokens / bench.roofline_seconds(cfg, 64, 128, 512, bandwidth)
    assert whole / 2 == pytest.approx(half_roofline, rel=0.01)
    assert filled / 2 > 1.08 * half_roofline


def test_script_prints_both_rooflines(tmp_path, capsys):
    out = tmp_path / "rows.json"
    bench.main(["--models", "tiny", "--batches", "2", "--new", "4", "--prompt", "8", "--hf",
                "none", "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["impl"] == "jax" and row["tok_s"] > 0
    # One time over two floors: the whole cache is more bytes, so the larger share.
    assert 0 < row["pct_roof"] < row["pct_roof_whole"]
    table = capsys.readouterr().out.split("\n| model |")[1]
    assert "% whole cache" in table.splitlines()[0]
    cells = [c.strip() for c in table.splitlines()[2].split("|")]
    assert cells[5] == f"{row['pct_roof']:.0f}%" and cells[7] == f"{row['pct_roof_whole']:.0f}%"
