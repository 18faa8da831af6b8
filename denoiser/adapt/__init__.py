"""Adapting a cleaning model to one folder: the folder sampled, fine-tuning, the gate, the
stored model with its lineage, and the decision of when to adapt again.

    sample         sample_folder: a folder's scans in the model's look
    fine_tune      adapt (fine-tuning)
    config         AdaptConfig: the budget, batch shares and checks
    scan_fit       the folder's scanning fitted: digits scanned as the folder was (folders not white)
    composite      Backgrounds: known digits laid on the folder's own paper (folders not white)
    gate           the gate: held-out composites or digits, blind-spot loss, shape_check, estimate_check
    stage          adapt_sample: sample in, stored model with lineage out
    decide         the folder's decision (adapted.json), readapt_reason, gate_verdict
    noise_profile  the folder's noise, measured
    style_match    MNIST's digits brought to the folder's hand
    averaging      a moving average of the weights
"""

from denoiser import lazy_exports

_EXPORTS = {
    "sample_folder": "sample",
    "adapt": "fine_tune",
    "AdaptConfig": "config",
    "adapt_sample": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
