"""A moving average of a model's weights during training (an exponential moving average).

Training at a constant rate ends wherever the last steps left the weights; an average over
the last few hundred steps sits nearer the middle of where they wandered. Until ``decay``
is reached, step ``t`` moves the average by ``4 / t`` of the way: it stands for about the
last quarter of the steps so far, so that a short run is not held back near its starting
weights. ``decay`` 0 turns it off: ``model`` is then the trained model itself.

    averaged = WeightAverage(model, decay=0.995)
    ...; optimizer.step(); averaged.update()
    final = averaged.model
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the average's decay must be in [0, 1), got {decay}")
        self.decay, self._live = decay, model
        self.model = copy.deepcopy(model) if decay else model
        self._pairs = [(a, p) for a, p in zip(self.model.parameters(), model.parameters(), strict=True)]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Move the average a step towards the live weights."""
        if self.decay:
            self.updates += 1
            decay = min(self.decay, max(0.0, 1.0 - 4.0 / self.updates))  # a short run's last quarter
            averaged, live = zip(*self._pairs, strict=True)
            torch._foreach_lerp_(list(averaged), list(live), 1.0 - decay)
