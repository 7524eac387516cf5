"""The command line of `python -m aha_utils.sft`: its flags and their checks, the search-trace
options they give `sft`, and what `--resume` may change (`aha_utils.sft` runs it)."""

from __future__ import annotations

import argparse

from aha_utils import sft_data
from aha_utils.cli import check_names
from aha_utils.data.search_traces import DEAD_ENDS
from aha_utils.resume import changed_settings
from aha_utils.run_config import RunConfig

# Flags --resume may change: the checkpoint cadence, the live view, labels, a moved GSM8K folder
# (the examples must still hash the same: `sft` checks) and the micro-batch (the same update,
# split differently in memory, as GRPO's `resume.RESUME_FREE`).
RESUME_FREE = ("resume", "out", "debug", "experiment", "tensorboard", "checkpoint_every",
               "keep_checkpoints", "gsm8k_path", "micro_batch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aha_utils.sft", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Warm start: supervised fine-tuning on worked solutions (Countdown: "
                    "solver-written; GSM8K: the train split's own), greedy held-out accuracy "
                    "before and after, parameters to OUT/params for `python -m aha_utils.train "
                    "... --set init_from=OUT`.")
    parser.add_argument("--task", required=True, choices=sft_data.TASKS, help="the task")
    parser.add_argument("--num-numbers", type=int, default=None,
                        help="Countdown numbers per problem (countdown only; default 3)")
    parser.add_argument("--gsm8k-path", default=None,
                        help="gsm8k only: folder with GSM8K train.jsonl/test.jsonl (default: "
                             "the copy shipped with the course), as `python -m aha_utils.train --gsm8k-path` takes")
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=32, help="examples per step")
    parser.add_argument("--lr", type=float, default=2e-5,
                        help="peak AdamW learning rate (warmup, then cosine)")
    parser.add_argument("--out", required=True,
                        help="run folder: params/, sft_metrics.jsonl, summary.json, "
                             "checkpoints/ (removed once params/ is saved)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --out, with the same "
                             "settings (error if none)")
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="save parameters + AdamW state every this many steps (and at the "
                             "last), for --resume")
    parser.add_argument("--keep-checkpoints", type=int, default=3,
                        help="how many recent checkpoints to keep (gemma3-270m: 3.2 GB each)")
    parser.add_argument("--model", default="gemma3-270m",
                        help="model name; gemma3-270m needs no download")
    parser.add_argument("--template", default="base", choices=("base", "chat", "few_shot"),
                        help="prompt template (the GRPO run must use the same)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warmup steps (None: steps // 10)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="rows per forward/backward, less memory (None: the whole batch)")
    parser.add_argument("--train-problems", type=int, default=None,
                        help="distinct training problems (default steps x batch: no repeats; "
                             "gsm8k: at most the usable train rows, ~7,400 at 256 new tokens)")
    parser.add_argument("--eval-n", type=int, default=None,
                        help="held-out problems evaluated before and after (None: 512; cpu: 16)")
    parser.add_argument("--val-n", type=int, default=None,
                        help="the GRPO run's validation problems, kept out of the SFT data "
                             "(default: the GRPO preset's val_n; 0 = keep none out)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="for the evaluations, and gsm8k's longest training completion; "
                             "default: the GRPO preset's")
    parser.add_argument("--search-fraction", type=float, default=0.0,
                        help="countdown only: share of the solutions written as a search (tries "
                             "ordered by closeness, misses checked and backed out of) instead of "
                             "straight to the answer; 0 = all direct (the classic warm start), "
                             "1 = all search")
    parser.add_argument("--max-failed", type=int, default=4,
                        help="search traces with --dead-ends drawn: at most this many failed "
                             "attempts shown (drawn per problem from 1 to it; the search's own "
                             "count when smaller)")
    parser.add_argument("--dead-ends", default="drawn", choices=DEAD_ENDS,
                        help="search traces: 'drawn' shows up to --max-failed of the search's "
                             "dead ends, then goes straight to the hit; 'all' shows every dead "
                             "end the search made (dropped from the end only to fit the token cap)")
    parser.add_argument("--slip-rate", type=float, default=0.0,
                        help="search traces: share with one arithmetic slip, caught and fixed")
    parser.add_argument("--seed", type=int, default=0, help="also picks the GRPO run's eval set")
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="the experiments/ config this run comes from (kept in summary.json)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files under OUT/tensorboard "
                             "(needs tensorboardX)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_names(args.model, args.template)
    except ValueError as e:
        parser.error(str(e))
    if args.task == "gsm8k" and args.num_numbers is not None:
        parser.error("--num-numbers is for --task countdown; GSM8K problems have no numbers "
                     "to choose")
    if args.task == "countdown" and args.gsm8k_path is not None:
        parser.error("--gsm8k-path is for --task gsm8k")
    if args.task == "countdown" and args.num_numbers is None:
        args.num_numbers = 3
    if not 0.0 <= args.search_fraction <= 1.0 or not 0.0 <= args.slip_rate <= 1.0:
        parser.error("--search-fraction and --slip-rate are shares between 0 and 1")
    if args.task != "countdown" and (args.search_fraction or args.slip_rate):
        parser.error("--search-fraction and --slip-rate are for --task countdown")
    for name in ("steps", "batch", "num_numbers", "train_problems", "checkpoint_every",
                 "keep_checkpoints"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def search_options(args: argparse.Namespace, cfg: RunConfig, tokenizer) -> dict:
    """The Countdown trace options of the CLI's `args` for `sft`: none for the direct style; for
    search, traces capped at the run's `max_new_tokens` counted with the model's own tokenizer."""
    if not getattr(args, "search_fraction", 0.0):
        return {}
    return dict(search_fraction=args.search_fraction, max_failed=args.max_failed,
                dead_ends=args.dead_ends,
                slip_rate=args.slip_rate, max_tokens=cfg.max_new_tokens,
                count_tokens=lambda text: len(tokenizer.encode(text, add_bos=False)))


def run_settings(args: argparse.Namespace, cfg: RunConfig) -> dict:
    """Every flag, with the values the preset filled in (`cfg`): what a checkpoint records, so a
    resume on other hardware (another preset: dtype, token budget) is caught too."""
    return {**vars(args), "compute_dtype": cfg.compute_dtype, "max_new_tokens": cfg.max_new_tokens,
            "eval_n": cfg.eval_n, "val_n": cfg.val_n}


def check_resume_flags(settings: dict, saved: dict) -> None:
    """Refuse `--resume` with settings (`run_settings`) other than the checkpoint's `saved` ones,
    naming them; `RESUME_FREE` flags may change."""
    changed = changed_settings(saved, settings, RESUME_FREE)
    if changed:
        raise ValueError(
            f"--resume with settings that alter training: {sorted(changed)} (saved, now): "
            f"{changed}; pass the saved values, or a new --out for a new run. Free to change: "
            + ", ".join(f"--{k.replace('_', '-')}" for k in RESUME_FREE[3:]))
