import gzip
import hashlib
import http.server
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from denoiser.data import arrays, datasets, mnist
from denoiser.data.idx import read_idx
from denoiser.data.mnist import DataError, load_dataset
from tests.helpers import free_port, idx_bytes, write_idx_dataset


def test_read_idx_gz_and_raw_give_the_same_array(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_other_types_big_endian(tmp_path):
    values = np.array([1, -2, 300000], dtype=">i4")
    content = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + values.tobytes()
    (tmp_path / "ints").write_bytes(content)
    np.testing.assert_array_equal(read_idx(tmp_path / "ints"), [1, -2, 300000])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b"\x08\x03" + b[2:], "bad IDX magic"),
        (lambda b: b[:2] + b"\x42" + b[3:], "bad IDX magic"),
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b[:6], "truncated IDX header"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path, mutate, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(mutate(idx_bytes(np.zeros((4, 5, 5), np.uint8))))
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_not_gzip_despite_the_name(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="cannot be read"):
        read_idx(path)


def test_load_dataset_verifies_and_returns_arrays(tmp_path):
    spec = write_idx_dataset(tmp_path, n_train=30, n_test=10)
    splits = load_dataset(tmp_path, dataset=spec, download=False)
    assert splits.train_images.shape == (30, 28, 28)
    assert splits.test_labels.shape == (10,)
    assert splits.train_images.dtype == np.uint8


def test_raw_files_load_too(tmp_path):
    spec = write_idx_dataset(tmp_path, n_train=30, n_test=10, gz=False)
    assert len(load_dataset(tmp_path, dataset=spec, download=False).test_images) == 10


def test_checksum_mismatch_is_named(tmp_path):
    spec = write_idx_dataset(tmp_path, n_train=30, n_test=10)
    wrong = replace(spec, test_labels=replace(spec.test_labels, md5="0" * 32))
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load_dataset(tmp_path, dataset=wrong, download=False)
    assert "t10k-labels-idx1-ubyte" in str(error.value)


def test_the_quick_check_verifies_checksums_by_either_digest(tmp_path):
    spec = write_idx_dataset(tmp_path, n_train=30, n_test=10)
    mnist.verify_dataset(tmp_path, dataset=spec)  # by the content's md5
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    by_gz = replace(spec, test_labels=replace(spec.test_labels, md5=None,
                                              gz_md5=hashlib.md5(gz.read_bytes()).hexdigest()))
    mnist.verify_dataset(tmp_path, dataset=by_gz)  # by the .gz file's md5, nothing decompressed
    gz.write_bytes(gzip.compress(b"not the labels"))
    for dataset in (spec, by_gz):
        with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*checksum mismatch"):
            mnist.verify_dataset(tmp_path, dataset=dataset)


def test_count_mismatch_between_images_and_labels(tmp_path):
    write_idx_dataset(tmp_path, n_train=30, n_test=10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(9, np.uint8)))
    )
    any_layout = datasets.ANY_IDX
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_dataset(tmp_path, dataset=any_layout, download=False)


def test_wrong_shape_for_the_dataset(tmp_path):
    write_idx_dataset(tmp_path, n_train=30, n_test=10)
    with pytest.raises(DataError, match="expected 60000x28x28"):
        load_dataset(tmp_path, dataset=datasets.MNIST, download=False)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(mnist.ENV_DATA_DIR, raising=False)
    assert mnist.resolve_data_dir(None) == Path("data/mnist")
    monkeypatch.setenv(mnist.ENV_DATA_DIR, str(tmp_path))
    assert mnist.resolve_data_dir(None) == tmp_path
    assert mnist.resolve_data_dir("elsewhere") == Path("elsewhere")


# --- downloads against a local HTTP server -------------------------------------------


@pytest.fixture
def mirror(tmp_path):
    """Serve a synthetic dataset's .gz files over HTTP on 127.0.0.1; yield (url, spec)."""
    served = tmp_path / "served"
    spec = write_idx_dataset(served, n_train=40, n_test=12)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", spec, served
    server.shutdown()


def test_download_fetches_verifies_and_loads(tmp_path, mirror):
    url, spec, _ = mirror
    target = tmp_path / "downloaded"
    splits = load_dataset(target, dataset=replace(spec, mirrors=(url,)))
    assert len(splits.train_images) == 40
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{f.name}.gz" for f in spec.files)


def test_download_skips_a_dead_mirror(tmp_path, mirror):
    url, spec, _ = mirror
    dead = f"http://127.0.0.1:{free_port()}/"
    splits = load_dataset(tmp_path / "d", dataset=replace(spec, mirrors=(dead, url)))
    assert len(splits.test_images) == 12


def test_download_with_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    url, spec, served = mirror
    corrupt = served / "t10k-images-idx3-ubyte.gz"
    corrupt.write_bytes(gzip.compress(idx_bytes(np.full((12, 28, 28), 7, np.uint8))))
    target = tmp_path / "downloaded"
    with pytest.raises(DataError, match="checksum mismatch") as error:
        load_dataset(target, dataset=replace(spec, mirrors=(url,)))
    assert url in str(error.value)
    assert not (target / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in target.iterdir() if p.name.startswith(".")], "partial file left"


def test_unreachable_mirror_gives_the_offline_sentence(tmp_path):
    spec = replace(datasets.MNIST, mirrors=(f"http://127.0.0.1:{free_port()}/",))
    target = tmp_path / "mnist"
    with pytest.raises(DataError) as error:
        load_dataset(target, dataset=spec, timeout=2)
    message = str(error.value)
    assert "no mirror could be reached" in message
    assert str(target) in message and "train-images-idx3-ubyte.gz" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert not target.exists() or not list(target.iterdir())


def test_a_dataset_without_mirrors_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist.ENV_MIRRORS, raising=False)
    with pytest.raises(DataError, match="has no download mirror: put train-images-idx3-ubyte.gz"):
        load_dataset(tmp_path, dataset=datasets.ANY_IDX)


# --- the real MNIST files (CI points DENOISER_MNIST_DIR at a local copy) -------------


@pytest.mark.mnist
def test_real_mnist_counts_and_checksums(mnist_dir):
    splits = load_dataset(mnist_dir, dataset=datasets.MNIST, download=False)
    assert splits.train_images.shape == (60000, 28, 28)
    assert splits.test_images.shape == (10000, 28, 28)
    assert splits.train_labels.shape == (60000,) and splits.test_labels.shape == (10000,)
    assert set(np.unique(splits.test_labels)) == set(range(10))
    for spec in datasets.MNIST.files:
        path = mnist_dir / f"{spec.name}.gz"
        with gzip.open(path) as handle:
            assert hashlib.md5(handle.read()).hexdigest() == spec.md5


def test_conversions_follow_the_convention():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = arrays.to_model_input(images)
    assert x.shape == (1, 1, 2, 2) and x.dtype.is_floating_point
    assert float(x.max()) == 1.0 and abs(float(x[0, 0, 1, 0]) - 0.2) < 1e-7
    np.testing.assert_allclose(arrays.from_model_output(x), images / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="expected images of shape"):
        arrays.to_model_input(np.zeros((2, 2), np.uint8))
