#!/usr/bin/env bash
# The fourth round of GPU runs (notebooks/runs/, README "Results"): a KL anchor to the SFT model
# for the two targets the third round missed, and notebook 05 executed on the GPU.
#
#   countdown4_sft600_kl_lr3e-6   Countdown-4 warm start (SFT 600 steps, as the third round),
#                                 then GRPO at 3e-6 with beta=0.04: the KL to the SFT weights is
#                                 the reference, so the policy may not drift far from them (at
#                                 3e-6 without it, the second round fell from 7.4% to 3.5%)
#   gsm8k_sft500_kl_lr1e-6        GSM8K warm start with 500 SFT steps (2.1 epochs of the 7,402
#                                 kept solutions; the third round's 300 gave 5.3%), then GRPO at
#                                 1e-6 with beta=0.04 (at 3e-6 without it, 5.3% fell to 2.7%)
#   05_grpo.ipynb                 notebook 05 executed in full (its GPU branch: 30 real steps)
#
#   bash scripts/aha_round4.sh OUT_DIR MINUTES [GSM8K_DIR]
#
# Everything else is the GPU preset (Gemma 3 270M base from the GGUF via AHA_GGUF_PATH, full
# fine-tuning, 16 prompts x G=8, 256 new tokens, mu=1, TinyZero reward), greedy held-out
# evaluation on 512 problems before and after. MINUTES bounds each run's GRPO; the SFT phase
# comes on top. The runs take 27% of the GPU's memory each and the notebook 40% (allocating on
# demand beside the runs, it ran out of memory for an 18 GB buffer of its train step). Needs
# nbclient and ipykernel for the notebook. The script returns at once.
set -euo pipefail
source "$(dirname "$0")/rounds_common.sh"   # out, minutes, gsm8k; grpo, sft, launch
grpo+=(--set beta=0.04)

runs="export XLA_PYTHON_CLIENT_MEM_FRACTION=0.27;"
launch countdown4_sft600_kl_lr3e-6 "$runs ${sft[*]} --task countdown --num-numbers 4 \
  --steps 600 --out $out/sft600_countdown4 && ${grpo[*]} --task countdown \
  --set num_numbers=4 --set learning_rate=3e-6 --set init_from=$out/sft600_countdown4 \
  --out $out/countdown4_sft600_kl_lr3e-6"
launch gsm8k_sft500_kl_lr1e-6 "$runs ${sft[*]} --task gsm8k --gsm8k-path $gsm8k --steps 500 \
  --out $out/sft500_gsm8k && ${grpo[*]} --task gsm8k --gsm8k-path $gsm8k \
  --set learning_rate=1e-6 --set init_from=$out/sft500_gsm8k --out $out/gsm8k_sft500_kl_lr1e-6"
launch notebook05 "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.40; python3 -c \"
import nbformat, time
from nbclient import NotebookClient
nb = nbformat.read('notebooks/05_grpo.ipynb', as_version=4)
t0 = time.time()
NotebookClient(nb, timeout=3000, kernel_name='python3',
               resources={'metadata': {'path': 'notebooks'}}).execute()
nbformat.write(nb, '$out/05_grpo.ipynb')
print('notebook 05 executed in %.1f min' % ((time.time() - t0) / 60))
\""
