import os
import tempfile
from pathlib import Path

# Under pytest-xdist every worker would otherwise run torch with a thread per core, so two
# workers on two cores ran four busy threads: a run of the shape and quality tests took
# 77 or 165 s where one thread each took 69 and 74 s (Intel Xeon VM, 2 cores, 2026-11-30).
# The cores are shared out before torch is imported; subprocesses (the CLI tests) inherit it.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

# Prefect's home for this test process (CI sets one for the whole run), before Prefect loads.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402

from tests import helpers
from tests.helpers import made_once, shared_folder, typed, write_idx_dataset


@pytest.fixture(autouse=True, scope="session")
def _shared_by_the_workers(tmp_path_factory):
    """Where the helpers keep what every worker of this run may reuse (tests.helpers.SHARED)."""
    helpers.SHARED = shared_folder(tmp_path_factory)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server per test process (it costs ~10 s to start): its API URL. The
    flow tests report to it; the benchmark's smoke test runs its folder pipeline on it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def typed_reader(tmp_path_factory):
    """A digit reader trained briefly on 3,000 typed digits (the product's own trains on MNIST),
    stored as ``evaluate --real`` finds it in a store: its weights file. Trained once per run."""
    from denoiser.evaluation import recognizer
    from denoiser.models.checkpoint import save_weights

    def train(folder):
        images, labels = typed(3000, "0123456789", seed=1)
        save_weights(recognizer.train_reader(images, labels, epochs=2), recognizer.reader_path(folder),
                     {"version": recognizer.VERSION, "trained_on": "typed digits"})

    return recognizer.reader_path(made_once(shared_folder(tmp_path_factory), "typed-reader", train))


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

    from denoiser.models import checkpoint
    from denoiser.models.networks import ConvDAE

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    return checkpoint.save_checkpoint(folder, "conv-test", ConvDAE(), {"architecture": "conv"})


@pytest.fixture(scope="session")
def store(untrained):
    """The store of ``untrained``, with 'conv-test' promoted as the default for clean."""
    from denoiser.models import registry

    registry.promote(untrained.weights.parent, "conv-test", "clean", score=lambda _: 0.0)
    return untrained.weights.parent


@pytest.fixture(scope="session")
def trained_store(idx_dir, tmp_path_factory):
    """A U-Net trained for a few epochs on the synthetic training digits."""
    import torch

    from denoiser.data.datasets import ANY_IDX
    from denoiser.data.mnist import load_dataset
    from denoiser.models import checkpoint
    from denoiser.models.recipe import TrainConfig
    from denoiser.training.loop import train

    folder, _ = idx_dir
    data = load_dataset(folder, dataset=ANY_IDX)
    config = TrainConfig.recipe("unet", epochs=4, batch_size=16, seed=1)
    model = train(data.train_images, config, device=torch.device("cpu"), show_progress=False).model
    store = tmp_path_factory.mktemp("eval-models")
    checkpoint.save_checkpoint(store, "unet-tiny", model,
                               {"architecture": "unet", "config": config.to_dict()})
    return store


@pytest.fixture
def two_models(trained_store, tmp_path):
    """A store with the tiny trained U-Net and an untrained conv DAE (newer)."""
    import shutil

    import torch

    from denoiser.models import checkpoint
    from denoiser.models.networks import ConvDAE

    store = tmp_path / "models"
    shutil.copytree(trained_store, store)
    torch.manual_seed(0)
    checkpoint.save_checkpoint(store, "conv-untrained", ConvDAE(), {"architecture": "conv"})
    return store
