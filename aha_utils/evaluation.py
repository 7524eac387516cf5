"""Scoring and evaluation: the task's reward function, per-completion scores, and the greedy
held-out evaluation the loop runs on the validation and test sets.

Reward functions run per completion (`reward_fn(completion, problem) -> {"reward": r, term:
value, ...}`) so an exception or a non-finite value is reported with the function's name and the
offending completion, instead of surfacing as a mystery deep in the loop.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from aha_utils.analysis import AHA_KEYS, aha_metrics
from aha_utils.data.prompts import make_prompt
from aha_utils.rewards import get_scheme, reward_terms
from aha_utils.run_config import RunConfig
from aha_utils.sampler import generate

STOP_STRINGS = ("</answer>",)
RewardFn = Callable[[str, Mapping], Mapping[str, float]]


def task_reward_fn(task: str, scheme: str = "tinyzero") -> RewardFn:
    """The task's reward with every term: `{"reward": scheme(terms), **terms}`."""
    score = get_scheme(scheme)

    def reward(completion: str, problem: Mapping) -> dict[str, float]:
        terms = reward_terms(task, completion, problem)
        return {"reward": score(terms), **terms}

    reward.__name__ = reward.__qualname__ = f"{task}_{scheme}_reward"
    return reward


def score_completions(reward_fn: RewardFn, texts: list[str], problems: list[Mapping]
                      ) -> dict[str, np.ndarray]:
    """Per-term arrays `[N]`; `problems[i]` belongs to `texts[i]`. Errors name the function and
    the completion."""
    name = getattr(reward_fn, "__qualname__", None) or repr(reward_fn)
    out: dict[str, list[float]] = {}
    for i, (text, problem) in enumerate(zip(texts, problems)):
        try:
            terms = reward_fn(text, problem)
        except Exception as e:
            raise RuntimeError(f"reward function {name} raised {type(e).__name__}: {e}\n  on "
                               f"completion {i}: {text!r}\n  of problem {dict(problem)}") from e
        if not isinstance(terms, Mapping) or "reward" not in terms:
            raise TypeError(f"reward function {name} must return a dict with a 'reward' key; "
                            f"got {terms!r} for completion {i}: {text!r}")
        if out and set(terms) != set(out):
            raise ValueError(f"reward function {name} returned keys {sorted(terms)} for "
                             f"completion {i} but {sorted(out)} before: keep them fixed")
        for key, value in terms.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"reward function {name} returned {key}={value} (not finite) "
                                 f"for completion {i}: {text!r}")
            out.setdefault(key, []).append(float(value))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def prompts_of(cfg: RunConfig, problems: list[dict]) -> list[str]:
    """The prompt text of each problem, in the run's task and template."""
    return [make_prompt(cfg.task, q, template=cfg.template) for q in problems]


def search_summary(task: str, rows: list[dict]) -> dict:
    """Countdown: the aha in `rows` (`analysis.aha_metrics`): self-correction that ends correct,
    any self-correction, the false-step rate among correct answers, the attempts made and their
    histogram (string keys, for JSON). Other tasks: nothing."""
    if task != "countdown" or not rows:
        return {}
    aha = aha_metrics(rows)
    return {**{k: aha[k] for k in AHA_KEYS},
            "attempts_hist": {str(k): v for k, v in aha["attempts_hist"].items()}}


def evaluate(model, tokenizer, cfg: RunConfig, problems: list[dict]) -> tuple[dict, list[dict]]:
    """Greedy accuracy and format rate on held-out `problems` (Countdown: and the aha metrics,
    `search_summary`); also the completions."""
    rows, chunk = [], cfg.prompts_per_step * cfg.num_samples   # bounded like a training batch
    for start in range(0, len(problems), chunk):
        part = problems[start:start + chunk]
        comp = generate(model, tokenizer, prompts_of(cfg, part),
                        max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                        stop_strings=STOP_STRINGS, compute_dtype=cfg.compute_dtype)
        for q, text in zip(part, comp.texts):
            terms = reward_terms(cfg.task, text, q)
            rows.append({"problem": q, "completion": text, "correct": terms["correct"],
                         "format_soft": terms["format_soft"]})
    result = {"accuracy": float(np.mean([r["correct"] for r in rows])),
              "format_rate": float(np.mean([r["format_soft"] for r in rows])), "n": len(rows),
              **search_summary(cfg.task, rows)}
    return result, rows
