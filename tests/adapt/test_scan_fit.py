"""Fitting a folder's scanning: the degradation whose scans look like the folder's, and the
pairs with truth it makes."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from denoiser.adapt import scan_fit
from denoiser.models.infer import denoise_images
from tests.helpers import draw_digits

LIT = {"paper": 0.1, "contrast": 0.8, "noise": 0.06, "noise_kind": 0, "blur": 0.0, "jpeg": 0.0, "texture": 0.0,
       "lighting": 0.9, "dust": 0.0}
BLURRED = {**LIT, "lighting": 0.0, "blur": 1.3}


class Threshold(torch.nn.Module):
    """A classical cleaner standing in for the parent: the 3x3 mean, thresholded softly.
    What the fit needs of the parent is where the ink is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 30 * (F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - 0.35)


def digits(n: int, seed: int) -> np.ndarray:
    return draw_digits(n, seed=seed)[0].astype(np.float32) / 255


def folder(params: dict, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    inputs, _ = scan_fit.scan_pairs(params, digits(80, seed), seed, headroom=1.25)
    return inputs, denoise_images(Threshold(), inputs)


def test_the_fit_tells_a_folder_under_uneven_light_from_a_blurred_one():
    fits = {}
    for name, params in (("lit", LIT), ("blurred", BLURRED)):
        inputs, outputs = folder(params, seed=1)
        fits[name] = scan_fit.fit(Threshold(), inputs, outputs, digits(48, seed=2), headroom=1.25, random=40,
                                  refine=30, seed=0)
    lit, blurred = fits["lit"], fits["blurred"]
    assert lit.params["lighting"] > 0.4 > blurred.params["lighting"]
    assert blurred.params["blur"] > 0.6 > lit.params["blur"]
    for found in (lit, blurred):
        assert found.candidates == 70 and np.isfinite(found.distance)
        summary = found.summary()
        assert set(summary["stats"]) == set(scan_fit.STATS) and summary["noise_kind"] in scan_fit.NOISE_KINDS


def test_a_folder_scanned_large_is_fitted_at_its_own_scale():
    """Scans at 3x MNIST's size, shrunk by the cleaner, are softer and their noise averaged:
    the fit scans its candidates at the folder's scale and shrinks them as the folder's were,
    and comes closer to the folder than at MNIST's scale."""
    from denoiser.noise.degrade import degrade
    from denoiser.scans import restore

    noisy_paper = {**LIT, "lighting": 0.0, "noise": 0.3, "scale": 3.0}
    _, scans = degrade(torch.from_numpy(digits(80, 1)), scan_fit.to_degradation(noisy_paper),
                       rng=torch.Generator().manual_seed(1))
    prepared = restore.prepare_many(list(scans.numpy()), headroom=1.25)
    inputs = [x for x, _ in prepared]
    scale = scan_fit.folder_scale([info.shrink for _, info in prepared])
    assert scale == pytest.approx(3.0, rel=0.25)
    outputs = denoise_images(Threshold(), inputs)
    fits = {s: scan_fit.fit(Threshold(), inputs, outputs, digits(48, seed=2), headroom=1.25, random=30, refine=20,
                            seed=0, scale=s) for s in (1.0, scale)}
    assert fits[scale].distance < fits[1.0].distance
    assert fits[scale].summary()["scale"] == pytest.approx(scale, abs=1e-3)
    assert scan_fit.folder_scale(None) == 1.0 and scan_fit.folder_scale([9.0]) == scan_fit.MAX_SCALE


def test_a_folder_without_paper_and_ink_to_measure_cannot_be_fitted():
    blank = [np.zeros((28, 28), np.float32)] * 5
    with pytest.raises(ValueError, match="none of the 5 scans has both paper and ink"):
        scan_fit.fit(Threshold(), blank, blank, digits(8, 0), headroom=1.25, random=2, refine=0)


def test_the_fitted_scanning_makes_pairs_whose_truth_is_flat_paper_and_sharp_ink():
    found = scan_fit.ScanFit(LIT, 0.0, np.zeros(len(scan_fit.STATS)), np.zeros(len(scan_fit.STATS)), 1, 0.0)
    clean = torch.from_numpy(digits(64, 3))[:, None]
    noisy, truth = found.pairs(clean, seed=0, headroom=1.25)
    assert noisy.shape == truth.shape == (64, 1, 28, 28)
    paper = clean < 0.05
    # The light falls across the page on the scan: its paper varies slowly, far more than on
    # a scan with the same noise in even light; the truth's paper is flat.
    even, _ = scan_fit.ScanFit({**LIT, "lighting": 0.0}, *found_rest(found)).pairs(clean, seed=0, headroom=1.25)

    def slow(x: torch.Tensor) -> float:
        return float(F.avg_pool2d(x, 7, 1, 3, count_include_pad=False)[paper].std())

    assert slow(noisy) > 2 * slow(even)
    # Flat: one level per scan (where the cleaner's tone map, measured on the scan, puts the true paper).
    spread = [float(t[p].std()) for t, p in zip(truth, paper, strict=True)]
    assert max(spread) < 0.01
    assert float(truth[clean > 0.95].mean()) > 0.7  # the ink, at the model's ink level


def found_rest(found: scan_fit.ScanFit) -> tuple:
    return found.distance, found.folder, found.fitted, found.candidates, found.seconds


def test_the_pool_scans_a_share_of_each_batch_afresh_and_keeps_the_rest():
    found = scan_fit.ScanFit(BLURRED, 0.0, np.zeros(len(scan_fit.STATS)), np.zeros(len(scan_fit.STATS)), 1, 0.0)
    pool = scan_fit.PairPool(found, torch.from_numpy(digits(40, 4))[:, None], headroom=1.25, seed=0, size=32,
                             fresh=0.25)
    before = pool.noisy.clone()
    rng = torch.Generator().manual_seed(0)
    noisy, truth = pool.batch(torch.from_numpy(digits(16, 5))[:, None], rng)
    assert noisy.shape == truth.shape == (16, 1, 28, 28)
    changed = (pool.noisy != before).flatten(1).any(1)
    assert int(changed.sum()) == 4 and bool(changed[:4].all())  # the four oldest replaced by the fresh scans


@pytest.mark.parametrize("distance, trained_on", [(1e9, True), (0.0, False)])
def test_adapting_trains_on_the_fitted_scanning_only_where_it_describes_the_folder(trained_store, tmp_path,
                                                                                     distance, trained_on):
    from denoiser.adapt import fine_tune, stage
    from denoiser.models import checkpoint

    parent = checkpoint.resolve_checkpoint("unet-tiny", trained_store)
    inputs, _ = folder(LIT, seed=6)
    clean = digits(100, seed=7)
    config = fine_tune.AdaptConfig(minutes=0.05, batch_size=16, gate_images=16, fit_candidates=6,
                                   fit_distance=distance)
    result = fine_tune.adapt(checkpoint.load_model(parent), inputs, clean[:-16], clean[-16:], headroom=1.25,
                             config=config)
    assert result.composite and result.steps > 0 and result.scanning is not None
    assert result.scanning["trained_on"] is trained_on and result.scanning["candidates"] >= 2
    stored = stage.save_adapted(tmp_path, parent, result, folder=str(tmp_path), folder_digest="0" * 64,
                                images=len(inputs), config=config)
    lineage = stored.metadata["adapted"]
    assert lineage["scanning"]["distance"] == result.scanning["distance"]
    assert lineage["trained_on"].startswith("digits scanned" if trained_on else "composites")


class Keeps(torch.nn.Module):
    """Leaves every pixel as it is (logits of the input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x.clamp(1e-4, 1 - 1e-4))


class Flattens(torch.nn.Module):
    """Keeps the ink, puts all paper at one tone (0.3: not the truth's, which the check ignores)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(torch.where(x > 0.6, x, torch.full_like(x, 0.3)).clamp(1e-4, 1 - 1e-4))


def test_the_paper_check_scores_what_is_left_on_the_paper_not_its_tone():
    from denoiser.adapt import gate

    truth = torch.from_numpy(digits(16, 8))[:, None]
    light = torch.linspace(0, 0.4, 28).view(1, 1, 1, 28)  # a gradient across the page, under the ink
    noisy = torch.maximum(truth, light)
    scores = gate.compare(Keeps(), Flattens(), truth, noisy, score=gate.paper_flatness)
    assert scores["adapted_db"] > scores["parent_db"] + 10  # flat paper, whatever its tone, beats a gradient
    # Over the whole image the flat paper's wrong tone costs: the check differs from the PSNR.
    whole = gate.compare(Keeps(), Flattens(), truth, noisy)
    assert whole["adapted_db"] < scores["adapted_db"]


def test_the_verdict_of_a_model_trained_on_the_fitted_scanning_names_both_numbers():
    from denoiser.adapt import decide

    outcome = {"model_id": "unet-adapted", "parent": "unet-parent", "passed": False, "composite": True,
               "parent_db": 22.89, "adapted_db": 24.37, "paper_parent_db": 23.07, "paper_adapted_db": 22.94,
               "scanning": {"distance": 0.09, "trained_on": True}, "shapes": None, "estimate": None}
    chosen, why = decide.gate_verdict(outcome)
    assert chosen == "unet-parent"
    assert "22.89 dB (parent) -> 24.37 dB (adapted) on held-out digits scanned as the folder was fitted" in why
    assert "flatness of the paper" in why and "23.07 -> 22.94 dB, may fall at most 0.1 dB" in why


@pytest.mark.parametrize("fit_white", [True, False])
def test_a_white_folder_is_fitted_too_and_judged_on_its_own_paper(trained_store, fit_white):
    """Faint ink on grey paper under white noise: its white noise alone does not say how the
    tone map shows its ink, the fitted scanning does. Trained on it, the gate also checks the
    folder's held-out paper; without fit_white the white path is as it was."""
    from denoiser.adapt import fine_tune
    from denoiser.models import checkpoint

    parent = checkpoint.resolve_checkpoint("unet-tiny", trained_store)
    faded = {**LIT, "lighting": 0.0, "paper": 0.25, "contrast": 0.4, "noise": 0.3}
    inputs, _ = folder(faded, seed=9)
    clean = digits(100, seed=10)
    config = fine_tune.AdaptConfig(steps=4, batch_size=16, gate_images=16, fit_candidates=6, fit_distance=1e9,
                                   fit_white=fit_white)
    result = fine_tune.adapt(checkpoint.load_model(parent), inputs, clean[:-16], clean[-16:], headroom=1.25,
                             config=config)
    assert not result.composite and result.profile.white  # white noise: no composites
    assert result.blind_spot is not None
    if fit_white:
        assert result.scanning["trained_on"] and {"paper_parent_db", "paper_adapted_db"} <= result.gate.keys()
    else:
        assert result.scanning is None and "paper_parent_db" not in result.gate


def test_white_paper_is_fitted_as_white_and_an_off_component_stays_off():
    """A fitted paper tone of 0 is white paper (it was drawn as 0.12-0.23 grey, the middle of
    the search's range, as if it were an optional component switched off)."""
    spec = scan_fit.to_degradation({**LIT, "paper": 0.0, "lighting": 0.0})
    assert spec.paper == (0.0, 0.0) and spec.p_lighting == 0.0 and spec.p_blur == 0.0
    assert scan_fit.to_degradation(LIT).paper == pytest.approx((0.07, 0.13))
