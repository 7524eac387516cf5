"""experiments/: every config loads, builds its commands, and the commands parse."""

import json
from pathlib import Path

import pytest

from experiments import launch

RUNS = Path(__file__).resolve().parents[1] / "notebooks" / "runs"


@pytest.mark.parametrize("name", launch.config_names())
def test_config_loads_and_builds_commands(name, tmp_path, monkeypatch):
    monkeypatch.delenv("AHA_QUICK", raising=False)   # the configs' sizes, not quick mode's
    cfg = launch.load(name)
    jobs = launch.plan([name], tmp_path, gsm8k_path=str(tmp_path / "gsm8k"), side_by_side=True)
    assert len(jobs) == 1 and jobs[0]["runs"]
    for label, cmd in ([jobs[0]["sft"]] if jobs[0]["sft"] else []) + jobs[0]["runs"]:
        assert str(tmp_path) not in " ".join(cmd[3:]).replace(str(tmp_path / "gsm8k"), "") \
            or cfg.get("kind") == "command"                       # run inside OUT: relative
    if cfg.get("kind", "train") != "train":
        return
    frac = float(jobs[0]["envs"][name]["XLA_PYTHON_CLIENT_MEM_FRACTION"])
    assert frac == cfg.get("mem_fraction", frac) and 0 < frac < 1
    grpo = jobs[0]["runs"][0][1]
    from aha_utils.train import parse_args
    run_cfg, args = parse_args(grpo[3:])                          # the CLI accepts the command
    assert args.experiment == name and run_cfg.task == cfg["task"]
    for key, value in cfg["grpo"].get("set", {}).items():
        assert getattr(run_cfg, key) == value, key
    if "sft" in cfg:
        from aha_utils import sft
        sft_args = sft.parse_args(jobs[0]["sft"][1][3:])
        assert sft_args.steps == cfg["sft"]["steps"] and sft_args.out == cfg["sft"]["name"]
        assert sft_args.val_n == cfg["grpo"]["set"].get("val_n")      # the same held-out set
        assert run_cfg.init_from == cfg["sft"]["name"]
        assert run_cfg.gsm8k_path in (None, "gsm8k")


def test_committed_runs_name_their_config_and_no_machine_paths():
    names = set(launch.config_names())
    for summary_path in RUNS.glob("*/summary.json"):
        text = summary_path.read_text()
        for prefix in ("/tmp", "/root", "/home", "/work"):
            assert f'"{prefix}' not in text, summary_path
        summary = json.loads(text)
        named = summary.get("experiments") or [summary.get("experiment")]
        assert set(named) <= names and named, summary_path


def test_shared_sft_runs_once_and_dry_run(tmp_path, capsys):
    group = ["countdown4_sft600_lr1e-6", "countdown4_sft600_kl_lr3e-6"]
    jobs = launch.plan(group, tmp_path)
    assert len(jobs) == 1 and jobs[0]["sft"][0] == "sft600_countdown4"
    assert [label for label, _ in jobs[0]["runs"]] == group
    (tmp_path / "sft600_countdown4" / "checkpoints" / "50").mkdir(parents=True)  # stopped
    assert launch.plan(group, tmp_path)[0]["sft"][1][-1] == "--resume"
    (tmp_path / "sft600_countdown4" / "params").mkdir(parents=True)   # done: skipped
    (tmp_path / group[0] / "checkpoints" / "50").mkdir(parents=True)  # started: resumed
    jobs = launch.plan(group, tmp_path)
    assert jobs[0]["sft"] is None and jobs[0]["runs"][0][1][-1] == "--resume"
    assert launch.main(group + ["--out", str(tmp_path), "--dry-run"]) == 0
    assert "aha_utils.train" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no experiment"):
        launch.load("no_such_run")


@pytest.mark.parametrize("side_by_side", [False, True])
def test_launch_runs_sft_then_its_runs_and_reports_failures(tmp_path, side_by_side):
    import os
    import sys

    def py(code):
        return [sys.executable, "-c", code]
    jobs = [{"name": "s", "env": dict(os.environ), "sft": ("s", py("print('sft done')")),
             "runs": [("r1", py("import os; print(os.getcwd())")),
                      ("r2", py("raise SystemExit(3)"))]},
            {"name": "x", "env": dict(os.environ), "sft": ("x", py("raise SystemExit(1)")),
             "runs": [("never", py("print('ran')"))]}]
    failures = launch.launch(jobs, tmp_path, side_by_side)
    assert sorted(failures) == ["r2", "x"]
    assert (tmp_path / "s.log").read_text() == "sft done\n"
    assert (tmp_path / "r1.log").read_text().strip() == str(tmp_path)   # runs inside OUT
    assert not (tmp_path / "never.log").exists()                        # its SFT failed
