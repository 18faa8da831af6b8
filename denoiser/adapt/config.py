"""What adapting is told: :class:`AdaptConfig`, its time, batch, shares and checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AdaptConfig:
    # The adapt stage's whole time: measuring the folder, fine-tuning, the gate and the label-free
    # checks (denoiser.adapt.budget); fine-tuning gets what the rest leaves. Sampling comes on top.
    minutes: float = 2.5
    # Above 0: train exactly this many steps, ignoring ``minutes`` (work that does not depend on the load).
    steps: int = 0
    batch_size: int = 64
    learning_rate: float = 1e-3  # measured: +1.10 dB at 1e-3, +0.84 dB at 3e-4 (gaussian 0.7, 2.5 min)
    # Share of each batch with the parent's own training noise (off: a quarter cut Gaussian 0.3's gain to +0.09 dB).
    rehearsal: float = 0.0
    # Share of each batch whose clean digits are the folder's own shapes (:func:`folder_shapes`), noised afresh:
    # +0.24 dB on handwriting unlike MNIST's, +0.09 on the tutorial's noise; at 0.6 the handwriting lost 0.19.
    style: float = 0.3
    # Times the folder's shapes are made again from the model being adapted, evenly spaced (docs/LOG.md,
    # 2026-11-29); fewer where they would take more than style_match.REFRESH_SHARE of the budget.
    refresh: int = 3
    # "constant" keeps learning_rate; "cosine" lowers it to 0 over the budget (measured no better).
    schedule: str = "constant"
    # Decay of the moving average of the weights (denoiser.adapt.averaging; 0: off), which is the adapted
    # model and makes the folder's shapes again: a constant rate leaves the last weights where they wandered.
    average: float = 0.995
    # Bring MNIST's digits (and the gate's) to the folder's slant, size and stroke width (style_match):
    # handwriting unlike MNIST's 20.50 dB against 19.96 without, a broad leaning hand 21.79 against 20.80.
    match: bool = True
    gate_images: int = 500  # MNIST test digits given the folder's noise
    # The label-free checks read at most this many sampled scans (gate.checked_scans): on 2,000 cheque
    # digits they took 32 s of 226 and refused by 1.2 dB (margin 0.2), as clearly on 1,000.
    check_images: int = 1000
    # Ink weighs this much more than paper in the loss (1 + ink_weight * truth): erasing a faint
    # stroke costs more than leaving a speck (0: plain BCE, as the parent was trained).
    ink_weight: float = 2.0
    # Share of each batch (composite folders) that is the folder's own scans with the parent's outputs as
    # truth, on and around the parent's ink only: real strokes stay the parent's, the paper is learnt from
    # the composites. Without it adapting lost up to 3.1 dB on scan kinds (docs/adaptation.md).
    anchor: float = 0.5
    # Folders not white: fit the scanning's degradation to the folder (denoiser.adapt.scan_fit) and, where it
    # describes the folder within ``fit_distance``, fine-tune on digits scanned with it (truth known) instead of
    # composites and anchors: the scan test set's uneven lighting +5.2 dB, scanner +1.5 (docs/adaptation.md).
    fit: bool = True
    fit_distance: float = 1.0
    # White folders fitted too (in half the time): their white noise alone missed faded ink's tones (grey paper, faint
    # ink: -0.73 dB, refused; fitted +0.63, passed); where the fit is too far it costs the others 0-0.1 dB (LOG).
    fit_white: bool = True
    fit_candidates: int = 100  # random degradations tried, then 0.6 times as many steps around the best
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose constant or cosine")
        if self.check_images < 1:
            raise ValueError(f"check_images must be at least 1, got {self.check_images}")
        if self.fit_candidates < 1:
            raise ValueError(f"fit_candidates must be at least 1, got {self.fit_candidates}")
        if self.steps < 0:
            raise ValueError(f"steps must be 0 (train for the minutes) or more, got {self.steps}")
        for name in ("rehearsal", "style", "anchor"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} is a share of each batch: it must be at least 0 and below 1")

    def to_dict(self) -> dict:
        return asdict(self)
