"""One scan around the model: its paper and ink levels, its stroke width, the map to the
model's look and back (tones and scale), and a batch of scans cleaned with the figures of
their report rows.

    tones     estimate_levels (where a scan's paper tone is measured), to_model, from_model
    strokes   stroke_width, SHRINK_ABOVE
    restore   prepare, finish, restore (the whole round trip)
    batch     clean_batch: a batch cleaned, checked and measured
"""

from denoiser import lazy_exports

_EXPORTS = {
    "estimate_levels": "tones",
    "stroke_width": "strokes",
    "prepare": "restore",
    "finish": "restore",
    "clean_batch": "batch",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
