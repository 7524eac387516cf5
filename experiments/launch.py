"""Run committed experiments from their config files: SFT (if the config has one), then GRPO.

    python -m experiments.launch NAME [NAME ...] --out DIR [--side-by-side] [--detach]
    python -m experiments.launch --list
    python -m experiments.launch NAME --out DIR --dry-run        # print the commands only

NAME is a file `experiments/NAME.toml` (see experiments/README.md for the format). Each run
writes `DIR/<name>/` and its log `DIR/<name>.log`; an SFT phase writes `DIR/<sft name>/` once,
shared by every config that names it. The commands run with DIR as working directory, so the
paths stored in summary.json (`init_from`, the SFT `out`) are relative and no machine's paths
end up in committed files. Re-running picks up where it stopped: an SFT phase whose parameters
exist is skipped, an SFT phase or GRPO run with checkpoints is resumed, a run with a summary.json
is done.

`--side-by-side` starts every config at once on the one GPU, each process with a memory fraction
(`--mem-fraction`, else the config's `mem_fraction`, else 0.9 / the number of runs); otherwise
they run one after the other. `--detach` starts the launcher itself in a new session (logs in
`DIR/launch.log`) and returns at once, so a closed terminal does not stop the runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOP_KEYS = {"description", "round", "task", "model", "time_limit", "mem_fraction", "sft", "grpo",
            "kind", "env", "pythonpath", "steps"}
SFT_KEYS = {"name", "steps", "batch", "lr", "micro_batch", "eval_n", "num_numbers", "template",
            "warmup", "train_problems", "max_new_tokens", "seed", "search_fraction", "max_failed",
            "dead_ends", "slip_rate"}
GRPO_KEYS = {"steps", "set"}


def config_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def load(name: str) -> dict:
    """The config `experiments/NAME.toml`, checked (unknown keys and RunConfig fields fail)."""
    path = HERE / f"{name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no experiment {name!r}: choose among {config_names()}")
    cfg = tomllib.loads(path.read_text())
    for where, keys, allowed in (("", cfg, TOP_KEYS), ("[sft] ", cfg.get("sft", {}), SFT_KEYS),
                                 ("[grpo] ", cfg.get("grpo", {}), GRPO_KEYS)):
        unknown = set(keys) - allowed
        if unknown:
            raise ValueError(f"{path.name}: unknown {where}keys {sorted(unknown)}")
    if cfg.get("kind", "train") == "train":
        for key in ("task", "grpo"):
            if key not in cfg:
                raise ValueError(f"{path.name}: a training config needs `{key}`")
        from aha_utils.train import parse_overrides   # checks names and types of [grpo.set]
        parse_overrides([f"{k}={_value(v)}" for k, v in cfg["grpo"].get("set", {}).items()])
    elif not cfg.get("steps"):
        raise ValueError(f"{path.name}: a command config needs [[steps]] (module, args)")
    return {"name": name, **cfg}


def _value(v) -> str:
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _rel(path: str | None, out: Path) -> str | None:
    return None if path is None else os.path.relpath(Path(path).resolve(), out.resolve())


def sft_command(cfg: dict, gsm8k_path: str | None = None, resume: bool = False) -> list[str]:
    """`python -m aha_utils.sft ...` of the config's SFT phase (run in the --out folder)."""
    sft = cfg["sft"]
    cmd = [sys.executable, "-m", "aha_utils.sft", "--task", cfg["task"], "--model",
           cfg.get("model", "gemma3-270m"), "--out", sft["name"], "--experiment", cfg["name"]]
    for key in sorted(SFT_KEYS - {"name"}):
        if key in sft:
            cmd += [f"--{key.replace('_', '-')}", str(sft[key])]
    if cfg["task"] == "gsm8k" and gsm8k_path:
        cmd += ["--gsm8k-path", gsm8k_path]
    val_n = cfg["grpo"].get("set", {}).get("val_n")
    if val_n is not None:   # keep the GRPO run's validation problems out of the SFT data
        cmd += ["--val-n", str(val_n)]
    return cmd + (["--resume"] if resume else [])


def grpo_command(cfg: dict, gsm8k_path: str | None = None, resume: bool = False) -> list[str]:
    """`python -m aha_utils.train ...` of the config's GRPO phase (run in the --out folder)."""
    grpo = cfg["grpo"]
    cmd = [sys.executable, "-m", "aha_utils.train", "--task", cfg["task"], "--model",
           cfg.get("model", "gemma3-270m"), "--steps", str(grpo.get("steps", 1000)),
           "--out", cfg["name"], "--experiment", cfg["name"]]
    if cfg.get("time_limit"):
        cmd += ["--time-limit", str(cfg["time_limit"])]
    if cfg["task"] == "gsm8k" and gsm8k_path:
        cmd += ["--gsm8k-path", gsm8k_path]
    if "sft" in cfg:
        cmd += ["--set", f"init_from={cfg['sft']['name']}"]
    for key, value in grpo.get("set", {}).items():
        cmd += ["--set", f"{key}={_value(value)}"]
    return cmd + (["--resume"] if resume else [])


def command_steps(cfg: dict, out: Path) -> list[list[str]]:
    """A command config's `[[steps]]`: `module` and `args` with {out} and {repo} filled in."""
    fill = {"out": str(out), "repo": str(REPO)}
    return [[sys.executable, "-m", s["module"], *(a.format(**fill) for a in s.get("args", []))]
            for s in cfg["steps"]]


def env_for(cfg: dict, out: Path, mem_fraction: float | None) -> dict:
    env = dict(os.environ)
    paths = [p.format(out=out, repo=REPO) for p in cfg.get("pythonpath", [])] + [str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                 else []))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out.resolve() / "jax_cache"))
    env.update({k: str(v) for k, v in cfg.get("env", {}).items()})
    if mem_fraction is not None:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{mem_fraction:.2f}"
    return env


def _has_checkpoint(run_dir: Path) -> bool:
    """A run that was stopped after a checkpoint (a step folder; orbax's unfinished ones carry
    a suffix): the CLIs refuse to start it afresh, so it is resumed."""
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def plan(names: list[str], out: Path, *, gsm8k_path: str | None = None,
         side_by_side: bool = False, mem_fraction: float | None = None) -> list[dict]:
    """Jobs: `{"name", "env", "sft": (label, cmd) or None, "runs": [(label, cmd), ...]}`; one
    job per SFT phase (configs sharing it run after it) or per config without one."""
    cfgs = [load(n) for n in names]
    gsm8k = _rel(gsm8k_path, out)
    jobs: dict[str, dict] = {}
    n_runs = len(cfgs)
    for cfg in cfgs:
        frac = None
        if side_by_side:
            frac = mem_fraction or cfg.get("mem_fraction") or round(0.9 / n_runs, 2)
        env = env_for(cfg, out, frac)
        if cfg.get("kind", "train") != "train":
            jobs[cfg["name"]] = {"name": cfg["name"], "env": env, "sft": None,
                                 "runs": [(cfg["name"], c) for c in command_steps(cfg, out)]}
            continue
        run_dir = out / cfg["name"]
        if (run_dir / "summary.json").exists():
            print(f"{cfg['name']}: done ({run_dir / 'summary.json'} exists), skipped")
            continue
        resume = _has_checkpoint(run_dir)
        key = cfg["sft"]["name"] if "sft" in cfg else cfg["name"]
        job = jobs.setdefault(key, {"name": key, "env": env, "sft": None, "runs": [],
                                    "envs": {}})
        job["envs"][cfg["name"]] = env   # each run its own memory fraction
        if "sft" in cfg and job["sft"] is None and not (out / key / "params").is_dir():
            job["sft"] = (key, sft_command(cfg, gsm8k, _has_checkpoint(out / key)))
        job["runs"].append((cfg["name"], grpo_command(cfg, gsm8k, resume)))
    return list(jobs.values())


def _run_job(job: dict, out: Path, side_by_side: bool, failures: list) -> None:
    def start(label, cmd):
        log = (out / f"{label}.log").open("a")
        print(f"started {label}: {' '.join(cmd[1:])}", flush=True)
        return subprocess.Popen(cmd, cwd=out, env=job.get("envs", {}).get(label, job["env"]),
                                stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if job["sft"] and start(*job["sft"]).wait() != 0:
        failures.append(job["sft"][0])
        return
    procs = []
    for label, cmd in job["runs"]:
        procs.append((label, start(label, cmd)))
        if not side_by_side and procs[-1][1].wait() != 0:
            failures.append(label)
            if job["sft"] is None and job["runs"][0][0] == job["name"]:
                return   # a command config: later steps need the earlier ones
    for label, proc in procs:
        if side_by_side and proc.wait() != 0:
            failures.append(label)


def launch(jobs: list[dict], out: Path, side_by_side: bool) -> list[str]:
    """Run the jobs (in parallel threads when side by side); returns the failed labels."""
    failures: list[str] = []
    threads = [threading.Thread(target=_run_job, args=(job, out, side_by_side, failures))
               for job in jobs]
    for t in threads:
        t.start()
        if not side_by_side:
            t.join()
    for t in threads:
        t.join()
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="configs (experiments/NAME.toml)")
    p.add_argument("--out", help="folder of the runs (and the working directory of each)")
    p.add_argument("--side-by-side", action="store_true",
                   help="start all at once on one GPU, each with a memory fraction")
    p.add_argument("--mem-fraction", type=float, default=None,
                   help="GPU memory fraction per process when side by side")
    p.add_argument("--gsm8k-path", default=None,
                   help="folder with GSM8K train.jsonl/test.jsonl (default: the HF Hub)")
    p.add_argument("--detach", action="store_true",
                   help="run in the background in a new session; log to OUT/launch.log")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--list", action="store_true", help="list the configs and exit")
    args = p.parse_args(argv)
    if args.list:
        for name in config_names():
            print(f"{name:32} {load(name).get('description', '').splitlines()[0][:80]}")
        return 0
    if not args.names or not args.out:
        p.error("give one or more NAMEs and --out DIR (or --list)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.detach and not args.dry_run:
        argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--detach"]
        with (out / "launch.log").open("a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "experiments.launch", *argv],
                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        print(f"launcher running in the background (pid {proc.pid}); log: {out / 'launch.log'}")
        return 0
    jobs = plan(args.names, out, gsm8k_path=args.gsm8k_path, side_by_side=args.side_by_side,
                mem_fraction=args.mem_fraction)
    if args.dry_run:
        for job in jobs:
            print(f"# {job['name']}")
            for label, cmd in ([job["sft"]] if job["sft"] else []) + job["runs"]:
                env = job.get("envs", {}).get(label, job["env"])
                frac = env.get("XLA_PYTHON_CLIENT_MEM_FRACTION")
                print((f"XLA_PYTHON_CLIENT_MEM_FRACTION={frac} " if frac else "")
                      + f"(cd {out} && {' '.join(cmd)})  > {out / label}.log")
        return 0
    failures = launch(jobs, out, args.side_by_side)
    print("failed: " + ", ".join(failures) if failures else "all done")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
