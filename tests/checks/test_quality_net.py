"""The learned PSNR estimate (denoiser.checks.quality_net): trained on a cleaning model's own outputs,
kept per cleaning model, and used by clean_batch for digit-sized scans only."""

import json
import math

import numpy as np
import pytest
import torch

from denoiser.checks import quality_net
from denoiser.metrics import psnr
from denoiser.models import checkpoint
from denoiser.models.infer import denoise_images
from denoiser.scans import restore
from denoiser.scans.batch import clean_batch
from denoiser.training import quality
from tests.helpers import digit_scan, draw_digits


@pytest.fixture(scope="module")
def cleaner(untrained):
    return checkpoint.load_model(untrained), restore.model_headroom(untrained.metadata)


@pytest.fixture(scope="module")
def estimator(cleaner):
    """An estimator trained on 750 degraded digits for 3 epochs, with variants of a few steps (seconds)."""
    digits = draw_digits(300, seed=3)[0]
    return quality.train_quality(cleaner[0], cleaner[1], digits, samples=750, epochs=3, variant_steps=3)


def test_training_examples_carry_the_true_psnr_of_clean_s_own_outputs(cleaner):
    model, headroom = cleaner
    digits = draw_digits(60, seed=4)[0]
    rows = quality.collect(model, headroom, digits, 250, seed=1)
    # The same draw, cleaned here: each example's target is its output's true PSNR in the model's look.
    rng, generator = np.random.default_rng(1), torch.Generator().manual_seed(1)
    truth, noisy = quality.training_scans(digits[rng.integers(0, len(digits), quality.BATCH)], rng,
                                              generator)
    recorder = quality.Recorder()
    results = clean_batch(model, list(noisy), headroom=headroom, quality_model=recorder)
    outputs, contrasts = recorder.seen[0][1], recorder.seen[0][4]
    kept = [k for k in range(len(results)) if max(outputs[k].shape) <= quality_net.MAX_SIDE]
    assert kept and len(rows) == len(kept)  # scans over 56 px in the model's look are left out
    expected = [min(quality_net.MAX_DB, float(psnr(truth[k][None], results[k].pixels[None])[0])
                    + 20 * math.log10(abs(contrasts[k]))) for k in kept]
    np.testing.assert_allclose([r["target"] for r in rows], expected, rtol=1e-6)


def test_the_mix_draws_light_and_heavy_harm():
    digits = draw_digits(20, seed=6)[0]
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    gaps = []
    for _ in range(30):
        truth, noisy = quality.training_scans(digits, rng, generator)
        gaps.append(float(np.abs(noisy - truth).mean()))
    assert min(gaps) < 0.05 < max(gaps)  # light and heavy harm both drawn


def test_a_variant_is_a_copy_fine_tuned_on_its_kind_of_harm_alone(cleaner):
    model, headroom = cleaner
    before = [p.detach().clone() for p in model.parameters()]
    digits = draw_digits(200, seed=7)[0]
    dusty = quality.variant(model, headroom, digits, "p_dust", steps=25, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the cleaner is kept
    assert not dusty.training
    # On fresh scans with dust alone, the variant's outputs are nearer the truth than the cleaner's.
    rng, generator = np.random.default_rng(9), torch.Generator().manual_seed(9)
    truth, noisy = quality.training_scans(digits[:100], rng, generator, alone="p_dust")
    inputs, targets = restore.in_model_look(list(truth), list(noisy), headroom, rescale=False)
    x, t = torch.from_numpy(np.stack(inputs))[:, None], torch.from_numpy(np.stack(targets))[:, None]
    with torch.no_grad():
        errors = {name: float(((torch.sigmoid(m(x)) - t) ** 2).mean()) for name, m in (("cleaner", model),
                                                                                      ("variant", dusty))}
    assert errors["variant"] < errors["cleaner"]


class Eraser(torch.nn.Module):
    """A 'cleaner' that leaves only paper: every stroke gone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, -12.0)


def test_the_estimate_learns_the_outputs_of_variants_too(cleaner):
    """Some collected batches are cleaned by a variant instead of the cleaner (here one that
    erases every stroke), with their true PSNR: the estimate learns what other models leave."""
    model, headroom = cleaner
    digits = draw_digits(60, seed=4)[0]
    rows = quality.collect(model, headroom, digits, 10 * quality.BATCH, seed=2, variants={"p_dust": Eraser()})
    erased = [r for r in rows if r["output"].max() < 1e-3]
    assert 0 < len(erased) < len(rows)  # both the cleaner's outputs and the variant's
    assert all(r["recheck"].max() < 1e-3 for r in erased)  # its check pass is the variant's too
    assert all(np.isfinite(r["target"]) for r in erased)


def test_the_estimate_is_learnt_and_kept_per_cleaning_model(estimator, cleaner, untrained, tmp_path):
    model, headroom = cleaner
    digits = draw_digits(40, seed=5)[0]
    rng, generator = np.random.default_rng(2), torch.Generator().manual_seed(2)
    truth, noisy = quality.training_scans(digits, rng, generator)
    recorder = quality.Recorder()
    results = clean_batch(model, list(noisy), headroom=headroom, quality_model=recorder)
    estimated = estimator.look_db(*recorder.seen[0])
    small = [k for k, r in enumerate(results) if max(recorder.seen[0][1][k].shape) <= quality_net.MAX_SIDE]
    assert small and np.isfinite(estimated[small]).all()
    # Kept in the store under the cleaning model's id; loaded back, it gives the same answers.
    weights = quality_net.save_quality(estimator, tmp_path, untrained.model_id)
    assert weights == quality_net.quality_path(tmp_path, untrained.model_id)
    assert quality_net.find_quality(tmp_path, untrained.model_id) == weights
    assert quality_net.find_quality(tmp_path, "unet-other") is None
    np.testing.assert_allclose(quality_net.load_quality(weights).look_db(*recorder.seen[0]), estimated, rtol=1e-5)
    # An estimator of another version is not used.
    meta = weights.with_suffix(".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": quality_net.VERSION + 1}))
    assert quality_net.find_quality(tmp_path, untrained.model_id) is None
    # What is not an estimator this tool wrote is one clear error.
    weights.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="not a quality estimator this tool wrote"):
        quality_net.load_quality(weights)


def test_clean_batch_reports_the_learned_estimate_for_digits_and_the_analytic_one_for_pages(estimator, cleaner):
    model, headroom = cleaner
    digit = digit_scan((28, 28), seed=1)[1]
    page = np.tile(digit_scan((28, 28), seed=2)[1], (4, 4))  # a page of digits: 112 px, not shrunk
    with_it = clean_batch(model, [digit, page], headroom=headroom, quality_model=estimator)
    without = clean_batch(model, [digit, page], headroom=headroom)
    recorder = quality.Recorder()
    clean_batch(model, [digit, page], headroom=headroom, quality_model=recorder)
    mapped, outputs, rechecks, sigmas, contrasts = recorder.seen[0]
    learned = estimator.look_db(mapped, outputs, rechecks, sigmas, contrasts)
    assert math.isnan(learned[1])  # a page is not judged by it
    expected = min(quality_net.MAX_DB, learned[0] - 20 * math.log10(abs(contrasts[0])))
    assert with_it[0].fields["psnr_est"] == pytest.approx(expected, abs=1e-4)
    assert with_it[1].fields["psnr_est"] == pytest.approx(without[1].fields["psnr_est"], abs=1e-6)
    np.testing.assert_array_equal(with_it[0].pixels, without[0].pixels)  # the outputs do not change


@pytest.mark.mnist
@pytest.mark.slow
def test_on_real_digits_the_learned_estimate_tracks_the_truth_better(mnist_dir, untrained):
    """Trained briefly on MNIST for the untrained tutorial model, the learned estimate is
    closer to the true PSNR of unseen test digits' outputs than the analytic one."""
    from denoiser.data.mnist import load_dataset
    from denoiser.evaluation import scanset

    mnist = load_dataset(mnist_dir)
    model, headroom = checkpoint.load_model(untrained), restore.model_headroom(untrained.metadata)
    fitted = quality.train_quality(model, headroom, mnist.train_images[:5000], samples=1500, epochs=3,
                                   variant_steps=20)
    errors = {"learned": [], "analytic": []}
    for kind in ("scanner", "dust"):
        truth, noisy = scanset.render(mnist.test_images[:100], kind, seed=0)
        for name, estimator in (("learned", fitted), ("analytic", None)):
            results = clean_batch(model, list(noisy), headroom=headroom, quality_model=estimator)
            true = np.array([float(psnr(t[None], r.pixels[None])[0]) for t, r in zip(truth, results, strict=True)])
            errors[name].append(np.abs(np.array([r.fields["psnr_est"] for r in results]) - true).mean())
    assert np.mean(errors["learned"]) < np.mean(errors["analytic"])




def test_the_adaptation_gate_refuses_a_model_whose_outputs_the_estimate_rates_worse(estimator, cleaner):
    from denoiser.adapt.gate import ESTIMATE_MARGIN, estimate_check

    model, headroom = cleaner
    digits = draw_digits(40, seed=8)[0]
    rng, generator = np.random.default_rng(3), torch.Generator().manual_seed(3)
    clean, noisy = quality.training_scans(digits, rng, generator)
    prepared = [restore.prepare(np.asarray(y, np.float32), headroom=headroom) for y in noisy]
    inputs, contrasts = [p[0] for p in prepared], [p[1].ink - p[1].paper for p in prepared]
    same = estimate_check(model, model, inputs, contrasts, estimator)
    assert same["passed"] and same["parent_db"] == same["adapted_db"] and same["judged"] > 0
    # The untrained cleaner's outputs are further from the truth than bare paper: the estimate
    # says so, and the check passes the eraser in its place and refuses the other way round.
    truth = [restore.prepare(np.asarray(t, np.float32), headroom=headroom)[0] for t in clean]
    true_db = {name: float(np.mean([psnr(t[None], o[None])[0] for t, o in zip(truth, outs, strict=True)]))
               for name, outs in (("cleaner", denoise_images(model, inputs)), ("eraser", denoise_images(Eraser(), inputs)))}
    assert true_db["eraser"] > true_db["cleaner"]
    erasing = estimate_check(model, Eraser(), inputs, contrasts, estimator)
    assert erasing["adapted_db"] > erasing["parent_db"] and erasing["passed"]
    back = estimate_check(Eraser(), model, inputs, contrasts, estimator)
    assert back["adapted_db"] < back["parent_db"] - ESTIMATE_MARGIN and not back["passed"]
    # The outputs made once for both of the gate's checks give the same verdict.
    from denoiser.adapt.gate import sample_outputs

    made = sample_outputs(Eraser(), model, inputs)
    assert estimate_check(Eraser(), model, inputs, contrasts, estimator, outputs=made) == back
    # Pages (larger than a digit in the model's look) are not judged: the check has no say.
    pages = [np.zeros((90, 90), np.float32)] * 3
    assert estimate_check(model, Eraser(), pages, [1.0] * 3, estimator) == {
        "parent_db": None, "adapted_db": None, "judged": 0, "scans": 3, "passed": True}
