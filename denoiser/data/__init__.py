"""The MNIST-layout datasets: the IDX format, the known sets (files, checksums, mirrors),
finding, downloading and verifying them, and the array conventions (uint8 ``(N, H, W)`` on
disk, float ``(N, 1, H, W)`` in [0, 1] for a model).

    idx        the IDX file format
    datasets   the known sets: MNIST, Fashion-MNIST, any set in MNIST's layout
    mnist      load_dataset, verify_dataset, download; DataError
    arrays     to_float, to_model_input, from_model_output, by_shape
"""

from denoiser import lazy_exports

_EXPORTS = {
    "load_dataset": "mnist",
    "verify_dataset": "mnist",
    "DataError": "mnist",
    "DATASETS": "datasets",
    "to_float": "arrays",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
