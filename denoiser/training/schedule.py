"""The learning rate over a training run, and where the run ends when it has a time budget.

A run is planned as ``epochs x steps per epoch`` steps. The cosine schedule decays the rate
from the recipe's to 0 over them; the constant one keeps it. A recipe may also give a time
budget (``TrainConfig.max_minutes``): after the first epoch, :meth:`Schedule.replan` is
called as the run goes, and when the pace so far (validation included) says the planned
steps would end after the budget, the run is shortened to the steps that fit; when the pace
picks up again, it is lengthened back, never past the plan. The cosine then continues from
where it is down to 0 at the new end, so the rate never jumps and the run still ends
annealed. On a machine fast enough for the plan throughout, nothing changes: the steps and
the rate are exactly those of the plan, so the weights are the same as without a budget.
"""

from __future__ import annotations

import math

#: A later end must be later by more than this share of the planned steps (or the whole
#: plan again): the pace wavers a little from one report to the next.
HYSTERESIS = 0.01


class Schedule:
    """The rate factor (0-1) at each step, and the step the run ends at."""

    def __init__(self, kind: str, planned_steps: int, budget_seconds: float | None = None) -> None:
        if kind not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {kind!r}")
        if planned_steps < 1:
            raise ValueError(f"planned_steps must be >= 1, got {planned_steps}")
        if budget_seconds is not None and not budget_seconds > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {budget_seconds}")
        self.kind, self.planned_steps, self.budget_seconds = kind, planned_steps, budget_seconds
        self.end = planned_steps  # the run stops after this many steps
        self.replanned = False
        # The progress (0-1) runs linearly from _anchor_progress at _anchor to 1 at end.
        self._anchor, self._anchor_progress = 0, 0.0

    def progress(self, step: int) -> float:
        """How far through the run (0-1) step ``step`` (0-based) is."""
        if step >= self.end:
            return 1.0
        span = self.end - self._anchor
        return self._anchor_progress + (1.0 - self._anchor_progress) * (step - self._anchor) / span

    def factor(self, step: int) -> float:
        """The learning rate of step ``step``, as a fraction of the recipe's."""
        if self.kind == "constant":
            return 1.0
        if not self.replanned:  # exactly the planned cosine (the arithmetic of the plan)
            return 0.5 * (1.0 + math.cos(math.pi * min(step, self.end) / self.end))
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def replan(self, done: int, elapsed_seconds: float) -> int:
        """After ``done`` steps in ``elapsed_seconds``: end the run where, at this pace, the
        budget ends (never past the plan). Returns the steps it moved the end by (negative:
        shortened), 0 when it stays."""
        if self.budget_seconds is None or done < 1 or done >= self.end:
            return 0
        per_step = elapsed_seconds / done
        fits = max(1, int((self.budget_seconds - elapsed_seconds) / per_step))
        new_end = min(self.planned_steps, done + fits)
        moved = new_end - self.end
        # Shortened at once (the budget holds); lengthened only by a clear margin, or back to
        # the whole plan (a pace that wavers does not move the end back and forth).
        if moved == 0 or (0 < moved <= HYSTERESIS * self.planned_steps and new_end < self.planned_steps):
            return 0
        self._anchor_progress, self._anchor = self.progress(done), done
        self.end, self.replanned = new_end, True
        return moved
