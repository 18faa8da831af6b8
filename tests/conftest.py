import os
from pathlib import Path

import pytest

from tests.helpers import write_idx_dataset


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
    """A small synthetic dataset in MNIST's layout: 512 training and 64 test images."""
    folder = tmp_path_factory.mktemp("idx")
    spec = write_idx_dataset(folder, n_train=512, n_test=64)
    return folder, spec


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST folder from $DENOISER_MNIST_DIR; tests that need it skip without it."""
    folder = os.environ.get("DENOISER_MNIST_DIR")
    if not folder or not Path(folder).is_dir():
        pytest.skip("real MNIST not available: set DENOISER_MNIST_DIR")
    return Path(folder)


@pytest.fixture(scope="session")
def untrained(tmp_path_factory):
    """A model store holding one checkpoint, 'conv-test': a ConvDAE fresh from seed 0.

    Enough to test everything about folder cleaning except its quality.
    """
    import torch

    from denoiser import checkpoint
    from denoiser.model import ConvDAE

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    return checkpoint.save_checkpoint(folder, "conv-test", ConvDAE(), {"architecture": "conv"})


@pytest.fixture(scope="session")
def store(untrained):
    return untrained.weights.parent
