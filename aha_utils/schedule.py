"""How many steps the learning-rate schedule is planned over (`SchedulePlan`).

The schedule itself (`train_step.make_schedule`) is linear warmup, then cosine from the peak down
to `lr_floor` x the peak at the last planned step. Its length must be the run's real length, or a
run stopped early by `--time-limit` ends mid-plateau at a high rate. So:
- without a time limit the plan is `--steps`, known from the start;
- with one, the first `PLAN_AFTER` steps run on the plan `--steps` (the cosine has barely begun),
  are timed, and then the plan is frozen at min(--steps, the steps that fit the time left, with
  the periodic validation and the final test evaluations counted); the optimizer is rebuilt
  with the resized schedule (its state carries over), which costs one recompilation;
- the plan is stored with every checkpoint, so `--resume` continues the same schedule exactly;
  a resume with a different `--steps` (extending a run) re-plans from there, and says so.
The time limit also stays a hard stop: the run ends after the first step that ends past it.
"""

from __future__ import annotations

import dataclasses
import statistics

PLAN_AFTER = 3   # steps timed before a time limit sizes the schedule


@dataclasses.dataclass
class SchedulePlan:
    steps: int                      # --steps
    planned: int                    # the schedule's length in steps
    frozen: bool                    # planned is final (stored with checkpoints)
    plan_at: int | None = None      # the step after which a time limit sizes the plan
    note: str = ""
    step_seconds: list = dataclasses.field(default_factory=list)
    eval_seconds: float = 0.0       # the last validation's duration
    test_seconds: float = 0.0       # the first test evaluation's duration

    @classmethod
    def start(cls, steps: int, start: int, time_limit_s: float | None,
              meta: dict | None) -> "SchedulePlan":
        """The plan of a run that starts (or resumes) at step `start`; `meta`: the checkpoint's."""
        saved = (meta or {}).get("schedule")
        if saved and saved["steps"] == steps and saved["frozen"]:
            return cls(steps, saved["planned"], True)
        note = ""
        if meta is not None and meta["config"]["steps"] != steps:
            note = (f"--steps {meta['config']['steps']} -> {steps}: the learning-rate schedule is "
                    f"re-planned from step {start} (the rate follows the new length from here)")
        if time_limit_s is None or steps - start <= PLAN_AFTER:
            return cls(steps, steps, True, note=note)
        return cls(steps, steps, False, plan_at=start + PLAN_AFTER, note=note)

    def should_plan(self, done: int) -> bool:
        return not self.frozen and done == self.plan_at

    def freeze(self, done: int, remaining_s: float, eval_every: int) -> int:
        """Plan min(steps, what fits `remaining_s`) after `done` timed steps; returns it."""
        timed = self.step_seconds[1:] or self.step_seconds   # the first step compiled
        per_step = statistics.median(timed) + self.eval_seconds / eval_every
        reserve = 2 * (self.test_seconds or self.eval_seconds)   # final test + best-on-val
        fit = max(0, int((remaining_s - reserve) // per_step))
        self.planned, self.frozen = max(done, min(self.steps, done + fit)), True
        self.note = (f"time limit: {per_step:.1f} s a step, {remaining_s / 60:.1f} min left -> "
                     f"the schedule is planned over {self.planned} of {self.steps} steps")
        return self.planned

    def to_meta(self) -> dict:
        return {"schedule": {"steps": self.steps, "planned": self.planned,
                             "frozen": self.frozen}}
