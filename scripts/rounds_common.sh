# Sourced by scripts/aha_round3.sh, aha_round4.sh and aha_round5.sh, whose arguments it reads
# (OUT_DIR MINUTES [GSM8K_DIR] into `out`, `minutes`, `gsm8k`): the output folder, the
# compilation cache, the commands every round starts from and the background launcher. A round
# adds its own flags to a run's command line.
#
#   grpo   GRPO with the GPU preset, stopped after `minutes`, 512-problem greedy evaluations
#          every 50 steps, samples every 10, 8-row micro-batches (three or four runs share a GPU)
#   sft    the warm start's supervised phase: batches of 32 solutions at lr 2e-5, a small
#          evaluation of its own (the GRPO run's step-0 evaluation, n=512, is the one reported)
out=${1:?OUT_DIR}
minutes=${2:?MINUTES}
gsm8k=${3:-../shared/data/gsm8k}
mkdir -p "$out"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}

grpo=(python3 -m aha_utils.train --steps 1000 --time-limit "$minutes" --set eval_n=512
      --set eval_every=50 --set sample_every=10 --set checkpoint_every=50
      --set micro_batch_size=8)
sft=(python3 -m aha_utils.sft --batch 32 --lr 2e-5 --micro-batch 8 --eval-n 64)

launch() {   # name, then the shell command of the run (its output goes to OUT_DIR/<name>.log)
  local name=$1
  shift
  setsid nohup bash -c "$*" >"$out/$name.log" 2>&1 </dev/null &
  echo "started $name (pid $!)"
}
