"""The gate: whether a model adapted to a folder replaces its parent there.

Decided on data like the folder, with truth, that training never saw: for a folder whose
noise is white, clean digits given the folder's measured noise, and the blind-spot loss on
the folder's own scans (which training sees only through the parent's outputs); for any
other folder, digits laid on backgrounds of the folder's scans held out of training
(:mod:`denoiser.adapt.composite`). Then two checks on the folder's own scans that need no
labels: the digit-shape model's confidence in the outputs (:func:`shape_check`) and the
learned PSNR estimate of them (:func:`estimate_check`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.checks.quality import renoised_many
from denoiser.models.infer import denoise_images
from denoiser.noise.blindspot import blind_spot_loss

GATE_DB = 0.1  # the adapted model must beat its parent by this much on the gate's images
#: ... and lower the blind-spot loss on the folder's scans by this share. Measured
#: (bench.adapt): -1.9% to -3.7% where adapting gained 1.1-1.3 dB, -0.6% on the scan mix
#: where it lost 1.1 dB. Five folders: thin evidence, so the margin is a floor, not a fit.
BLIND_SPOT_MARGIN = 0.01


def gate_psnr(model: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Mean PSNR (dB) of ``model``'s outputs of ``noisy`` against ``clean`` (N, 1, H, W)."""
    out = _outputs(model, noisy)
    mse = ((out - clean) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def _outputs(model: torch.nn.Module, noisy: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.sigmoid(model(noisy[i : i + 256])) for i in range(0, len(noisy), 256)])


#: Trained on digits scanned as the folder was fitted to be (:mod:`denoiser.adapt.scan_fit`),
#: whose paper is synthetic, the adapted model must leave the folder's own held-out paper (the
#: composites more than 2 pixels from their ink) no more than this less flat than its parent
#: does (dB).
PAPER_MARGIN = 0.1


def paper_flatness(model: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """How flat ``model`` leaves the paper of ``noisy`` (N, 1, H, W), where ``clean`` is more
    than 2 pixels from any ink: the mean PSNR of the output there against its own mean level,
    scan by scan. The level itself is left out: where light falls unevenly, which tone is the
    paper's is not known without truth, but a pattern, texture or gradient left on it is wrong."""
    out = _outputs(model, noisy)
    paper = (F.max_pool2d((clean > 0.05).float(), 5, stride=1, padding=2) == 0).float()
    count = paper.sum(dim=(1, 2, 3)).clamp_min(1)
    level = (out * paper).sum(dim=(1, 2, 3), keepdim=True) / count.view(-1, 1, 1, 1)
    mse = (((out - level) ** 2) * paper).sum(dim=(1, 2, 3)) / count
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def blind_spot(model: torch.nn.Module, scans: torch.Tensor, sigma: torch.Tensor) -> float:
    with torch.no_grad():
        return float(blind_spot_loss(model, scans, sigma, rng=torch.Generator().manual_seed(1)))


#: The adapted model's outputs of the folder's own scans must read as digits at least this
#: nearly as surely as the parent's (the mean probability the digit-shape model gives the
#: digit it reads, over the folder's sampled scans): a check on the real scans that needs no
#: labels, and that an adapted model erasing strokes or inventing ink fails.
SHAPE_MARGIN = 0.02


def sample_outputs(parent: torch.nn.Module, adapted: torch.nn.Module, inputs: list[np.ndarray],
                   device: torch.device | str = "cpu",
                   parent_outputs: list[np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """Both models' outputs of the folder's sampled scans, made once for both label-free checks
    (``parent_outputs``: the parent's, when fine-tuning made them already)."""
    def outputs(model: torch.nn.Module) -> list[np.ndarray]:
        return denoise_images(model, inputs, device=torch.device(device))

    return {"parent": outputs(parent) if parent_outputs is None else parent_outputs, "adapted": outputs(adapted)}


def shape_check(parent: torch.nn.Module, adapted: torch.nn.Module, inputs: list[np.ndarray], shape_model,
                device: torch.device | str = "cpu", outputs: dict | None = None) -> dict[str, float | bool]:
    """How surely the digit-shape model reads the parent's and the adapted model's outputs of
    the folder's scans (``inputs``, in the model's look) as digits, and whether the adapted
    model passes (:data:`SHAPE_MARGIN`). Its readings of the two differ on ``changed`` of them.
    ``outputs``: :func:`sample_outputs`, when already made."""
    outputs = outputs or sample_outputs(parent, adapted, inputs, device)
    readings = {}
    for name in ("parent", "adapted"):
        _, digit, digit_p = shape_model.read(outputs[name])
        readings[name] = (digit, np.nan_to_num(digit_p))
    parent_p, adapted_p = float(readings["parent"][1].mean()), float(readings["adapted"][1].mean())
    changed = float((readings["parent"][0] != readings["adapted"][0]).mean())
    return {"parent_digit_p": round(parent_p, 4), "adapted_digit_p": round(adapted_p, 4),
            "changed": round(changed, 4), "scans": len(inputs), "passed": adapted_p >= parent_p - SHAPE_MARGIN}


#: The learned PSNR estimate (:mod:`denoiser.checks.quality_net`, trained for the parent on
#: MNIST under the scan degradations, never on the folder, and never used in fine-tuning) of
#: the adapted model's outputs of the folder's own scans may fall at most this much below the
#: parent's (means over the sample, dB). Measured (bench.adapt, bench.real, 2026-12-05, 2-core
#: AMD EPYC, fp32): where adapting gained 0.8-1.2 dB of true PSNR the estimate moved -0.06 to
#: +0.18 dB; where it lost (uneven lighting -0.33 dB true; cheques 0.9 points fewer digits
#: read right) it fell 0.41 and 0.76 dB. Seven folders: a floor set between them, not a fit.
ESTIMATE_MARGIN = 0.2


def estimate_check(parent: torch.nn.Module, adapted: torch.nn.Module, inputs: list[np.ndarray],
                   contrasts: list[float], estimator, device: torch.device | str = "cpu",
                   outputs: dict | None = None) -> dict[str, float | bool]:
    """The mean learned PSNR estimate of the parent's and the adapted model's outputs of the
    folder's scans (``inputs`` in the model's look, ``contrasts`` each scan's ink - paper),
    and whether the adapted model passes (:data:`ESTIMATE_MARGIN`). Scans the estimator does
    not judge (larger than a digit) are left out; with none judged, it passes (``judged`` 0).
    ``outputs``: :func:`sample_outputs`, when already made."""
    device = torch.device(device)
    outputs = outputs or sample_outputs(parent, adapted, inputs, device)
    means = {}
    for name, model in (("parent", parent), ("adapted", adapted)):
        sigmas, renoised = renoised_many(inputs, outputs[name])
        db = estimator.look_db(inputs, outputs[name], denoise_images(model, renoised, device=device), sigmas,
                               contrasts)
        judged = np.isfinite(db)
        means[name] = float(db[judged].mean()) if judged.any() else float("nan")
    if not judged.any():
        return {"parent_db": None, "adapted_db": None, "judged": 0, "scans": len(inputs), "passed": True}
    return {"parent_db": round(means["parent"], 3), "adapted_db": round(means["adapted"], 3),
            "judged": int(judged.sum()), "scans": len(inputs),
            "passed": means["adapted"] >= means["parent"] - ESTIMATE_MARGIN}


def compare(parent: torch.nn.Module, candidate: torch.nn.Module | None, truth: torch.Tensor,
            noisy: torch.Tensor, score=gate_psnr) -> dict[str, float]:
    """Both models' mean PSNR (``parent_db``, ``adapted_db``) on the gate's pairs (N, 1, H, W):
    white-noise digits, or digits laid on backgrounds held out of training
    (:meth:`denoiser.adapt.composite.Backgrounds.pairs`). A ``candidate`` of None (nothing was
    trained: it is its parent) is not scored twice. ``score``: :func:`gate_psnr`, or
    :func:`paper_flatness`."""
    parent_db = score(parent, truth, noisy)
    candidate_db = parent_db if candidate is None else score(candidate, truth, noisy)
    return {"parent_db": round(parent_db, 3), "adapted_db": round(candidate_db, 3)}


def gains(scores: dict[str, float]) -> bool:
    """Whether the adapted model cleaned the gate's pairs :data:`GATE_DB` better (:func:`compare`)."""
    return scores["adapted_db"] >= scores["parent_db"] + GATE_DB


def checked_scans(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Which of a sample's ``count`` scans the label-free checks read: all, or a seeded choice of
    ``limit`` in the sample's order (the sample's order is the folder's, so a prefix would be
    one corner of it)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def label_free(parent: torch.nn.Module, adapted: torch.nn.Module, inputs: list[np.ndarray],
               contrasts: list[float], *, shape_model=None, estimator=None, device: torch.device | str = "cpu",
               parent_outputs: list[np.ndarray] | None = None, limit: int = 1000,
               seed: int = 0) -> tuple[dict | None, dict | None]:
    """Both label-free checks on the folder's own scans (:func:`shape_check`, :func:`estimate_check`;
    None for a check whose model is missing), on :func:`checked_scans` of them."""
    if shape_model is None and estimator is None:
        return None, None
    pick = checked_scans(len(inputs), limit, seed)
    inputs, contrasts = [inputs[i] for i in pick], [contrasts[i] for i in pick]
    parent_outputs = None if parent_outputs is None else [parent_outputs[i] for i in pick]
    outputs = sample_outputs(parent, adapted, inputs, device, parent_outputs)  # made once for both checks
    shapes = None if shape_model is None else shape_check(parent, adapted, inputs, shape_model, device, outputs)
    estimate = None if estimator is None else estimate_check(parent, adapted, inputs, contrasts, estimator, device,
                                                             outputs)
    return shapes, estimate
