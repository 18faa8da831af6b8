"""Fine-tuning a stored model to a folder's own noise, without clean versions of its scans.

What the folder tells us without ground truth is its noise: for each sampled scan, shown to
the model as the cleaner shows it (:func:`denoiser.scans.restore.prepare`), the level of clipped
Gaussian noise on its paper (:func:`denoiser.noise.blindspot.clipped_noise_level`).
:func:`adapt` fine-tunes a copy of the parent on MNIST digits scanned as the folder's scans
were, where the scan degradation fitted to it describes it (:mod:`denoiser.adapt.scan_fit`,
:attr:`AdaptConfig.fit_distance`; white folders too, :attr:`AdaptConfig.fit_white`); else,
where the noise is white, on clean digits given exactly that noise; where it is not
(:mod:`denoiser.adapt.noise_profile`), on known digits laid on the folder's own backgrounds
(:mod:`denoiser.adapt.composite`) beside its own scans with the parent's outputs as truth on and
around their ink (:attr:`AdaptConfig.anchor`). A share of each batch
(:attr:`AdaptConfig.style`) takes its clean digits from the folder itself: the parent's outputs
of its scans, sharpened (:func:`folder_shapes`), made again :attr:`AdaptConfig.refresh` times
from the model being adapted; the MNIST digits are brought to the folder's slant, size and
stroke width (:mod:`denoiser.adapt.style_match`). The adapted model is a moving average of the
weights. Training on the blind-spot loss lowered PSNR (a network that predicts hidden pixels
is not the one that cleans with all pixels visible); that loss is the gate's instead.

The gate (:attr:`AdaptResult.better`, :mod:`denoiser.adapt.gate`): held-out pairs cleaned by
parent and adapted model, where the adapted one must gain ``GATE_DB``: for a white folder,
digits with its measured noise (in its hand), and the blind-spot loss on its own scans must
fall by ``BLIND_SPOT_MARGIN``; trained on the fitted scanning, held-out digits scanned the same
way, and the paper of the folder's held-out backgrounds left no less flat (``PAPER_MARGIN``);
otherwise digits laid on backgrounds held out of training. The stage adds the label-free checks
on the folder's scans (:mod:`denoiser.adapt.stage`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from denoiser.adapt import scan_fit
from denoiser.adapt.averaging import WeightAverage
from denoiser.adapt.budget import plan as budget_plan
from denoiser.adapt.budget import rate_factor
from denoiser.adapt.composite import Backgrounds, ink_anchors
from denoiser.adapt.config import AdaptConfig
from denoiser.adapt.gate import BLIND_SPOT_MARGIN, PAPER_MARGIN, blind_spot, compare, gains, paper_flatness
from denoiser.adapt.noise_profile import NoiseProfile, noisy_like
from denoiser.adapt.sample import centre_crops
from denoiser.adapt.style_match import StyleMatch, folder_shapes, refreshes_within
from denoiser.models.infer import denoise_images
from denoiser.models.precision import FP32, Precision, autocast
from denoiser.noise.spec import NoiseSpec
from denoiser.threads import CpuShare
from denoiser.training.loop import training_pair

log = logging.getLogger(__name__)

MATCH_POOL = 10000  # MNIST digits brought to a folder's handwriting (denoiser.adapt.style_match)
MATCH_REFERENCE = 1000  # of them, measured as the model cleans them, against the folder's shapes
#: Below this share of changed digits the folder's hand is MNIST's, and the digits stay as they
#: are (all of MNIST's, no pool, no refitting). A weak test: folders of MNIST's own hand measured
#: 5-81% (docs/LOG.md), where the match then costs 0.05-0.1 dB; a two-sample test is next.
MATCH_MIN_SHARE = 0.25
FIT_SHARE = 0.2  # of the budget, at most, for the fit (denoiser.adapt.scan_fit; 160 candidates took 24 s on 2 cores)
FIT_SHARE_WHITE = 0.1  # ... for a white folder, which its white noise describes unless its tones are off


@dataclass
class AdaptResult:
    model: torch.nn.Module
    profile: NoiseProfile
    steps: int
    seconds: float
    gate: dict[str, float]  # parent_db, adapted_db on the gate's images
    blind_spot: dict[str, float] | None  # held-out blind-spot loss of parent and adapted model (white folders)
    handwriting: dict[str, float] | None = None  # StyleMatch.summary() of the last match, if any

    composite: bool = False  # trained on composites of the folder's backgrounds (its noise is not white)
    # The parent's outputs of the folder's scans, made once here: the label-free checks reuse them.
    parent_outputs: list[np.ndarray] | None = None
    scanning: dict | None = None  # the fitted scanning (ScanFit.summary()) and whether it was trained on ("trained_on")

    @property
    def better(self) -> bool:
        """The gate's pairs cleaned better (:func:`denoiser.adapt.gate.gains`) and, for a white
        folder, the blind-spot loss on its own scans lower by ``BLIND_SPOT_MARGIN``; trained on
        the fitted scanning, the folder's held-out paper left no more than ``PAPER_MARGIN`` less flat."""
        if self.scanning is not None and self.scanning["trained_on"]:
            return gains(self.gate) and self.gate["paper_adapted_db"] >= self.gate["paper_parent_db"] - PAPER_MARGIN
        if self.composite or self.blind_spot is None:
            return gains(self.gate)
        return gains(self.gate) and self.blind_spot["adapted"] < self.blind_spot["parent"] * (1 - BLIND_SPOT_MARGIN)


def adapt(parent: torch.nn.Module, inputs: list[np.ndarray], clean_digits: np.ndarray,
          gate_digits: np.ndarray, *, headroom: float, parent_noise: str | None = None,
          config: AdaptConfig = AdaptConfig(), device: torch.device | str = "cpu",
          precision: Precision = FP32, on_progress: Callable[[float], None] | None = None,
          checked: int = 0, since: float | None = None, scales: list[float] | None = None) -> AdaptResult:
    """Fine-tune a copy of ``parent`` to the noise of ``inputs`` (a folder's scans in the
    model's look, float (H, W)); ``clean_digits`` (N, 28, 28) in [0, 1] carry that noise in
    training, ``gate_digits`` (others) in the gate. A ``rehearsal`` share of each batch
    carries ``parent_noise`` (the parent's training noise), so it keeps what it knew. The
    fine-tuning steps run in ``precision`` (more steps fit the time in bf16); the gate in float32.
    ``checked``: the scans the caller's label-free checks will read afterwards, inside the same
    ``config.minutes`` (:mod:`denoiser.adapt.budget`), counted from ``since`` (a
    ``time.perf_counter()``; default: this call). ``scales``: each input's shrink to the model's
    scale (:attr:`denoiser.adapt.sample.FolderSample.scales`), which the fitted scanning repeats."""
    if len(inputs) < 10:
        raise ValueError(f"adapting needs at least 10 readable images, got {len(inputs)}")
    started, device = time.perf_counter(), torch.device(device)
    parent = parent.to(device).eval()
    parent_outputs = denoise_images(parent, inputs, device=device)  # made once: profile, backgrounds, gate
    pass_seconds = time.perf_counter() - started  # what one pass over the sample costs here, now
    profile = NoiseProfile.measure(parent, inputs, device, estimates=parent_outputs)
    levels = torch.tensor(profile.white_levels(), dtype=torch.float32)
    noise = profile.summary()
    log.info("folder noise (model's look): median %.3f, 10-90%% %.3f-%.3f, %.0f%% of scans not white",
             noise["median"], noise["p10"], noise["p90"], 100 * noise["correlated_share"])
    composite = not profile.white
    if composite:
        log.info("%.0f%% of the folder's scans have noise alike between neighbouring pixels (print, texture, "
                 "blur, JPEG): %s", 100 * profile.correlated_share,
                 ("its scanning is fitted; where the fit does not describe it, " if config.fit else "")
                 + "training lays known digits on the folder's own backgrounds")
    fitting = config.fit and (composite or config.fit_white)
    if composite or fitting:  # the folder's real backgrounds: composites, the fitted gate's paper; a fifth held out
        try:
            found = Backgrounds.from_scans(inputs, parent_outputs, seed=config.seed)
        except ValueError:
            if composite:
                raise
            fitting = False  # a white folder with no paper to check the fit's model on: its white noise alone
        else:
            found.noise = np.asarray(profile.levels, dtype=np.float32)
            train_bg, gate_bg = found.split(0.2, seed=config.seed)
    # Clean digits in the model's look: paper 0, ink at 1 / headroom (the tone map's headroom).
    raw_digits = torch.from_numpy(np.asarray(clean_digits, dtype=np.float32))[:, None]
    train_digits = raw_digits / headroom
    old_spec = NoiseSpec.parse(parent_noise) if parent_noise else None
    n_old = round(config.batch_size * config.rehearsal) if old_spec else 0
    gate_clean = torch.from_numpy(np.asarray(gate_digits, dtype=np.float32))[:, None] / headroom
    rng = torch.Generator().manual_seed(config.seed)
    fitted, scanned = None, None  # the folder's scanning, fitted, and the pairs made with it
    otherwise = "composites" if composite else "its white noise"
    if fitting:
        try:
            fitted = scan_fit.fit_folder(parent, inputs, parent_outputs, raw_digits, headroom=headroom,
                                         candidates=config.fit_candidates, seed=config.seed, device=device,
                                         seconds=(FIT_SHARE if composite else FIT_SHARE_WHITE) * config.minutes * 60,
                                         precision=precision, scale=scan_fit.folder_scale(scales))
        except ValueError as error:  # no scan with both paper and ink to measure
            log.info("the folder's scanning could not be fitted (%s): trained on %s", error, otherwise)
    if fitted is not None:
        close = fitted.distance <= config.fit_distance
        log.info("the folder's scanning fitted in %.0f s (distance %.2f, %s): %s", fitted.seconds, fitted.distance,
                 "trained on digits scanned with it" if close else f"too far: trained on {otherwise}",
                 {k: v for k, v in fitted.summary().items() if k not in ("stats", "candidates", "seconds")})
        if close:
            scanned = scan_fit.PairPool(fitted, raw_digits, headroom=headroom, seed=config.seed)

    def pairs(clean: torch.Tensor, generator: torch.Generator, on: Backgrounds | None = None) -> tuple:
        """(noisy, clean) in the model's look: the folder's measured white noise, its fitted
        scanning, or composites (``on`` given: always composites, on those backgrounds)."""
        if scanned is not None and on is None:
            return scanned.batch(clean * headroom, generator)
        if composite or on is not None:
            return (on or train_bg).pairs(clean * headroom, generator)
        return noisy_like(clean, levels, generator), clean

    gate_on = gate_bg if composite or scanned is not None else None  # held-out backgrounds, else white noise
    gate_noisy, gate_truth = pairs(gate_clean, torch.Generator().manual_seed(config.seed + 1), on=gate_on)
    scans = centre_crops(inputs).to(device)
    scan_sigma = torch.tensor(profile.levels, dtype=torch.float32).view(-1, 1, 1, 1).to(device)
    made = time.perf_counter()  # what making the folder's shapes again costs, measured on the parent
    styles = folder_shapes(parent, scans, headroom).cpu() if config.style else None
    refresh_seconds = time.perf_counter() - made
    n_style = round(config.batch_size * config.style) if config.style else 0
    n_anchor = round(config.batch_size * config.anchor) if composite and scanned is None else 0
    if n_old + n_style + n_anchor >= config.batch_size:  # the shares that apply to this folder
        raise ValueError(f"the batch's shares leave no MNIST digits: rehearsal {n_old}, style {n_style} and "
                         f"anchor {n_anchor} of {config.batch_size} images")
    matching, gate_styled = config.match and styles is not None, None
    if matching:  # the MNIST digits to bring to the folder's hand, and those measured against it
        pool_rng = torch.Generator().manual_seed(config.seed + 2)
        pool = train_digits[torch.randperm(len(train_digits), generator=pool_rng)[:MATCH_POOL]]
        pool_noisy = (pairs(pool[:MATCH_REFERENCE], pool_rng)[0] if scanned is None else  # each digit's own scan
                      fitted.pairs(pool[:MATCH_REFERENCE] * headroom, config.seed + 2, headroom)[0])

    def matched(cleaner: torch.nn.Module) -> StyleMatch | None:
        """The pool (and the gate's digits, last) brought to the folder's hand, or None."""
        nonlocal matching, gate_styled
        if not matching:
            return None
        seen = folder_shapes(cleaner, pool_noisy.to(device), headroom).cpu()
        found = StyleMatch.fit(torch.cat([pool, gate_clean]), seen, styles)
        if found.changed_share < MATCH_MIN_SHARE:  # and the refits are not made either
            matching = False
            log.info("the folder's handwriting is MNIST's (%.0f%% of the digits would change): "
                     "MNIST's digits are kept as they are", 100 * found.changed_share)
            return None
        log.info("MNIST's digits brought to the folder's handwriting (median change): %s", found.summary())
        gate_styled = found.digits[len(pool) :]
        return StyleMatch(found.digits[: len(pool)], found.changes[: len(pool)])

    made = time.perf_counter()
    match = matched(parent)
    refresh_seconds += time.perf_counter() - made
    if n_anchor:
        anchor_scans, kept, kept_mask = ink_anchors(parent, scans)
    model = copy.deepcopy(parent).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    averaged = WeightAverage(model, config.average)
    train_started = time.perf_counter()
    planned_time = budget_plan(config.minutes, train_started - (started if since is None else since), pass_seconds,
                               len(inputs), checked=checked, blind_spot=not composite, gate_pairs=len(gate_clean))
    budget, step = planned_time.train, 0
    if not config.steps:
        log.info("fine-tuning for %.0f s of the %.0f s budget: measuring the folder took %.0f s, the gate and "
                 "the checks after it will take about %.0f s%s", budget, planned_time.total, planned_time.spent,
                 planned_time.after, " (the budget is too small for them: it will be overrun)"
                 if planned_time.squeezed else "")

    def progress() -> float:
        """How much of the budget is spent: its steps where one is set, else its seconds."""
        if config.steps:
            return step / config.steps
        return (time.perf_counter() - train_started) / budget if budget > 0 else 1.0

    planned = 0
    if n_style:  # a step budget has no clock to fit the refreshes into: it makes every one
        planned = config.refresh if config.steps else refreshes_within(budget, refresh_seconds, config.refresh)
    if n_style and planned < config.refresh:
        log.info("the folder's shapes are made again %d times, not %d: each takes %.1f s of a %.0f s budget",
                 planned, config.refresh, refresh_seconds, budget)
    refreshes = planned
    with CpuShare(device) as share:  # fewer threads while other processes keep CPUs busy
        while (done := progress()) < 1:
            if refreshes and done > 1 - refreshes / (planned + 1):
                styles, refreshes = folder_shapes(averaged.model.eval(), scans, headroom).cpu(), refreshes - 1
                match = matched(averaged.model)
                model.train()  # the folder's shapes as the model being adapted now cleans them
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * rate_factor(config.schedule, done)
            n_mnist = config.batch_size - n_old - n_style - n_anchor
            source = train_digits if match is None else match.digits
            clean = source[torch.randint(0, len(source), (n_mnist,), generator=rng)]
            if n_style:
                clean = torch.cat([clean, styles[torch.randint(0, len(styles), (n_style,), generator=rng)]])
            noisy, clean = pairs(clean, rng)
            if n_old:
                old = raw_digits[torch.randint(0, len(raw_digits), (n_old,), generator=rng)]
                old_noisy, old_clean = training_pair(old, spec=old_spec, rng=rng)
                if old_noisy.shape[-2:] != clean.shape[-2:]:  # scans drawn at a larger scale
                    old_noisy, old_clean = (F.interpolate(x, size=clean.shape[-2:], mode="area")
                                            for x in (old_noisy, old_clean))
                noisy, clean = torch.cat([noisy, old_noisy]), torch.cat([clean, old_clean])
            mask = torch.ones_like(clean)
            if n_anchor:
                pick = torch.randint(0, len(kept), (n_anchor,), generator=rng)
                noisy, clean = torch.cat([noisy, anchor_scans[pick]]), torch.cat([clean, kept[pick]])
                mask = torch.cat([mask, kept_mask[pick]])
            with autocast(device, precision):
                logits = model(noisy.to(device))
            target = clean.to(device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target,
                                                      weight=(1 + config.ink_weight * target) * mask.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            averaged.update()
            share.step()
            step += 1
            if step % 50 == 0 and on_progress is not None:
                on_progress(min(1.0, progress()))
    model = averaged.model.eval()
    if gate_styled is not None:  # the gate's digits in the folder's hand too, with the same noise draws
        gate_noisy, gate_truth = pairs(gate_styled, torch.Generator().manual_seed(config.seed + 1), on=gate_on)
    trained = step > 0  # else the model is its parent: no need to score it twice
    candidate = model if trained else None
    gate = compare(parent, candidate, gate_truth, gate_noisy)
    if scanned is not None:  # digits scanned as fitted (held out), and the folder's own paper no worse
        paper = compare(parent, candidate, gate_truth, gate_noisy, score=paper_flatness)
        fit_noisy, fit_truth = fitted.pairs((gate_clean if gate_styled is None else gate_styled) * headroom,
                                            config.seed + 1, headroom)
        gate = {**compare(parent, candidate, fit_truth, fit_noisy), "paper_parent_db": paper["parent_db"],
                "paper_adapted_db": paper["adapted_db"], "composites_parent_db": gate["parent_db"],
                "composites_adapted_db": gate["adapted_db"]}
    blind = None  # the blind-spot loss assumes white noise: it has no say on composites
    if not composite:
        parent_loss = blind_spot(parent, scans, scan_sigma)
        blind = {"parent": round(parent_loss, 6),
                 "adapted": round(blind_spot(model, scans, scan_sigma) if trained else parent_loss, 6)}
    seconds = time.perf_counter() - started
    log.info("adapted in %d steps, %.0f s: gate %.2f -> %.2f dB", step, seconds, gate["parent_db"], gate["adapted_db"])
    return AdaptResult(model, profile, step, seconds, gate, blind, None if match is None else match.summary(),
                       composite, parent_outputs, None if fitted is None else
                       {**fitted.summary(), "trained_on": scanned is not None})
