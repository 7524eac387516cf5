#!/usr/bin/env bash
# The course's GPU runs (notebooks/runs/): GRPO from the Gemma 3 270M base, full fine-tuning,
# the GPU preset of aha_utils.run_config (16 prompts x G=8, 256 new tokens, lr 1e-5, beta=0,
# mu=1) with 16-row micro-batches, each stopped cleanly by --time-limit and evaluated greedily
# on 512 held-out problems before and after.
#
#   bash scripts/aha_runs.sh OUT_DIR MINUTES [GSM8K_DIR]
#
# The two runs share one GPU at the same time (a 270M model leaves most of an H100 idle), each
# with 45% of its memory, so each run's minutes are longer than it would take alone. Four at a
# time ran out of memory on an 80 GB H100 (32-row micro-batches, no memory fraction set). Each
# run writes OUT_DIR/<run>/ and its log OUT_DIR/<run>.log; the script returns at once (the runs
# go on in the background). notebooks/runs/ keeps a subset of each run's completions.
set -euo pipefail
out=${1:?OUT_DIR}
minutes=${2:?MINUTES}
gsm8k=${3:-../shared/data/gsm8k}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45   # two processes share the GPU's memory
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}

common=(--steps 1000 --time-limit "$minutes" --set eval_n=512 --set eval_every=25
        --set sample_every=10 --set checkpoint_every=25 --set micro_batch_size=16)

launch() {   # name, then arguments for python -m aha_utils.train
  local name=$1
  shift
  setsid nohup python3 -m aha_utils.train --out "$out/$name" "$@" "${common[@]}" \
    >"$out/$name.log" 2>&1 </dev/null &
  echo "started $name (pid $!)"
}

launch countdown3_lr1e-5 --task countdown
launch gsm8k_lr1e-5 --task gsm8k --gsm8k-path "$gsm8k"
