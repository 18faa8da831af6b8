"""Models beside classical filters, on MNIST with synthetic noise, on rendered scans and on real ones,
with the digit-identity check, and the score a model is promoted on.

    evaluate    prepare, score_model, score_baseline, summarize (the evaluate command)
    baselines   median, Gaussian, TV, NL-means, wavelets, BM3D
    scanset     the scan test set: every kind of scan degradation
    digits      the digit-identity check (a nearest-neighbour reader)
    promotion   use_score: the number promotion compares
    real        evaluate --real: labelled real scans, scored by how often the reader reads them
    recognizer  the digit reader trained on MNIST, used by nothing that cleans
"""

from denoiser import lazy_exports

_EXPORTS = {
    "summarize": "evaluate",
    "score_model": "evaluate",
    "use_score": "promotion",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
