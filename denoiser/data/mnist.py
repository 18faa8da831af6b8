"""MNIST-layout IDX data: reading, verifying and downloading (the datasets known, with
their checksums and mirrors, are in :mod:`denoiser.data.datasets`; the array conventions in
:mod:`denoiser.data.arrays`).

The data folder is, in order: the ``data_dir`` argument, the ``DENOISER_MNIST_DIR``
environment variable, ``data/mnist`` under the current folder. Each of the four files may be
gzipped (``name.gz``) or raw (``name``). When they are missing they are downloaded from the
dataset's mirrors, verified, and written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denoiser.data.datasets import MNIST, IdxDataset, IdxFile
from denoiser.data.idx import DataError, is_gzip, parse_idx, read_content
from denoiser.files import atomic_path

log = logging.getLogger(__name__)

ENV_DATA_DIR = "DENOISER_MNIST_DIR"
ENV_MIRRORS = "DENOISER_MNIST_MIRRORS"  # comma-separated base URLs, tried before the built-in ones
DEFAULT_DATA_DIR = Path("data") / "mnist"


@dataclass(frozen=True)
class MnistSplits:
    """The four arrays of a dataset."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


# --- the dataset's files ----------------------------------------------------------


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _verify(path: Path, content: bytes, spec: IdxFile) -> None:
    if spec.md5 is not None and _md5(content) == spec.md5:
        return
    compressed = is_gzip(path)
    if spec.gz_md5 is not None and compressed and _md5(path.read_bytes()) == spec.gz_md5:
        return
    if spec.md5 is None and spec.gz_md5 is None:
        return
    if spec.md5 is None and not compressed:
        log.warning("%s: no checksum is known for the uncompressed file; not verified", path)
        return
    raise DataError(
        f"{path}: checksum mismatch: md5 of the content is {_md5(content)}, expected "
        f"{spec.md5 or spec.gz_md5 + ' (of the .gz file)'}; the file is corrupt or not "
        f"{spec.name}"
    )


def load_file(path: Path, spec: IdxFile) -> np.ndarray:
    """Read, verify the checksum, and check the shape of one dataset file."""
    content = read_content(path)
    array = parse_idx(content, source=str(path))
    if len(array.shape) != len(spec.shape) or any(
        want is not None and got != want for got, want in zip(array.shape, spec.shape, strict=True)
    ):
        raise DataError(
            f"{path}: holds {'x'.join(map(str, array.shape))}, expected "
            f"{'x'.join('N' if d is None else str(d) for d in spec.shape)} for {spec.name}"
        )
    _verify(path, content, spec)
    return array


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the IDX files: argument, then $DENOISER_MNIST_DIR, then data/mnist."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR])
    return DEFAULT_DATA_DIR


def mirrors_for(dataset: IdxDataset) -> tuple[str, ...]:
    """$DENOISER_MNIST_MIRRORS (comma-separated), else the dataset's public mirrors."""
    extra = [url.strip() for url in os.environ.get(ENV_MIRRORS, "").split(",") if url.strip()]
    return tuple(extra) or dataset.mirrors


def locate_dataset(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    dataset: IdxDataset = MNIST,
    download: bool = True,
    timeout: float = 30.0,
) -> list[Path]:
    """The paths of ``dataset``'s four files, downloading the missing ones first."""
    folder = resolve_data_dir(data_dir)
    missing = [spec for spec in dataset.files if _find(folder, spec.name) is None]
    if missing and download and not mirrors_for(dataset):
        raise DataError(_missing_message(dataset, folder, "and this dataset has no download mirror"))
    if missing and download:
        try:
            for spec in missing:
                download_file(spec, folder, mirrors=mirrors_for(dataset), timeout=timeout)
        except Unreachable as error:
            log.debug("download failed: %s", error)
            raise DataError(
                _missing_message(dataset, folder, "and no mirror could be reached (offline?)")
            ) from None
    elif missing:
        raise DataError(_missing_message(dataset, folder, "and downloading is off"))
    return [_find(folder, spec.name) for spec in dataset.files]  # type: ignore[misc]


def verify_dataset(data_dir: str | os.PathLike[str] | None = None, *, dataset: IdxDataset = MNIST) -> None:
    """Find (downloading if needed) and checksum ``dataset``'s files without parsing them:
    the check a command makes before it starts, so that bad data ends in one line. A file
    whose compressed checksum is unknown or differs is decompressed to check its content."""
    for path, spec in zip(locate_dataset(data_dir, dataset=dataset), dataset.files, strict=True):
        if not (spec.gz_md5 and is_gzip(path) and _md5(path.read_bytes()) == spec.gz_md5):
            _verify(path, read_content(path), spec)


def load_dataset(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    dataset: IdxDataset = MNIST,
    download: bool = True,
    timeout: float = 30.0,
) -> MnistSplits:
    """Load (downloading first if needed) and verify the four files of ``dataset``."""
    paths = locate_dataset(data_dir, dataset=dataset, download=download, timeout=timeout)
    arrays = [load_file(path, spec) for path, spec in zip(paths, dataset.files, strict=True)]
    train_images, train_labels, test_images, test_labels = arrays
    for images, labels, split in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if len(images) != len(labels):
            raise DataError(
                f"{paths[0].parent}: {split} has {len(images)} images but {len(labels)} labels"
            )
    return MnistSplits(train_images, train_labels, test_images, test_labels)


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes: identifies training data in model ids."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# --- downloading --------------------------------------------------------------------


def _missing_message(dataset: IdxDataset, folder: Path, why: str) -> str:
    names = ", ".join(f"{spec.name}.gz" for spec in dataset.files)
    return (
        f"{dataset.name} files are not in {folder} {why}: put {names} there, "
        f"or point --data-dir or ${ENV_DATA_DIR} at a folder that has them."
    )


class Unreachable(DataError):
    """No mirror answered at all: most likely this machine is offline."""


def download_file(
    spec: IdxFile, folder: Path, *, mirrors: tuple[str, ...], timeout: float = 30.0
) -> Path:
    """Fetch ``spec.name + '.gz'`` from the first mirror that serves a verified copy.

    The file appears in ``folder`` only once it is complete and its checksum matches;
    a failed or corrupt download leaves nothing behind.
    """
    destination = folder / f"{spec.name}.gz"
    problems: list[str] = []
    reached_any = False
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + destination.name
        log.info("downloading %s", url)
        try:
            with atomic_path(destination) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    reached_any = True
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(response, out)
                load_file(tmp, spec)
            return destination
        except urllib.error.HTTPError as error:
            reached_any = True
            problems.append(f"{url}: HTTP {error.code}")
        except (urllib.error.URLError, OSError) as error:
            problems.append(f"{url}: {getattr(error, 'reason', error)}")
        except DataError as error:
            problems.append(str(error).replace(str(tmp), url))
    if not reached_any:
        raise Unreachable("; ".join(problems) or "no mirrors are known")
    raise DataError(f"could not download a valid {destination.name}: " + "; ".join(problems))
