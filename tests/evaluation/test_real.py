"""Cleaning judged on labelled real-looking scans without clean copies: the digit reader and
``evaluate --real``'s scores, intervals and sheets."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from denoiser.evaluation import real, recognizer
from tests.helpers import typed

DIGITS = "0123456789"


@pytest.fixture(scope="module")
def reader(typed_reader):
    """A reader trained briefly on typed digits (the product's own trains on MNIST)."""
    return recognizer.load_reader(typed_reader)


def write_scans(folder, n=60, seed=2, layout="labels.json"):
    """Typed digits as scans: dark ink on grey paper with printed lines, 36x36."""
    images, labels = typed(n, DIGITS, seed=seed)
    rng = np.random.default_rng(seed)
    ys = np.mgrid[0:36, 0:36][0]
    found = {}
    for i, (digit, label) in enumerate(zip(images, labels, strict=True)):
        page = np.zeros((36, 36), np.float32)
        page[4:32, 4:32] = digit / 255
        paper = 0.8 - 0.15 * (np.sin(1.3 * ys + i) > 0.7) + 0.03 * rng.standard_normal((36, 36))
        scan = np.clip(paper * (1 - 0.85 * page), 0, 1)
        rel = f"{int(label)}/{i:03d}.png" if layout == "folders" else f"scan-{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(scan * 255).astype(np.uint8)).save(folder / rel)
        found[rel] = int(label)
    if layout == "labels.json":
        (folder / "labels.json").write_text(json.dumps(found))
    return found


def test_the_reader_reads_dark_ink_on_grey_paper_as_it_reads_mnist_light_on_dark(reader):
    images, labels = typed(300, DIGITS, seed=5)
    light_on_dark, _ = reader.read(list(images))
    dark_on_grey, confidence = reader.read([0.85 - 0.6 * im / 255 for im in images])
    assert (light_on_dark == labels).mean() > 0.9
    assert (dark_on_grey == light_on_dark).mean() > 0.95  # the reader's look undoes polarity and contrast
    assert ((confidence > 0) & (confidence <= 1)).all()


@pytest.mark.parametrize("layout", ["labels.json", "folders"])
def test_each_method_is_scored_by_how_often_its_outputs_are_read_right(tmp_path, reader, layout):
    truth = write_scans(tmp_path / "scans", layout=layout)
    found = real.labelled_scans(tmp_path / "scans")
    assert found.paths == sorted(truth) and list(found.labels) == [truth[p] for p in found.paths]
    methods = {"input": list, "median 3x3": real.median3,
               "erased": lambda images: [np.full_like(im, float(np.median(im))) for im in images]}
    summary = real.score_real(found, tmp_path / "out", methods, reader)
    rows = pd.read_parquet(tmp_path / "out" / "real.parquet")
    assert len(rows) == 3 * len(truth) and set(rows["method"]) == set(methods)
    scored = {m["method"]: m for m in summary["methods"]}
    assert scored["input"]["accuracy"] > 0.8 and scored["erased"]["accuracy"] < 0.3
    for m in scored.values():
        assert m["low"] <= m["accuracy"] <= m["high"] and set(m["per_class"]) <= set(DIGITS)
    assert scored["erased"]["gain_high"] < 0 < scored["input"]["gain"] + 1  # paired against the input
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images"] == len(truth)
    for sheet in ("sheet-sample.png", "sheet-changed.png"):
        with Image.open(tmp_path / "out" / sheet) as image:
            assert image.size[0] > 200
    assert "read correctly" in real.format_real(summary)


def test_labels_that_are_not_digits_are_one_line(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": 12}))
    with pytest.raises(ValueError, match="the label of a.png is 12, not a digit"):
        real.check_labels(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no labels.json and no sub-folders"):
        real.check_labels(tmp_path / "empty")
