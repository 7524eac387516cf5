#!/usr/bin/env bash
# Getting to Aha: one command that installs the right JAX for this machine, then the course.
#
#   bash colab_setup.sh            # JAX for TPU / CUDA GPU / CPU, requirements.txt, `pip install -e .`
#   bash colab_setup.sh --test     # ... and the test extras (requirements-test.txt)
#
# Other options: --tpu / --gpu / --cpu force the accelerator instead of detecting it;
# --dry-run prints what it would install and installs nothing; -h / --help.
#
# Works on Colab (TPU v5e-1, GPU), Kaggle (TPU v5e-8, GPU), a GPU box and a laptop, inside or
# outside a virtual environment (it installs into whatever `python3` is). Safe to run twice: a
# working JAX in the pinned range is kept (Colab's TPU image ships one, and reinstalling a
# mismatched jax/libtpu pair fails with "Mismatched PJRT plugin PJRT API version"), and pip
# leaves satisfied requirements alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

PY=python3
WANT_TEST=0
FORCE=""
DRY_RUN=0

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case "$arg" in
    --test) WANT_TEST=1 ;;
    --tpu | --gpu | --cpu) FORCE="${arg#--}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "colab_setup.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

pip_install() {
  local shown=() a
  for a in "$@"; do
    if [[ $a == *[\<\>\[]* ]]; then shown+=("\"$a\""); else shown+=("$a"); fi
  done
  say "python3 -m pip install ${shown[*]}"
  if [[ $DRY_RUN == 1 ]]; then
    return 0
  fi
  "$PY" -m pip install -q --disable-pip-version-check "$@"
}

# ---------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------
command -v "$PY" >/dev/null || die "python3 not found; install Python 3.11 or newer"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11 or newer is needed (jax 0.10 supports no older one); this is $("$PY" -V 2>&1)"
"$PY" -m pip --version >/dev/null 2>&1 \
  || die "pip is missing for $PY (Debian/Ubuntu: apt-get install python3-pip python3-venv)"

IN_VENV=$("$PY" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
EXTERNALLY_MANAGED=$("$PY" -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
say "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')$([[ $IN_VENV == 1 ]] && echo ' (virtual environment)')"
if [[ $IN_VENV == 0 && $EXTERNALLY_MANAGED == 1 && -z ${PIP_BREAK_SYSTEM_PACKAGES:-} ]]; then
  die "this system Python refuses pip installs (PEP 668). Make a virtual environment first:
    python3 -m venv .venv && . .venv/bin/activate && bash colab_setup.sh"
fi

# The jax range comes from requirements.txt, so the accelerator extra and the pinned
# jax/flax/orbax set can never disagree.
JAX_SPEC=$(sed -n 's/^jax[[:space:]]*\([<>=!~][^#[:space:]]*\).*/\1/p' requirements.txt | head -n 1)
[[ -n $JAX_SPEC ]] || die "no 'jax>=...' line found in requirements.txt"

# ---------------------------------------------------------------------------------------------
# Where are we? (Colab / Kaggle / elsewhere; TPU / GPU / CPU)
# ---------------------------------------------------------------------------------------------
PLATFORM="local machine"
if [[ -n ${COLAB_RELEASE_TAG:-} || -n ${COLAB_GPU:-} || -n ${COLAB_TPU_ADDR:-} || -d /content && -n ${COLAB_BACKEND_VERSION:-} ]]; then
  PLATFORM="Colab"
elif [[ -n ${KAGGLE_KERNEL_RUN_TYPE:-} || -n ${KAGGLE_URL_BASE:-} ]]; then
  PLATFORM="Kaggle"
fi

tpu_evidence() {
  local dev
  for dev in /dev/accel* /dev/vfio/[0-9]*; do
    if [[ -e $dev ]]; then echo "$dev"; return 0; fi
  done
  local var
  for var in TPU_NAME COLAB_TPU_ADDR TPU_ACCELERATOR_TYPE; do
    if [[ -n ${!var:-} ]]; then echo "\$$var=${!var}"; return 0; fi
  done
  # Kaggle's TPU sessions carry TPU_* variables (and the devices above); its GPU/CPU ones do not.
  if [[ -n ${KAGGLE_KERNEL_RUN_TYPE:-} ]] && env | grep -q '^[A-Z_]*TPU[A-Z_]*='; then
    echo "Kaggle TPU session"; return 0
  fi
  return 1
}

CUDA_VERSION=""
gpu_evidence() {
  command -v nvidia-smi >/dev/null 2>&1 || return 1
  local out
  out=$(nvidia-smi 2>/dev/null) || return 1
  CUDA_VERSION=$(sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  local name
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
  echo "${name:-NVIDIA GPU}, driver CUDA ${CUDA_VERSION:-unknown}"
}

ACCEL=cpu
EVIDENCE="no TPU or NVIDIA GPU found"
if [[ -n $FORCE ]]; then
  ACCEL=$FORCE
  EVIDENCE="forced with --$FORCE"
  [[ $ACCEL == gpu ]] && { gpu_evidence >/dev/null || true; }
elif ev=$(tpu_evidence); then
  ACCEL=tpu
  EVIDENCE=$ev
elif ev=$(gpu_evidence); then
  ACCEL=gpu
  EVIDENCE=$ev
  gpu_evidence >/dev/null  # $(...) ran in a subshell: set CUDA_VERSION here
fi
say "platform: $PLATFORM; accelerator: $ACCEL ($EVIDENCE)"

JAX_EXTRA=""
case "$ACCEL" in
  tpu) JAX_EXTRA="tpu" ;;
  gpu)
    major=${CUDA_VERSION%%.*}
    if [[ -z $major ]]; then
      say "could not read the CUDA version from nvidia-smi; assuming CUDA 12"
      major=12
    fi
    if ((major >= 13)); then
      JAX_EXTRA="cuda13"
    elif ((major == 12)); then
      JAX_EXTRA="cuda12"
    else
      say "WARNING: the NVIDIA driver supports CUDA $CUDA_VERSION; JAX needs CUDA 12 or newer."
      say "WARNING: installing CPU JAX instead (update the driver to use the GPU)."
      ACCEL=cpu
    fi
    ;;
  cpu) ;;
  *) die "unknown accelerator '$ACCEL'" ;;
esac

# ---------------------------------------------------------------------------------------------
# JAX: keep a working one in range, else install the right build
# ---------------------------------------------------------------------------------------------
# Prints "<version> <backend>" and exits 0 when jax imports, its version is in JAX_SPEC and its
# default backend is the wanted one; otherwise prints why and exits non-zero. A subprocess, so a
# broken install cannot take this script down, and with a timeout, so a hung TPU cannot either.
check_jax() {
  local want=$1
  local cmd=("$PY" -c '
import sys
want, spec = sys.argv[1], sys.argv[2]
try:
    from packaging.specifiers import SpecifierSet
except ImportError:
    from pip._vendor.packaging.specifiers import SpecifierSet
try:
    import jax
except Exception as e:
    print(f"not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})"); sys.exit(1)
v = jax.__version__
if v not in SpecifierSet(spec):
    print(f"{v} is outside the pinned range jax{spec}"); sys.exit(1)
try:
    backend = jax.default_backend()
    jax.numpy.ones(2).block_until_ready()
except Exception as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f"{v} is installed but fails: {msg[:300]}"); sys.exit(3 if "in use" in msg.lower() or "busy" in msg.lower() else 1)
if backend != want:
    print(f"{v} runs on {backend}, not {want}"); sys.exit(1)
print(f"{v} {backend}")
' "$want" "$JAX_SPEC")
  if command -v timeout >/dev/null 2>&1; then
    timeout 300 "${cmd[@]}" 2>/dev/null
  else
    "${cmd[@]}" 2>/dev/null
  fi
}

JAX_CHANGED=0
status=0
jax_state=$(check_jax "$ACCEL") || status=$?
if [[ $status == 0 ]]; then
  say "jax: keeping the installed jax $jax_state (in range jax$JAX_SPEC, works)"
elif [[ $status == 3 ]]; then
  say "jax: the $ACCEL is busy (another process, probably this notebook's kernel, holds it): $jax_state"
  say "jax: keeping the installed jax; restart the runtime after setup if imports fail"
else
  say "jax: ${jax_state:-not usable}"
  if [[ -n $JAX_EXTRA ]]; then
    # The extra pins matching jaxlib + libtpu / CUDA plugin, so the set is upgraded together.
    pip_install -U "jax[$JAX_EXTRA]$JAX_SPEC"
  else
    pip_install -U "jax$JAX_SPEC"
  fi
  JAX_CHANGED=1
fi

# ---------------------------------------------------------------------------------------------
# The course: requirements.txt (pip leaves what is satisfied alone) and the package, editable
# ---------------------------------------------------------------------------------------------
pip_install -r requirements.txt
if [[ $WANT_TEST == 1 ]]; then
  if "$PY" -c 'import torch' 2>/dev/null; then
    # Keep the torch that is here (Colab's torchvision pins it; a GPU box has its CUDA build).
    say "torch $("$PY" -c 'import torch; print(torch.__version__)') is installed: kept"
    pip_install $(grep -v '^torch==' requirements-test.txt | grep -v '^-r ' | sed 's/#.*//' | xargs)
  else
    pip_install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements-test.txt
  fi
fi

# Is aha-utils installed in editable mode from this folder? (Run from / so that the
# aha_utils.egg-info here does not shadow the installed metadata.)
editable_from_here() {
  (cd / && "$PY" -c '
import json, sys
from importlib.metadata import distribution
from pathlib import Path
from urllib.parse import unquote, urlparse
try:
    d = json.loads(distribution("aha-utils").read_text("direct_url.json") or "{}")
except Exception:
    sys.exit(1)
ok = d.get("dir_info", {}).get("editable") and \
    Path(unquote(urlparse(d["url"]).path)).resolve() == Path(sys.argv[1]).resolve()
sys.exit(0 if ok else 1)
' "$ROOT") 2>/dev/null
}
if editable_from_here; then
  say "aha-utils: already installed in editable mode from $ROOT"
else
  pip_install --no-deps -e .
fi

if [[ $DRY_RUN == 1 ]]; then
  say "dry run: nothing was installed"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Proof
# ---------------------------------------------------------------------------------------------
say "check: python -c \"import jax; print(jax.__version__, jax.devices())\""
if ! (cd / && "$PY" -c "import jax; print(jax.__version__, jax.devices())"); then
  die "jax does not start. On Colab/Kaggle restart the runtime and run this script again."
fi
(cd / && "$PY" -c "import aha_utils, flax, orbax.checkpoint as o; print('aha_utils', aha_utils.__version__, '| flax', flax.__version__, '| orbax', o.__version__)")
if [[ $JAX_CHANGED == 1 && $PLATFORM != "local machine" ]]; then
  say "jax was (re)installed: if this notebook imported jax before, restart the runtime now."
fi
say "done"
