"""How adapting spends its minutes.

``AdaptConfig.minutes`` is the adapt stage's whole time: measuring the folder (the parent's
outputs, the noise profile, the backgrounds, the handwriting match), fine-tuning, the gate and
the label-free checks on the folder's scans. The work around fine-tuning is measured where it
is done before, and foreseen where it comes after, in units of what it cost the parent to clean
the folder's sample once (one *pass*, timed at the start on this machine, in this load);
fine-tuning gets what is left. Sampling the folder, and Prefect, come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The label-free checks (:mod:`denoiser.adapt.gate`), per scan they read, in passes of the parent
#: over one scan: the adapted model's outputs, the shape model's readings of both models' outputs,
#: both models on renoised outputs and the learned estimate. Measured 5.2 (2,000 real cheque
#: digits, 2-core AMD EPYC, float32, 2026-12-07: 31.9 s against 6.1 s for the parent's pass).
LABEL_FREE_PASSES = 5.5
#: The blind-spot loss of both models on the folder's scans (white folders only), per scan: 2.1.
BLIND_SPOT_PASSES = 2.2
#: The gate's held-out pairs cleaned by both models, per pair: 0.9 (500 pairs, 1.3 s).
GATE_PASSES = 1.0
#: Fine-tuning gets at least this share of the budget, whatever the rest takes (a slow machine
#: or a small budget then overruns it; the log says so).
MIN_TRAIN_SHARE = 0.25


@dataclass(frozen=True)
class Budget:
    total: float  # seconds of the whole stage
    spent: float  # seconds before fine-tuning
    after: float  # seconds foreseen after it
    train: float  # seconds for fine-tuning

    @property
    def squeezed(self) -> bool:
        """Fine-tuning got its floor: the stage will take longer than its budget."""
        return self.spent + self.after + self.train > self.total + 1e-9


def plan(minutes: float, spent: float, pass_seconds: float, scans: int, *, checked: int, blind_spot: bool,
         gate_pairs: int) -> Budget:
    """The fine-tuning seconds of a ``minutes`` stage that has ``spent`` seconds already, where
    the parent cleaned the ``scans`` of the sample in ``pass_seconds``; after fine-tuning come
    the label-free checks on ``checked`` scans, the blind-spot loss (when ``blind_spot``) and
    the gate's ``gate_pairs``."""
    total = minutes * 60
    per_scan = pass_seconds / max(1, scans)
    after = per_scan * (LABEL_FREE_PASSES * checked + (BLIND_SPOT_PASSES * scans if blind_spot else 0)
                        + GATE_PASSES * gate_pairs)
    return Budget(total, spent, after, max(MIN_TRAIN_SHARE * total, total - spent - after))


def rate_factor(schedule: str, progress: float) -> float:
    """The share of the learning rate at ``progress`` (0 to 1) of the run's budget."""
    if schedule == "constant":
        return 1.0  # (schedule is checked by AdaptConfig)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
