"""The datasets in MNIST's layout that the product knows: each one's four IDX files, what
they must contain (shape, checksums) and where they are published. Reading, verifying and
downloading them is :mod:`denoiser.data.mnist`'s.

    from denoiser.data.datasets import DATASETS, MNIST
    DATASETS["fashion-mnist"].mirrors
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdxFile:
    """One file of an IDX dataset and what it must contain.

    ``md5`` is the digest of the uncompressed content, ``gz_md5`` that of the published
    ``.gz`` file; either one verifies a file (a re-compressed ``.gz`` only matches ``md5``).
    """

    name: str
    shape: tuple[int | None, ...]  # None: any size along that axis
    md5: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class IdxDataset:
    """A dataset in MNIST's layout: train/test images and labels as four IDX files."""

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


MNIST = IdxDataset(
    name="mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        (60000, 28, 28),
        md5="6bbc9ace898e44ae57da46a324031adb",
        gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        (60000,),
        md5="a25bea736e30d166cdddb491f175f624",
        gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        (10000, 28, 28),
        md5="2646ac647ad5339dbf082846283269ea",
        gz_md5="9fb629c4189551a2d022fa330f9573f3",
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        (10000,),
        md5="27ae3e4e09519cfbb04c329615203637",
        gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte", (60000, 28, 28), gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    ),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte", (60000,), gz_md5="25c81989df183df01b3e8a0aad5dffbe"
    ),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte", (10000, 28, 28), gz_md5="bef4ecab320f06d8554ea6380940ec79"
    ),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte", (10000,), gz_md5="bb300cfdad3c16e7a12a480ee83cd310"
    ),
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
)

# Any other set in MNIST's layout (EMNIST digits renamed to these names, your own scans):
# read through the same reader, checked for layout but not for checksums.
ANY_IDX = IdxDataset(
    name="idx",
    train_images=IdxFile("train-images-idx3-ubyte", (None, None, None)),
    train_labels=IdxFile("train-labels-idx1-ubyte", (None,)),
    test_images=IdxFile("t10k-images-idx3-ubyte", (None, None, None)),
    test_labels=IdxFile("t10k-labels-idx1-ubyte", (None,)),
)

DATASETS = {dataset.name: dataset for dataset in (MNIST, FASHION_MNIST, ANY_IDX)}
