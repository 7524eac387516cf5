#!/usr/bin/env bash
# The third round of GPU runs (notebooks/runs/, README "Results"): the targets the second round
# missed, three runs side by side on one GPU.
#
#   gsm8k_sft_lr3e-6           warm-start arm on GSM8K: SFT on the train split's own worked
#                              solutions (python -m aha_utils.sft --task gsm8k), then GRPO at the
#                              second round's 3e-6 (the first round's zero arm at 1e-5 learned to
#                              guess a number)
#   gsm8k_fewshot_lr3e-6       zero arm on GSM8K at 3e-6 with the few-shot template
#   countdown4_sft600_lr1e-6   Countdown-4 warm start with three times the SFT (600 steps) and a
#                              third of the GRPO learning rate (at 3e-6 it fell from 7.4% to 3.5%)
#
#   bash scripts/aha_round3.sh OUT_DIR MINUTES [GSM8K_DIR]
#
# Everything else is the GPU preset (Gemma 3 270M base from the GGUF, full fine-tuning, 16
# prompts x G=8, 256 new tokens, beta=0, mu=1, TinyZero reward), greedy held-out evaluation on
# 512 problems before and after. MINUTES bounds each run's GRPO; the SFT phase comes on top.
# Three processes share the GPU, each with 30% of its memory; the script returns at once.
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.30
source "$(dirname "$0")/rounds_common.sh"   # out, minutes, gsm8k; grpo, sft, launch

launch gsm8k_sft_lr3e-6 "${sft[*]} --task gsm8k --gsm8k-path $gsm8k --steps 300 \
  --out $out/sft_gsm8k && ${grpo[*]} --task gsm8k --gsm8k-path $gsm8k \
  --set learning_rate=3e-6 --set init_from=$out/sft_gsm8k --out $out/gsm8k_sft_lr3e-6"
launch gsm8k_fewshot_lr3e-6 "${grpo[*]} --task gsm8k --gsm8k-path $gsm8k \
  --set learning_rate=3e-6 --set template=few_shot --out $out/gsm8k_fewshot_lr3e-6"
launch countdown4_sft600_lr1e-6 "${sft[*]} --task countdown --num-numbers 4 --steps 600 \
  --out $out/sft600_countdown4 && ${grpo[*]} --task countdown --set num_numbers=4 \
  --set learning_rate=1e-6 --set init_from=$out/sft600_countdown4 \
  --out $out/countdown4_sft600_lr1e-6"
