"""The digit-shape model behind the OOD flag for non-digits (letters, symbols)."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from denoiser.checks import quality, shapes
from denoiser.data.arrays import to_float
from denoiser.folders.model_choice import ModelChoice
from denoiser.folders.settings import CleanOptions
from denoiser.models.precision import FP32
from denoiser.scans.batch import clean_batch
from denoiser.training import shapes as shape_training
from tests.helpers import made_once, shared_folder, typed, write_idx_dataset

LETTERS = "ABCDEFGHKMNPQRTUVWXYabdefhkmnpqrtuwy"


@pytest.fixture(scope="session")
def typed_shapes(tmp_path_factory):
    """A shape model trained on 3,000 digits typed in Pillow's font (about 17 seconds alone);
    no letter is ever shown to it. Trained once per test run and shared by the xdist workers
    through a file (a fixture per worker trained it twice per CI run, at 56-81 s each under
    load)."""
    def train(folder):
        images, labels = typed(3000, "0123456789", seed=0)
        model = shape_training.train_shapes(images, labels, epochs=4, held_out=300)
        shapes.save_shapes(model, folder, shapes.shapes_id("typed"))

    found = shapes.find_shapes(made_once(shared_folder(tmp_path_factory), "typed-shapes", train))
    return shapes.load_shapes(found)


def test_framing_puts_any_digit_where_mnist_puts_it():
    digits, _ = typed(8, "0123456789", seed=1)
    framed = shapes.frame(torch.from_numpy(to_float(digits)))
    # The same digits half the size, in a corner of a larger canvas, with a margin.
    small = torch.nn.functional.interpolate(torch.from_numpy(to_float(digits))[:, None], size=(14, 14),
                                            mode="area")[:, 0]
    canvas = torch.zeros(8, 40, 33)
    canvas[:, 3:17, 2:16] = small
    reframed = shapes.frame(canvas)
    assert reframed.shape == (8, 28, 28)
    # The same framing, up to what halving the size lost: closer than a 2-pixel shift would be.
    assert float((reframed - framed).abs().mean()) < 0.6 * float((framed.roll(2, dims=2) - framed).abs().mean())
    for mine, original in zip(reframed, framed, strict=True):
        assert np.corrcoef(mine.flatten(), original.flatten())[0, 1] > 0.8
    ink_rows = torch.nonzero(framed[0].amax(dim=1) > 0.3).flatten()
    assert 18 <= int(ink_rows[-1] - ink_rows[0]) + 1 <= 21  # the ink's box is 20 high or wide
    assert float(shapes.frame(torch.zeros(2, 30, 30)).abs().max()) == 0.0  # blank stays blank


def test_letters_score_above_digits_it_never_saw(typed_shapes):
    digits = to_float(typed(300, "0123456789", seed=7)[0])
    letters = to_float(typed(300, LETTERS, seed=8)[0])
    digit_scores, letter_scores = typed_shapes.scores(digits), typed_shapes.scores(letters)
    assert np.mean(letter_scores[:, None] > digit_scores[None, :]) >= 0.75  # 0.83 measured
    # With the threshold set on other unseen digits, as clean sets it for its model (an
    # identity "cleaner" leaves real-looking scans uncleaned: they say nothing here):
    threshold = shape_training.calibrate(typed_shapes, Identity(), 1.0, typed(300, "0123456789", seed=12)[0],
                                         noise_levels=(0.0,), real_looking=False)
    assert np.mean(digit_scores > threshold) <= 0.08  # 0.03 measured
    assert np.mean(letter_scores > threshold) >= 0.4  # 0.56 measured
    assert typed_shapes.metadata["quantile"] == shapes.QUANTILE


def test_pages_are_not_judged_by_shape(typed_shapes):
    page = np.zeros((shapes.MAX_SIDE + 1, 40), np.float32)
    scores = typed_shapes.scores([page, to_float(typed(1, "7", seed=2)[0][0])])
    assert np.isnan(scores[0]) and np.isfinite(scores[1])
    assert not typed_shapes.unlike([page])[0]


def test_the_non_digits_it_learns_from_leave_out_what_is_still_a_digit():
    g = torch.Generator().manual_seed(0)
    digits = torch.from_numpy(to_float(typed(200, "0123456789", seed=9)[0]))
    labels = torch.arange(200) % 10
    made = shape_training.non_digits(digits, labels, g)
    assert 100 <= len(made) <= 200 and made.shape[1:] == (28, 28)
    assert all(not torch.equal(m, d) for m in made[:50] for d in digits)  # none is a digit as it was
    strokes = shape_training.pen_strokes(20, g)
    assert float(strokes.amax()) == pytest.approx(1.0, abs=0.05) and (strokes > 0.5).float().mean() < 0.3


def test_the_stored_model_round_trips_and_a_bad_file_is_named(typed_shapes, tmp_path):
    assert shapes.find_shapes(tmp_path) is None
    weights = shapes.save_shapes(typed_shapes, tmp_path, shapes.shapes_id("ab" * 20))
    assert shapes.find_shapes(tmp_path) == weights
    loaded = shapes.load_shapes(weights)
    letters = to_float(typed(20, LETTERS, seed=3)[0])
    np.testing.assert_allclose(loaded.scores(letters), typed_shapes.scores(letters), rtol=1e-5)
    assert loaded.threshold == pytest.approx(typed_shapes.threshold)
    weights.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match=f"{weights}: not a digit-shape model"):
        shapes.load_shapes(weights)


class Identity(torch.nn.Module):
    """A "denoiser" for clean inputs: logits whose sigmoid is the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x.clamp(1e-4, 1 - 1e-4))


def test_clean_batch_flags_a_letter_by_its_shape_and_passes_a_digit(typed_shapes):
    letters = to_float(typed(40, LETTERS, seed=4)[0])
    digits = to_float(typed(40, "0123456789", seed=5)[0])
    letter = letters[np.argmax(typed_shapes.scores(letters))]  # one it surely flags
    digit = digits[np.argmin(typed_shapes.scores(digits))]
    with_shapes = clean_batch(Identity(), [letter, digit], headroom=1.0, shape_model=typed_shapes)
    assert with_shapes[0].fields["ood"] and with_shapes[0].fields["ood_reason"].startswith("not a digit's shape")
    assert not with_shapes[1].fields["ood"]
    without = clean_batch(Identity(), [letter, digit], headroom=1.0)
    assert not without[0].fields["ood"]  # no shape model: the letter's tones are a digit's
    score = float(typed_shapes.scores([letter])[0])
    assert quality.ood_reason(letter, 0.1, score, typed_shapes.threshold).startswith("not a digit's shape")
    assert quality.ood_reason(letter, 0.1) is None


def test_a_cleaning_run_flags_by_shape_only_digit_sized_scans(typed_shapes, trained_store, tmp_path):
    from PIL import Image

    from denoiser.folders import plan, report, shard
    from denoiser.models import checkpoint

    (tmp_path / "in").mkdir()
    digits = typed(3, "0123456789", seed=6)[0]
    for i, digit in enumerate(digits):
        Image.fromarray(255 - digit).save(tmp_path / "in" / f"digit-{i}.png")  # dark ink on white
    page = np.full((120, 120), 255, np.uint8)
    page[30:58, 40:68] = 255 - digits[0]
    Image.fromarray(page).save(tmp_path / "in" / "page.png")
    strict_net = shapes.ShapeNet()
    strict_net.load_state_dict(typed_shapes.net.state_dict())
    strict_net.threshold.fill_(-1.0)  # every judged scan is unlike a digit
    weights = shapes.save_shapes(shapes.ShapeModel(strict_net, typed_shapes.metadata), tmp_path / "m", f"digit-shapes-v{shapes.VERSION}-x")
    model = checkpoint.find_checkpoint(trained_store, "unet-tiny")

    def reasons(out: str, shapes: str | None = None) -> dict[str, str | None]:
        entries = plan.plan(tmp_path / "in", tmp_path / out)
        choice = replace(ModelChoice.of(model), shapes=shapes)
        rows = shard.clean_shard(entries, in_dir=tmp_path / "in", out_dir=tmp_path / out, model=choice,
                                 run_id="r", options=CleanOptions())
        frame = report.report_frame(rows)
        assert (frame["status"] == "ok").all()
        return dict(zip(frame["path"], frame["ood_reason"], strict=True))

    without, strict = reasons("plain"), reasons("strict", shapes=str(weights))
    assert "shape" not in str(strict["page.png"])  # a page is not judged by its shape
    digit_sized = [name for name in without if name != "page.png"]
    assert all(pd.isna(without[name]) for name in digit_sized)
    assert all(strict[name].startswith("not a digit's shape") for name in digit_sized)


def test_a_threshold_calibrated_for_a_cleaning_model_is_kept_and_used(typed_shapes, tmp_path):
    digits = typed(200, "0123456789", seed=11)[0]
    threshold = shape_training.calibrate(typed_shapes, Identity(), 1.0, digits, noise_levels=(0.0, 0.1))
    # At most the quantile's share of those outputs score above it: they are what it was set on.
    from denoiser.models.infer import denoise_images
    from denoiser.scans.restore import prepare_many

    outputs = denoise_images(Identity(), [m for m, _ in prepare_many(list(to_float(digits)), headroom=1.0)])
    assert np.mean(typed_shapes.scores(outputs) > threshold) <= 1 - shapes.QUANTILE + 0.02
    weights = shapes.save_shapes(typed_shapes, tmp_path, f"digit-shapes-v{shapes.VERSION}-y")
    assert shapes.load_shapes(weights).calibrated_for("unet-abc") is None
    shapes.record_calibration(weights, "unet-abc", threshold)
    loaded = shapes.load_shapes(weights)
    assert loaded.calibrated_for("unet-abc") == pytest.approx(threshold)
    assert loaded.for_model("unet-abc").threshold == pytest.approx(threshold)
    assert loaded.for_model("unet-other").threshold == pytest.approx(typed_shapes.threshold)
    # A threshold set while scans were judged another way (kept under the bare id) is not used.
    metadata = json.loads(weights.with_suffix(".json").read_text())
    metadata["calibrated"] = {"unet-abc": threshold}
    weights.with_suffix(".json").write_text(json.dumps(metadata))
    assert shapes.load_shapes(weights).calibrated_for("unet-abc") is None


def test_ensure_shapes_trains_once_and_calibrates_for_each_cleaning_model(tmp_path, untrained):
    from denoiser.data.datasets import ANY_IDX

    write_idx_dataset(tmp_path / "idx", n_train=300, n_test=20)
    store = tmp_path / "models"
    first = shape_training.ensure_shapes(store, tmp_path / "idx", dataset=ANY_IDX, cleaner=untrained)
    assert shapes.load_shapes(first).calibrated_for(untrained.model_id) is not None
    mtime = first.stat().st_mtime_ns
    again = shape_training.ensure_shapes(store, tmp_path / "idx", dataset=ANY_IDX, cleaner=untrained)
    assert again == first and first.stat().st_mtime_ns == mtime  # not trained again


def test_a_model_adapted_to_a_folder_flags_at_its_parent_s_threshold(tmp_path, untrained):
    """Its own calibration would be measured on noisy MNIST digits, which are not its folder's
    kind: it takes its parent's, with no MNIST at hand, and a model of no parent is calibrated."""
    from denoiser.data.datasets import ANY_IDX
    from denoiser.models import checkpoint
    from denoiser.models.networks import ConvDAE

    write_idx_dataset(tmp_path / "idx", n_train=300, n_test=20)
    store = tmp_path / "models"
    weights = shape_training.ensure_shapes(store, tmp_path / "idx", dataset=ANY_IDX, cleaner=untrained)
    shapes.record_calibration(weights, untrained.model_id, 0.4321)  # the parent's, told apart from any measured
    adapted = checkpoint.save_checkpoint(store, "conv-adapted", ConvDAE(),
                                         {"architecture": "conv", "adapted": {"parent": untrained.model_id}})
    missing = tmp_path / "no-mnist-here"
    assert shape_training.ensure_shapes(store, missing, dataset=ANY_IDX, cleaner=adapted, download=False) == weights
    loaded = shapes.load_shapes(weights)
    assert loaded.calibrated_for("conv-adapted") == pytest.approx(0.4321)
    assert loaded.for_model("conv-adapted").threshold == pytest.approx(0.4321)
    # Cleaning with an adapted model the store never calibrated for (clean --adapt's choice): the parent's.
    assert loaded.for_model("conv-adapted-again", parent=untrained.model_id).threshold == pytest.approx(0.4321)
    assert loaded.for_model("conv-adapted-again").threshold == pytest.approx(loaded.threshold)
    orphan = checkpoint.save_checkpoint(store, "conv-orphan", ConvDAE(),
                                        {"architecture": "conv", "adapted": {"parent": "unet-gone"}})
    shape_training.ensure_shapes(store, tmp_path / "idx", dataset=ANY_IDX, cleaner=orphan)
    assert shapes.load_shapes(weights).calibrated_for("conv-orphan") not in (None, pytest.approx(0.4321))


def test_a_neighbours_piece_at_the_edge_is_left_out_of_the_shape(typed_shapes):
    digits, labels = typed(40, "0123456789", seed=7)
    alone = to_float(digits)
    canvas = np.zeros((40, 40, 40), np.float32)
    canvas[:, 6:34, 6:34] = alone
    canvas[:, 8:30, 0:3] = 1.0  # a neighbour's stroke at the left edge, apart from the digit
    _, read_alone, _ = typed_shapes.read(list(alone))
    _, read_beside, _ = typed_shapes.read(list(canvas))
    assert (read_beside == read_alone).mean() > 0.9


def test_a_neighbours_piece_touching_the_digit_still_leaves_a_digit(typed_shapes, monkeypatch):
    """Crops of written amounts: the right side of the digit before touches this one's first
    stroke, so no gap separates them. Judged also without either edge, the scan reads as
    its digit and is not flagged; judged whole, it was neither."""
    digits, _ = typed(60, "0123456789", seed=9)
    alone, piece = to_float(digits), 7
    before = np.roll(alone, 1, axis=0)
    canvas = np.zeros((60, 28, 36), np.float32)  # the piece is under a fifth of the width
    for image, digit, other in zip(canvas, alone, before, strict=True):
        last = np.flatnonzero(other.max(axis=0) > 0.3)[-1]
        image[:, :piece] = other[:, last + 1 - piece : last + 1]
        start = piece - 1 - np.flatnonzero(digit.max(axis=0) > 0.3)[0]  # its first ink on the piece's last
        lo, skip = max(0, start), max(0, -start)
        image[:, lo : lo + 28 - skip] = np.maximum(image[:, lo : lo + 28 - skip], digit[:, skip : skip + 36 - lo])
    _, read_alone, _ = typed_shapes.read(list(alone))
    score_beside, read_beside, _ = typed_shapes.read(list(canvas))
    monkeypatch.setattr(shapes, "WINDOWS", ((0.0, 1.0),))  # judged whole only, as before
    score_whole, read_whole, _ = typed_shapes.read(list(canvas))
    assert (read_beside == read_alone).mean() > 0.9 > 0.5 > (read_whole == read_alone).mean()
    assert np.mean(score_beside > typed_shapes.threshold) < 0.1 < 0.5 < np.mean(score_whole > typed_shapes.threshold)


def test_an_output_that_reads_as_another_digit_than_its_scan_is_flagged(typed_shapes):
    from denoiser.scans.batch import IDENTITY_P, _readings

    digits, labels = typed(200, "0123456789", seed=8)
    scans = list(to_float(digits))
    turned = [scans[i] for i in np.roll(np.arange(len(scans)), 1)]  # each output another scan's digit
    kept = _readings(typed_shapes, scans, scans, FP32)
    swapped = _readings(typed_shapes, scans, turned, FP32)
    assert not kept["identity_changed"].any()
    differ = labels != np.roll(labels, 1)
    # Flagged where both readings are sure (a small test model is sure of about a third).
    sure = (kept["digit_p"] >= IDENTITY_P) & (np.roll(kept["digit_p"], 1) >= IDENTITY_P) & \
        (kept["digit"] == labels) & (np.roll(kept["digit"], 1) == np.roll(labels, 1))
    assert (sure & differ).sum() >= 10
    assert swapped["identity_changed"][sure & differ].all()
    assert not swapped["identity_changed"][~differ].any()
    assert ((kept["digit"] == labels) | (kept["digit_p"] < 0.9)).mean() > 0.9
