"""denoiser: clean scanned digit images with a convolutional denoising autoencoder, and
train, load and evaluate that model, as a plain PyTorch library (it never imports Prefect;
the flows in ``flows/`` wrap it).

The names a library user needs, each imported on first use (``import denoiser`` stays light):

    mnist = denoiser.load_dataset("data/mnist")
    result = denoiser.train(mnist.train_images, denoiser.TrainConfig.recipe("unet", epochs=1))
    noisy = denoiser.noisy_copy(mnist.test_images[:100], spec=denoiser.NoiseSpec.parse("gaussian:0.5"), seed=0)
    clean = denoiser.denoise(result.model, noisy)
    done = denoiser.clean_folder("scans/", "cleaned/", run=denoiser.CleanRun(model="path/to/model.pt"))

The packages, from the bottom up: ``data`` (MNIST-layout datasets), ``noise`` (synthetic
noise, scan degradations), ``models`` (networks, recipes, the store), ``checks`` (quality
estimates, the digit-shape flag), ``scans`` (one scan around the model), ``training``,
``pipeline`` (the MNIST run's stages), ``folders`` (folder-in/folder-out cleaning),
``adapt`` (adapting to a folder), ``evaluation``. docs/architecture.md maps them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "data.mnist",
    "NoiseSpec": "noise.spec",
    "noisy_copy": "noise.synthetic",
    "TrainConfig": "models.recipe",
    "load_model": "models.checkpoint",
    "resolve_checkpoint": "models.checkpoint",
    "denoise": "models.infer",
    "train": "training.loop",
    "restore": "scans.restore",
    "psnr": "metrics",
    "ssim": "metrics",
    "run_pipeline": "pipeline.stages",
    "CleanOptions": "folders.settings",
    "CleanRun": "folders.settings",
    "clean_folder": "folders.run",
    "evaluate": "evaluation.evaluate",
}
__all__ = sorted(_EXPORTS)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each of ``exports`` (name ->
    module below the package) when it is first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__


__getattr__ = lazy_exports(__name__, _EXPORTS)
