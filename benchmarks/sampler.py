"""Sampler throughput against the HBM roofline, and against HF transformers on the same device.

    python -m benchmarks.sampler                       # 270M and 1B, B = 1 16 64 256
    python -m benchmarks.sampler --models gemma3-270m --batches 1,16 --new 64 --hf none

Random weights (speed does not depend on their values); prompt 128 tokens, 512 new tokens,
bfloat16, sampling at temperature 1 with no stop (every row makes all its tokens).

The roofline: a decode step must read every parameter once and, per row, the keys and values it
attends to (`min(len, window)` slots on local layers, `len` on global ones), so
    time >= sum over steps of (param bytes + KV bytes of that step) / HBM bandwidth,
and `% roofline` = that floor over the measured time. Bandwidth: the datasheet figure for a
known device (H100 SXM 3.35 TB/s, H200 4.8 TB/s), else a measured device-to-device copy (also
printed). Compile time = first call minus a timed call.

A second, looser roofline (`% whole cache`) has every step read every slot of the cache built
for `prompt + new` tokens, as a decode of fixed shapes does (XLA's, HF's static cache): the
bound a kernel that skips the empty slots can beat. The issue's estimates for the 1B at 64 rows
(about 37k tokens/s at 50% on an H100, 53k on an H200) are 50% of this one; the first, which
counts only the filled slots, asks for 40.8k and 58.4k.

`--profile DIR` traces one more call of each JAX row with the JAX profiler and prints where the
device time goes: the ten kernels (XLA fusions, cuBLAS calls) that took the most of it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aha_utils.config import ModelConfig, config_for
from aha_utils.kv_cache import cache_slots
from aha_utils.model import Gemma
from aha_utils.sampler import SampleConfig, sample_tokens

DATASHEET_BW = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "TPU v5 lite": 8.19e11,
                "TPU v4": 1.2e12, "TPU v5p": 2.76e12, "TPU v6 lite": 1.64e12}


def measured_bandwidth() -> float:
    """Bytes/s of a large device-to-device pass (read + write counted)."""
    x = jnp.ones((256, 1024, 1024), jnp.bfloat16)  # 512 MiB
    f = jax.jit(lambda a: a + 1)
    jax.block_until_ready(f(x))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - t)
    return 2 * x.nbytes / min(times)


def device_bandwidth() -> tuple[str, float, float]:
    kind = jax.devices()[0].device_kind
    measured = measured_bandwidth()
    for key, bw in DATASHEET_BW.items():
        if key in kind:
            return kind, bw, measured
    return kind, measured, measured


def roofline_seconds(cfg: ModelConfig, batch: int, prompt: int, new: int, bw: float,
                     bytes_per_value: int = 2, whole_cache: bool = False) -> float:
    """Least time to generate `new` tokens per row: every step reads all parameters and the
    keys/values each row attends to (its filled slots), or with `whole_cache` every slot of
    the cache built for `prompt + new` tokens."""
    params = cfg.num_params() * bytes_per_value
    kv_per_slot = 2 * cfg.num_kv_heads * cfg.head_dim * bytes_per_value   # k and v
    built = [cache_slots(cfg, kind, prompt + new) for kind in cfg.layer_kinds]
    whole = sum(built)
    total = params                                   # prefill reads the weights once
    for step in range(1, new):                       # decode steps; the prefill made token 0
        length = prompt + step                       # keys attended by this step's token
        slots = whole if whole_cache else sum(min(length, s) for s in built)
        total += params + batch * slots * kv_per_slot
    return total / bw


def kernel_table(trace_dir: str, top: int = 10) -> list[tuple[str, float, int]]:
    """`(kernel, share of device time, calls)` of the newest trace under `trace_dir`, largest
    first: events of the `/device:` processes of the Perfetto trace the profiler writes."""
    found = sorted(glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz"))
    if not found:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}/plugins/profile")
    with gzip.open(found[-1]) as f:
        events = json.load(f)["traceEvents"]
    device = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
              and e["args"]["name"].startswith("/device:")}
    time_by, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in device:
            name = (e.get("args") or {}).get("hlo_op") or e["name"]
            time_by[name] += e.get("dur", 0)
            calls[name] += 1
    total = sum(time_by.values()) or 1
    return [(k, t / total, calls[k]) for k, t in time_by.most_common(top)]


def bench_jax(cfg, batch, prompt, new, reps=2, profile_dir=None, kernels="auto"):
    model = Gemma(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, cfg.vocab_size, (batch, prompt)).astype(np.int32)
    positions = np.broadcast_to(np.arange(prompt, dtype=np.int32), (batch, prompt)).copy()
    config = SampleConfig(max_new_tokens=new, greedy=False, stop_ids=(), kernels=kernels)

    def once(seed):
        t = time.perf_counter()
        out = sample_tokens(model, tokens, positions, jax.random.key(seed), config,
                            temperature=1.0)
        lengths = np.asarray(out.lengths)            # waits for the device
        assert (lengths == new).all(), "a row stopped early: the benchmark must not stop"
        return time.perf_counter() - t

    first = once(0)
    times = [once(1 + i) for i in range(reps)]
    stats = jax.devices()[0].memory_stats() or {}
    kernels = None
    if profile_dir:
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            once(reps + 1)
        kernels = kernel_table(profile_dir)
    return dict(seconds=min(times), compile_s=first - min(times),
                peak_gb=stats.get("peak_bytes_in_use", float("nan")) / 1e9, kernels=kernels)


def hf_config(cfg: ModelConfig):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        sliding_window=cfg.sliding_window, query_pre_attn_scalar=cfg.query_pre_attn_scalar,
        max_position_embeddings=32768, layer_types=[
            "full_attention" if k == "global" else "sliding_attention" for k in cfg.layer_kinds],
        bos_token_id=2, eos_token_id=1, pad_token_id=0)


def bench_hf(cfg, batch, prompt, new, compile_: bool):
    """HF transformers `generate` with a static cache, eager (`disable_compile=True`) or compiled
    the way transformers itself does it: with a static cache, generate torch.compiles the decode
    forward (its `compile_config`). Wrapping `model.forward` in `torch.compile(mode=
    "reduce-overhead")` by hand, the older recipe, gets no CUDA graphs with transformers 5's
    static cache (it mutates `cumulative_length`) and crashed on an H100."""
    import torch
    from transformers import Gemma3ForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(dev):
        model = Gemma3ForCausalLM(hf_config(cfg)).to(torch.bfloat16).eval()
    ids = torch.randint(3, cfg.vocab_size, (batch, prompt), device=dev)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
              top_p=1.0, min_new_tokens=new, max_new_tokens=new, cache_implementation="static",
              disable_compile=not compile_)

    def once():
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, **kw)
        if dev == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] == prompt + new
        return time.perf_counter() - t

    first = once()
    seconds = once()
    peak = torch.cuda.max_memory_allocated() / 1e9 if dev == "cuda" else float("nan")
    model = None   # release it before emptying torch's cache
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return dict(seconds=seconds, compile_s=first - seconds, peak_gb=peak)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gemma3-270m,gemma3-1b")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--hf", default="eager,compile",
                    help="comma list of HF variants to run: eager, compile; or none")
    ap.add_argument("--hf-batches", default=None, help="batches for HF (default: --batches)")
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="skip the remaining HF runs once this many seconds have passed")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--profile", default=None,
                    help="trace one more call of each JAX row into DIR/<model>_<batch> and print "
                         "its ten most expensive kernels")
    ap.add_argument("--kernels", default="auto", choices=("auto", "on", "off"),
                    help="the sampler's GPU kernels (aha_utils.kernels): auto (on GPUs), on, off")
    args = ap.parse_args(argv)
    kernels = {"auto": "auto", "on": True, "off": False}[args.kernels]
    start = time.perf_counter()

    kind, bw, measured = device_bandwidth()
    print(f"device: {kind} ({jax.default_backend()}), jax {jax.__version__}; roofline bandwidth "
          f"{bw / 1e12:.2f} TB/s (measured copy {measured / 1e12:.2f} TB/s); prompt "
          f"{args.prompt}, {args.new} new tokens, bf16, T=1 sampling", flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    hf_batches = batches if args.hf_batches is None else [int(b) for b in args.hf_batches.split(",")]
    variants = [] if args.hf == "none" else args.hf.split(",")
    rows = []
    for name in args.models.split(","):
        # "tiny": a seconds-long smoke test of this script on any machine
        cfg = ModelConfig.tiny(vocab_size=262_144) if name == "tiny" else config_for(name)
        for b in batches + [x for x in hf_batches if x not in batches]:
            roof = roofline_seconds(cfg, b, args.prompt, args.new, bw)
            roof_whole = roofline_seconds(cfg, b, args.prompt, args.new, bw, whole_cache=True)
            impls = (["jax"] if b in batches else []) + (
                [f"hf-{v}" for v in variants] if b in hf_batches else [])
            for impl in impls:
                if impl != "jax" and time.perf_counter() - start > args.budget_s:
                    print(f"skipped {name} B={b} {impl}: over --budget-s", flush=True)
                    continue
                try:
                    trace = args.profile and f"{args.profile}/{name}_{b}"
                    r = (bench_jax(cfg, b, args.prompt, args.new, profile_dir=trace,
                                   kernels=kernels)
                         if impl == "jax" else
                         bench_hf(cfg, b, args.prompt, args.new, impl == "hf-compile"))
                except Exception as e:  # report and go on: one failing variant is a result too
                    print(f"{name} B={b} {impl}: FAILED {type(e).__name__}: {str(e)[:300]}",
                          flush=True)
                    continue
                r.update(model=name, batch=b, impl=impl,
                         tok_s=b * args.new / r["seconds"], roof_tok_s=b * args.new / roof)
                r["pct_roof"] = 100 * r["tok_s"] / r["roof_tok_s"]
                r["pct_roof_whole"] = 100 * roof_whole / r["seconds"]
                rows.append(r)
                kernels = r.pop("kernels", None)
                print(json.dumps(r), flush=True)
                for kernel, share, calls in kernels or []:
                    print(f"    {100 * share:5.1f}%  {calls:6d} calls  {kernel[:110]}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=kind, bandwidth=bw, measured_bandwidth=measured, rows=rows), f)

    print(f"\n{kind}: prompt {args.prompt}, {args.new} new tokens, bf16, random weights")
    print("| model | batch | impl | tokens/s | % HBM roofline | roofline tok/s | % whole cache "
          "| compile s | peak GB* | x HF best |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        hf = [x["tok_s"] for x in rows if x["model"] == r["model"] and x["batch"] == r["batch"]
              and x["impl"].startswith("hf")]
        speedup = f"{r['tok_s'] / max(hf):.1f}x" if hf and r["impl"] == "jax" else ""
        print(f"| {r['model']} | {r['batch']} | {r['impl']} | {r['tok_s']:,.0f} | "
              f"{r['pct_roof']:.0f}% | {r['roof_tok_s']:,.0f} | {r['pct_roof_whole']:.0f}% | "
              f"{r['compile_s']:.1f} | "
              f"{r['peak_gb']:.2f} | {speedup} |")
    print("* JAX: the process's peak so far (it cannot be reset); HF: torch's peak for that run")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
