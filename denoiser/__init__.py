"""denoiser: a convolutional denoising autoencoder for digit images, as a plain library.

Stages (see :mod:`denoiser.stages`): ingest -> noise -> train or load -> denoise -> report.
This package never imports Prefect; the flows in ``flows/`` wrap it.
"""

__version__ = "0.1.0"
