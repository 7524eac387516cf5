#!/usr/bin/env bash
# The second round of GPU runs (notebooks/runs/, README "Results"): after the first round's
# Countdown-3 run collapsed at lr 1e-5 and the GSM8K run learned to guess, four runs side by side
# on one GPU, each a change of one thing against that first round:
#
#   countdown3_lr3e-6          zero arm, learning rate 1e-5 -> 3e-6 (the collapse came from
#                              gradient-norm spikes of 15-46 after a run of zero-gradient steps)
#   countdown3_fewshot_lr3e-6  zero arm at 3e-6 with the few-shot template (two worked examples
#                              in the prompt: format from the prompt, not from the reward)
#   countdown3_sft_lr3e-6      warm-start arm: SFT on solver-written Countdown-3 solutions
#                              (python -m aha_utils.sft), then the same GRPO as countdown3_lr3e-6
#   countdown4_sft_lr3e-6      warm-start arm on Countdown with 4 numbers
#
#   bash scripts/aha_tuning.sh OUT_DIR MINUTES
#
# Everything else is the GPU preset (Gemma 3 270M base from the GGUF, full fine-tuning, 16
# prompts x G=8, 256 new tokens, beta=0, mu=1, TinyZero reward) and the first round's logging
# (greedy held-out evaluation on 512 problems before and after). MINUTES bounds each run's GRPO;
# the SFT phase comes on top. Four processes share the GPU, each with 22% of its memory
# (aha_utils.memory estimates 13.5 GB for 8-row micro-batches); the script returns at once.
set -euo pipefail
out=${1:?OUT_DIR}
minutes=${2:?MINUTES}
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.22
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache}

grpo=(python3 -m aha_utils.train --task countdown --steps 1000 --time-limit "$minutes"
      --set learning_rate=3e-6 --set eval_n=512 --set eval_every=50 --set sample_every=10
      --set checkpoint_every=50 --set micro_batch_size=8)
sft=(python3 -m aha_utils.sft --task countdown --steps 200 --batch 32 --lr 2e-5 --micro-batch 8
     --eval-n 64)   # the GRPO run's step-0 evaluation (n=512) is the SFT model's score

launch() {   # name, then the shell command of the run (its output goes to OUT_DIR/<name>.log)
  local name=$1
  shift
  setsid nohup bash -c "$*" >"$out/$name.log" 2>&1 </dev/null &
  echo "started $name (pid $!)"
}

launch countdown3_lr3e-6 "${grpo[*]} --out $out/countdown3_lr3e-6"
launch countdown3_fewshot_lr3e-6 "${grpo[*]} --set template=few_shot --out $out/countdown3_fewshot_lr3e-6"
launch countdown3_sft_lr3e-6 "${sft[*]} --num-numbers 3 --out $out/sft_countdown3 && \
  ${grpo[*]} --set init_from=$out/sft_countdown3 --out $out/countdown3_sft_lr3e-6"
launch countdown4_sft_lr3e-6 "${sft[*]} --num-numbers 4 --out $out/sft_countdown4 && \
  ${grpo[*]} --set num_numbers=4 --set init_from=$out/sft_countdown4 --out $out/countdown4_sft_lr3e-6"
