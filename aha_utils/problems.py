"""The problems a run sees: a `Problems` stream with three disjoint splits.

- train: the problems of step s, a pure function of `(seed, s)` so a resumed run draws what a
  straight one would (Countdown: fresh problems of the train split every step; GSM8K: epochs of
  seeded permutations of the train split's pool).
- validation (`val_n`): drawn from the train split and kept out of the training stream; the loop
  evaluates it during training and keeps the parameters that score best on it.
- test (`eval_n`): the test split (disjoint from train by construction), evaluated before and
  after training only; nothing is ever chosen on it.
`check_disjoint` asserts the three never share a problem (a problem is its numbers and target,
or its question).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from aha_utils.data.countdown import make_problems
from aha_utils.data.gsm8k import load_gsm8k
from aha_utils.run_config import RunConfig

VAL_SEED = 0x5EED_0F_7A1   # mixed into the validation draw, so it is no training step's draw


def subseed(*parts: int) -> int:
    """A 32-bit seed from integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def problem_key(problem: dict) -> str:
    """A problem's identity: Countdown's numbers (as a multiset) and target, GSM8K's question."""
    if "question" in problem:
        return problem["question"].strip()
    return json.dumps([sorted(problem["nums"]), problem["target"]])


class Problems:
    """Training problems of step s, and the run's validation and test sets."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        if cfg.task == "gsm8k":
            pool = load_gsm8k("train", path=cfg.gsm8k_path)
            self.test_set = load_gsm8k("test", path=cfg.gsm8k_path)[:cfg.eval_n]
            if cfg.val_n:   # a seeded sample of the train split, taken out of the pool
                if cfg.val_n >= len(pool):
                    raise ValueError(f"val_n={cfg.val_n} leaves no GSM8K training problems "
                                     f"(the train split has {len(pool)}): lower it with "
                                     "--set val_n=N (python -m aha_utils.sft: --val-n N)")
                order = np.random.default_rng(subseed(cfg.seed, VAL_SEED)).permutation(len(pool))
                held = set(order[:cfg.val_n].tolist())   # a prefix: larger val_n extends it
                self.val_set = [q for i, q in enumerate(pool) if i in held]
                pool = [q for i, q in enumerate(pool) if i not in held]
            else:
                self.val_set = []
            self.train_pool = pool
        else:
            self.test_set = make_problems(cfg.eval_n, num_numbers=cfg.num_numbers,
                                          seed=cfg.seed, split="test")
            self.val_set = [] if not cfg.val_n else make_problems(
                cfg.val_n, num_numbers=cfg.num_numbers, seed=subseed(cfg.seed, VAL_SEED),
                split="train")
        self._val_keys = {problem_key(q) for q in self.val_set}
        self._perms: dict[int, np.ndarray] = {}

    @property
    def eval_set(self) -> list[dict]:
        """The test set under its old name."""
        return self.test_set

    def pool_hash(self) -> str:
        """sha256 of the training pool (GSM8K) or of step 0's problems (Countdown's generator)."""
        pool = self.train_pool if self.cfg.task == "gsm8k" else self.for_step(0)
        return hashlib.sha256(json.dumps(pool, sort_keys=True).encode()).hexdigest()

    def position(self, step: int) -> int:
        """Problems consumed before step `step` (the data position stored in checkpoints)."""
        return step * self.cfg.prompts_per_step

    def for_step(self, step: int) -> list[dict]:
        cfg = self.cfg
        if cfg.task == "countdown":   # an endless stream: fresh problems each step
            out = make_problems(cfg.prompts_per_step, num_numbers=cfg.num_numbers,
                                seed=subseed(cfg.seed, step), split="train")
            if self._val_keys and any(problem_key(q) in self._val_keys for q in out):
                # rare: redraw this step (deterministically) until no validation problem is in it
                for k in range(1, 1000):
                    out = make_problems(cfg.prompts_per_step, num_numbers=cfg.num_numbers,
                                        seed=subseed(cfg.seed, step, k), split="train")
                    if not any(problem_key(q) in self._val_keys for q in out):
                        break
            return out
        n = len(self.train_pool)      # GSM8K: epochs of seeded permutations of the pool
        out = []
        for idx in range(self.position(step), self.position(step + 1)):
            epoch, i = divmod(idx, n)
            if epoch not in self._perms:
                self._perms[epoch] = np.random.default_rng(subseed(cfg.seed, epoch)).permutation(n)
            out.append(self.train_pool[self._perms[epoch][i]])
        return out

    def check_disjoint(self, steps: int) -> None:
        """Raise if the test set, the validation set and the first `steps` steps' training
        problems share a problem."""
        test = {problem_key(q) for q in self.test_set}
        train = {problem_key(q) for s in range(steps) for q in self.for_step(s)}
        for name, a, b in (("validation", self._val_keys, test), ("train", train, test),
                           ("train", train, self._val_keys)):
            common = a & b
            if common:
                other = "test" if b is test else "validation"
                raise AssertionError(f"{len(common)} problems in both {name} and {other}, "
                                     f"e.g. {sorted(common)[:2]}")
