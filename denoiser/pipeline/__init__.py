"""The MNIST run's five stages over a run folder (ingest, synthesize noise, train or load,
denoise, report), what each records there, and the report.

    stages        ingest, synthesize_noise, denoise, write_report, run_pipeline, train_clean_default
    train_stage   train_or_load: the model a recipe names, loaded or trained and stored
    record        what each stage leaves in its run folder
    report        per-image metrics, summary, preview
"""

from denoiser import lazy_exports

_EXPORTS = {
    "run_pipeline": "stages",
    "train_or_load": "train_stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
