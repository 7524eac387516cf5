"""Data-parallel scaling of this project's GRPO step: one GPU, then N GPUs driven by one process,
then N processes of one GPU each that meet through `jax.distributed`, the same work per GPU.

    python -m benchmarks.scaling                        # every GPU of this host, full + LoRA
    python -m benchmarks.scaling --modes full --steps 6 --gpus 2
    python -m benchmarks.scaling --cpu-devices 2 --model tiny --prompts 2 --samples 2 \\
        --new 8 --steps 2 --modes lora                       # a CPU smoke test (a minute)

The step is `benchmarks.peers`' (`run_ours`: sample, score, one AdamW update; Gemma 3
270M with random weights, Countdown prompts, every completion `--new` tokens) with the model on a
mesh over every device (`sharding.make_mesh`: all of them on `data`, parameters replicated,
gradients all-reduced by XLA's collectives, NCCL on GPUs).

Weak scaling, the data-parallel convention: each GPU keeps the one-GPU run's work (`--prompts`
prompts x `--samples` completions, micro-batches of `--micro` rows per GPU), so N GPUs do N times
the work per step. Efficiency = N-GPU generated tokens/s over N x one-GPU tokens/s (100%: the
step took no longer). First step: compilation included; then the median of the later steps.

Design decisions:
- Each configuration is a fresh process (or N of them) with `CUDA_VISIBLE_DEVICES` naming its
  GPUs, so the one-GPU baseline runs on the same host, in the same run, as the N-GPU ones.
- Multi-process: process i sees GPU i, calls `jax.distributed.initialize` on localhost, and runs
  the same code as one process (the problems are drawn from the seed, so every process builds
  the same batch and `sharding.put` keeps its own rows). Process 0 reports its timings.
- NVLink multicast stays off (`NCCL_NVLS_ENABLE=0` in every child): on shared hosts it can put
  the GPUs out of service.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from benchmarks.peers import MODES, fmt, result_row, run_ours, save_rows


def per_run(args, n: int) -> argparse.Namespace:
    """The peers module's arguments for `n` devices: n times the prompts and micro-batch rows."""
    return argparse.Namespace(**dict(vars(args), prompts=args.prompts * n,
                                     micro=args.micro * n))


def child_env(args, visible: str) -> dict:
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", NCCL_NVLS_ENABLE="0")
    if args.cpu_devices:
        n = len(visible.split(","))
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    else:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def child_args(args, mode: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.scaling", "--one", "--modes", mode,
            "--model", args.model, "--steps", str(args.steps), "--prompts", str(args.prompts),
            "--samples", str(args.samples), "--new", str(args.new), "--micro", str(args.micro),
            "--lora-rank", str(args.lora_rank)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_setup(args, mode: str, gpus: int, processes: int) -> dict:
    """One configuration: `gpus` devices in `processes` processes; process 0's result row."""
    row = dict(mode=mode, gpus=gpus, processes=processes)
    port, per = free_port(), gpus // processes
    procs = []
    for i in range(processes):
        visible = ",".join(str(d) for d in range(i * per, (i + 1) * per))
        extra = ["--devices", str(gpus)]
        if processes > 1:
            extra += ["--process-id", str(i), "--num-processes", str(processes), "--port",
                      str(port)]
        procs.append(subprocess.Popen(child_args(args, mode) + extra, text=True,
                                      env=child_env(args, visible), stdout=subprocess.PIPE,
                                      stderr=None if args.verbose else subprocess.PIPE))
    t = time.perf_counter()
    try:
        outs = [p.communicate(timeout=args.timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        return dict(row, error=f"over --timeout {args.timeout} s")
    return result_row(row, outs[0][0], "\n".join(err or out or "" for out, err in outs), t)


def one(args) -> dict:
    """Child process: join the others (multi-process), check the device count, run the step."""
    import jax

    if args.num_processes > 1:
        jax.distributed.initialize(f"localhost:{args.port}", num_processes=args.num_processes,
                                   process_id=args.process_id)
    if jax.device_count() != args.devices:
        raise RuntimeError(f"expected {args.devices} devices in all, found {jax.device_count()}")
    return run_ours(per_run(args, args.devices), args.modes, data_parallel=True)


def gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"nvidia-smi failed ({e}): pass --gpus N, or --cpu-devices N for a "
                         f"CPU smoke test") from e
    return sum(ln.startswith("GPU ") for ln in out.stdout.splitlines())


def print_table(args, rows: list[dict]) -> None:
    print(f"\nGRPO step, data parallel, {args.model} (random weights): per GPU {args.prompts} "
          f"prompts x {args.samples} samples x {args.new} new tokens, micro-batches of "
          f"{args.micro} rows (where that divides them); {args.steps} steps: the first, then "
          f"the median of the rest\n")
    print("| mode | GPUs | processes | rows/step | first step s | median step s | sample s | "
          "score s | update s | gen tokens/s | efficiency | device |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | {r['gpus']} | {r['processes']} | not run: {r['error']} |"
                  f"||||||||")
            continue
        base = next((b for b in rows if b["mode"] == r["mode"] and b["gpus"] == 1
                     and "error" not in b), None)
        eff = "" if base is None else \
            f"{100 * r['tokens_per_s'] / (r['gpus'] * base['tokens_per_s']):.0f}%"
        print(f"| {r['mode']} | {r['gpus']} | {r['processes']} | "
              f"{r['gpus'] * args.prompts * args.samples} | {fmt(r['first_step_s'], '.1f')} | "
              f"{fmt(r['median_step_s'])} | {fmt(r['sample_s'])} | {fmt(r['score_s'], '.3f')} | "
              f"{fmt(r['update_s'])} | {r['tokens_per_s']:,.0f} | {eff} | {r['device']} |")
    print("\nefficiency: generated tokens/s over (GPUs x the one-GPU run's), same mode.")
    sys.stdout.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: full, lora")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to scale to (default: all)")
    p.add_argument("--cpu-devices", type=int, default=0,
                   help="instead of GPUs: this many fake CPU devices (a smoke test)")
    p.add_argument("--model", default="gemma3-270m", help="a preset name, or tiny")
    p.add_argument("--steps", type=int, default=6, help="GRPO steps (the first is warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step and GPU")
    p.add_argument("--samples", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--new", type=int, default=256, help="new tokens per completion")
    p.add_argument("--micro", type=int, default=32, help="rows per forward/backward and GPU")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--verbose", action="store_true", help="show the children's stderr")
    for hidden in ("--devices", "--process-id", "--num-processes", "--port"):   # children
        p.add_argument(hidden, type=int, default=1 if hidden == "--num-processes" else 0,
                       help=argparse.SUPPRESS)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        result = one(args)
        if args.process_id == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        p.error(f"--modes {args.modes}: choose among {','.join(MODES)}")
    n = args.cpu_devices or args.gpus or gpu_count()
    if n < 2:
        p.error(f"scaling needs 2 or more devices; {n} found (--gpus, --cpu-devices)")
    rows = []
    for mode in modes:
        for gpus, processes in ((1, 1), (n, 1), (n, n)):
            print(f"running {mode} on {gpus} device(s) in {processes} process(es) ...",
                  file=sys.stderr, flush=True)
            rows.append(run_setup(args, mode, gpus, processes))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "steps"}),
                  file=sys.stderr, flush=True)
    save_rows(args.json, args, rows)
    print_table(args, rows)


if __name__ == "__main__":
    main()
