"""Training: one function, :func:`train`, in labelled steps.

Noisy inputs are drawn fresh for every batch; the target is the clean image. A validation
split is held out of the *training* images (the test set is never seen here) and scored
with fixed noise after each epoch.

What is trained, and how, is a :class:`denoiser.models.recipe.TrainConfig`; each model's recipe
is in :mod:`denoiser.models.recipe`.

Speed: the training images live on the device as one tensor, batches are gathered there
and noise is drawn there, so a step moves no data; the loss is read back only when the
progress bar is updated.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from denoiser import memory
from denoiser.data.arrays import to_model_input
from denoiser.metrics import psnr
from denoiser.models.device import resolve_device
from denoiser.models.networks import build_model
from denoiser.models.precision import FP32, Precision, autocast
from denoiser.models.recipe import TrainConfig
from denoiser.noise import degrade
from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import add_noise
from denoiser.scans import tones
from denoiser.scans.strokes import SHRINK_ABOVE
from denoiser.threads import CpuShare
from denoiser.training.schedule import HYSTERESIS, Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    val_psnr: float
    images_per_second: float  # training steps alone, validation left out
    seconds: float  # the whole epoch, validation included
    eta_seconds: float

    def line(self) -> str:
        return (
            f"epoch {self.epoch}/{self.epochs}  loss {self.train_loss:.4f}  "
            f"val loss {self.val_loss:.4f}  val PSNR {self.val_psnr:.2f} dB  "
            f"{self.images_per_second:,.0f} img/s  ETA {self.eta_seconds:.0f} s"
        )


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    train_size: int = 0
    val_size: int = 0
    precision: Precision = FP32
    steps: int = 0  # optimiser steps taken
    planned_steps: int = 0  # epochs x steps per epoch; more than steps when the budget ended it


def split_train_val(n: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index arrays over ``n`` training images."""
    order = np.random.default_rng(config.seed).permutation(n)
    if config.train_limit is not None:
        order = order[: config.train_limit]
    n_val = max(1, int(round(len(order) * config.val_fraction)))
    if n_val >= len(order):
        raise ValueError(f"{len(order)} training images are too few to hold out a validation split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def objective(logits: torch.Tensor, clean: torch.Tensor, loss: str, reduction: str = "mean") -> torch.Tensor:
    """The training loss of ``logits`` against the clean images."""
    logits = logits.float()
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, clean, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(torch.sigmoid(logits), clean, reduction=reduction)
    return F.l1_loss(torch.sigmoid(logits), clean, reduction=reduction)


def _evaluate(model: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor, loss: str,
              precision: Precision = FP32, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, mean per-image PSNR) of the model on a fixed noisy set."""
    model.eval()
    losses, outputs = [], []
    with torch.inference_mode(), autocast(clean.device, precision):
        for start in range(0, len(clean), batch_size):
            x, y = noisy[start : start + batch_size], clean[start : start + batch_size]
            logits = model(x).float()
            losses.append(objective(logits, y, loss, reduction="sum"))
            outputs.append(torch.sigmoid(logits).cpu())
    model.train()
    denoised = torch.cat(outputs).squeeze(1).numpy()
    total = float(torch.stack(losses).sum())
    return total / clean.numel(), float(psnr(clean.squeeze(1).cpu().numpy(), denoised).mean())


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Adam:
    # The fused kernel does the whole update in one launch on CUDA.
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=device.type == "cuda")


def _log_replanned(schedule: Schedule, steps_per_epoch: int, config: TrainConfig, moved: int,
                   logged: int) -> int:
    """Say where the run now ends, when it moved a clear step from where it was last said
    (``logged``); returns the end last said."""
    small = abs(schedule.end - logged) <= HYSTERESIS * schedule.planned_steps
    if schedule.end == logged or (small and schedule.end != schedule.planned_steps):
        return logged
    if moved < 0:
        log.warning("at this pace the %d epochs would take longer than the time budget of %g minutes: "
                    "the run now ends after %d steps (%.1f epochs), the rate annealed to its end",
                    config.epochs, config.max_minutes, schedule.end, schedule.end / steps_per_epoch)
    else:
        log.info("the pace picked up: the run now ends after %d of its %d planned steps", schedule.end,
                 schedule.planned_steps)
    return schedule.end


def train(
    train_images: np.ndarray,
    config: TrainConfig,
    *,
    device: torch.device | str = "auto",
    precision: Precision = FP32,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    show_progress: bool | None = None,
) -> TrainResult:
    """Train a fresh ``config.model`` on uint8 ``(N, H, W)`` images; deterministic by seed.

    ``device`` is a torch device or a name (``"auto"``: CUDA, then MPS, then CPU).
    ``precision`` is float32, or bf16 autocast for the forward pass (weights, optimiser and
    loss stay float32). ``on_epoch_end`` gets each epoch's stats; ``on_progress`` gets the fraction done (0-1)
    about a hundred times over the run. ``show_progress=None`` shows a bar on a terminal.
    With ``config.max_minutes``, a run whose epochs would overrun it ends earlier, annealed
    (:class:`denoiser.training.schedule.Schedule`); ``steps`` and ``planned_steps`` tell.
    """
    memory.for_training()  # batches reuse large blocks (denoiser.memory)
    device = resolve_device(device) if isinstance(device, str) else device
    # Data: split, then keep both parts as float tensors on the device.
    train_idx, val_idx = split_train_val(len(train_images), config)
    train_x = to_model_input(train_images[train_idx]).to(device)
    val_x = to_model_input(train_images[val_idx]).to(device)
    spec = NoiseSpec.parse(config.noise)
    torch.manual_seed(config.seed)
    val_noisy, val_x = training_pair(val_x, spec=spec, rng=torch.Generator().manual_seed(config.seed + 1))
    order_rng = torch.Generator().manual_seed(config.seed + 2)
    noise_rng = torch.Generator(device).manual_seed(config.seed + 3)

    # Model and optimiser: channels_last is faster for the convs on CPU and GPU alike.
    model = build_model(config.model).to(device, memory_format=torch.channels_last)
    optimizer = _optimizer(model, config, device)
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    schedule = Schedule(config.schedule, total_steps, budget)
    report_every = max(1, total_steps // 100)
    best_psnr, best_state = -math.inf, None
    result = TrainResult(model=model, train_size=len(train_x), val_size=len(val_x), precision=precision,
                         planned_steps=total_steps)
    log.info(
        "training %s on %d images (%d held out for validation), %d epochs%s, noise %s, device %s, %s (%s)",
        config.model, len(train_x), len(val_x), config.epochs,
        "" if budget is None else f" or {config.max_minutes:g} minutes, whichever ends first",
        spec, device, precision.name, precision.reason,
    )

    with CpuShare(device) as share:  # torch's threads restored after
        started = time.perf_counter()
        model.train()
        done, logged = 0, total_steps  # steps taken; the end last logged
        for epoch in range(1, config.epochs + 1):
            if done >= schedule.end:
                break
            epoch_start = time.perf_counter()
            order = torch.randperm(len(train_x), generator=order_rng).to(device)
            loss_sum = torch.zeros((), device=device)
            bar = tqdm(total=len(train_x), desc=f"epoch {epoch}/{config.epochs}", unit="img",
                       unit_scale=True, leave=False,
                       disable=None if show_progress is None else not show_progress)
            seen = 0  # images trained on this epoch
            for step in range(steps_per_epoch):
                if done >= schedule.end:  # the time budget ended the run inside this epoch
                    break
                # Batch: freshly noised inputs and their clean targets, both already on the device.
                batch = train_x[order[step * config.batch_size : (step + 1) * config.batch_size]]
                noisy, clean = training_pair(batch, spec=spec, rng=noise_rng)
                # Forward and loss against the clean image.
                with autocast(device, precision):
                    logits = model(noisy)
                loss = objective(logits, clean, config.loss)
                # Backward and step, at the schedule's rate for this step.
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate * schedule.factor(done)
                optimizer.step()
                share.step()  # fewer threads while other processes keep CPUs busy
                # Log: reading the loss waits for the device, so only every report_every steps.
                loss_sum += loss.detach() * len(clean)
                done, seen = done + 1, seen + len(clean)
                if done % report_every == 0 or step == steps_per_epoch - 1:
                    bar.update(seen - bar.n)
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    if on_progress is not None:
                        on_progress(done / schedule.end)
                    # The budget: from the second epoch on, the pace so far is a fair forecast.
                    if epoch > 1 and (moved := schedule.replan(done, time.perf_counter() - started)):
                        logged = _log_replanned(schedule, steps_per_epoch, config, moved, logged)
            bar.close()
            train_seconds = time.perf_counter() - epoch_start

            val_loss, val_psnr = _evaluate(model, val_x, val_noisy, config.loss, precision)
            if config.keep_best and val_psnr > best_psnr:
                best_psnr = val_psnr
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            seconds = time.perf_counter() - epoch_start
            stats = EpochStats(
                epoch=epoch,
                epochs=config.epochs,
                train_loss=float(loss_sum) / seen,
                val_loss=val_loss,
                val_psnr=val_psnr,
                images_per_second=seen / train_seconds,
                seconds=seconds,
                eta_seconds=(time.perf_counter() - started) / done * (schedule.end - done),
            )
            result.history.append(stats)
            log.info(stats.line())
            if on_epoch_end is not None:
                on_epoch_end(stats)

    result.seconds, result.steps = time.perf_counter() - started, done
    if best_state is not None:
        model.load_state_dict(best_state)
        log.info("kept the weights of the best epoch (validation PSNR %.2f dB)", best_psnr)
    # Hand back a plain (contiguous) model, laid out as one loaded from a checkpoint is,
    # so both compute bit-identical outputs.
    result.model = model.to(memory_format=torch.contiguous_format).eval()
    return result


#: Training estimates each scan's levels on at most this many of its pixels (a regular
#: grid): a large batch of 4x scans costs as much to sort as to train on otherwise.
TRAINING_LEVEL_PIXELS = 1 << 12


def training_pair(clean: torch.Tensor, *, spec: NoiseSpec,
                  rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target) for a batch of clean ``(N, 1, H, W)`` digits in [0, 1].

    For the simple kinds: the noisy copy and the clean digits. For ``scan``: the degraded
    scan and its clean scan, both through the tone map estimated on the degraded one, as
    the cleaner will see a real scan (:func:`denoiser.scans.tones.to_model`).
    """
    if spec.kind != "scan":
        return add_noise(clean, spec=spec, rng=rng), clean
    truth, degraded = degrade.degrade(clean.squeeze(1), degrade.SCAN.scaled(spec.level), rng=rng)
    paper, ink = tones.estimate_levels(degraded, max_pixels=TRAINING_LEVEL_PIXELS)
    pair = tones.to_model(degraded, paper, ink).unsqueeze(1), tones.to_model(truth, paper, ink).unsqueeze(1)
    scale = degraded.shape[-1] / clean.shape[-1]
    if scale >= SHRINK_ABOVE:  # shrunk to MNIST's scale in the model's look, as the cleaner does
        return tuple(F.interpolate(x, size=clean.shape[-2:], mode="area") for x in pair)
    return pair
