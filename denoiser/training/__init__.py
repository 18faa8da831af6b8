"""Training: the loop (with its data pairs and time budget), the learning-rate schedule,
and the training of the checks (the digit-shape model, its letters, the learned quality
estimate).

    loop      train, training_pair, split_train_val
    schedule  the learning rate over a run and the time budget's end of it
    shapes    ensure_shapes: the digit-shape model trained and calibrated
    letters   letters drawn by a pen from skeletons (the shape model's "not a digit")
    quality   ensure_quality: the learned PSNR estimate for a cleaning model
"""

from denoiser import lazy_exports

_EXPORTS = {
    "train": "loop",
    "ensure_shapes": "shapes",
    "ensure_quality": "quality",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
