"""Signals about a cleaned scan that need no clean truth: the estimated PSNR (analytic and
learned) and the out-of-distribution flag, including the digit-shape model that tells
digits from letters.

    quality       the analytic estimate and the OOD rules (assess)
    quality_net   the learned PSNR estimate (trained by denoiser.training.quality)
    shapes        the digit-shape model (trained by denoiser.training.shapes)
"""

from denoiser import lazy_exports

_EXPORTS = {
    "assess": "quality",
    "load_quality": "quality_net",
    "find_quality": "quality_net",
    "load_shapes": "shapes",
    "find_shapes": "shapes",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
