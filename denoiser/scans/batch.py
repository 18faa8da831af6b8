"""A batch of decoded scans cleaned, with the figures of their report rows.

    results = clean_batch(model, [image.pixels for image in batch], headroom=1.25, tones="keep")
    for image, result in zip(batch, results):
        ...  # a Cleaned (output pixels, what was measured, report figures) or the exception

The steps around the model (tones and scale, the quality estimate's check pass, the map
back, the figures) run for the whole batch at once, scans of one size together, in
vectorized passes: on 28x28 scans Python's per-image overhead used to cost more than the
model. The results are those of doing each scan alone (:func:`denoiser.scans.restore.prepare`,
:func:`denoiser.scans.restore.finish`, :mod:`denoiser.checks.quality`). A scan that fails a step
becomes its exception in the results; the others go on. An error of the model itself is
raised: it is no one file's fault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from denoiser.checks import quality
from denoiser.checks.shapes import ShapeModel
from denoiser.data import arrays
from denoiser.metrics import noise_sigmas
from denoiser.models.infer import denoise_images
from denoiser.models.precision import FP32, Precision
from denoiser.scans import restore
from denoiser.scans.restore import ScanInfo

T = TypeVar("T")
#: One batch on the model at a time per process: the model already uses every core, and two
#: shards' batches at once would only make their threads fight over them.
_MODEL_TURN = threading.Lock()


@dataclass(frozen=True)
class Cleaned:
    """One scan, cleaned."""

    pixels: np.ndarray  # float32 (H, W) in [0, 1], the scan's size and (by default) tones
    info: ScanInfo
    fields: dict[str, Any]  # report columns: recon_mse, noise_sigma_in/out, the quality estimate


@dataclass
class BatchTimings:
    """Seconds spent before the model (tones and scale), on it (both passes) and after it."""

    prepare: float = 0.0
    model: float = 0.0
    finish: float = 0.0


def clean_batch(model: torch.nn.Module, images: list[np.ndarray], *, headroom: float, tones: str = "keep",
                device: torch.device | str = "cpu", batch_size: int | None = None, tile: int = 256,
                overlap: int = 32, precision: Precision = FP32, shape_model: ShapeModel | None = None,
                quality_model: Any = None, timings: BatchTimings | None = None) -> list[Cleaned | Exception]:
    """Clean float (H, W) scans in [0, 1]: each one's :class:`Cleaned`, or the exception that
    stopped it. With ``shape_model``, outputs unlike any digit's shape are flagged as OOD;
    with ``quality_model`` (:class:`denoiser.checks.quality_net.QualityEstimator`), the PSNR
    estimate of digit-sized scans is its, else :mod:`denoiser.checks.quality`'s."""
    clock = timings if timings is not None else BatchTimings()
    started = time.perf_counter()
    prepared = _each(lambda some: restore.prepare_many(some, headroom=headroom), images)
    live = [i for i, p in enumerate(prepared) if not isinstance(p, Exception)]
    clock.prepare += time.perf_counter() - started

    options = dict(batch_size=batch_size, device=device, tile=tile, overlap=overlap, precision=precision)
    with _MODEL_TURN:
        started = time.perf_counter()
        measured = [prepared[i] for i in live]
        outputs = denoise_images(model, [m for m, _ in measured], **options)  # type: ignore[misc]
        # An output that lost its digit: the polarity was misread; cleaned again the other way.
        restore.retry_blank(model, [images[i] for i in live], measured, outputs, headroom=headroom,  # type: ignore[arg-type]
                            **options)
        mapped = [m for m, _ in measured]  # type: ignore[misc]
        infos: list[ScanInfo] = [info for _, info in measured]  # type: ignore[misc]
        # The quality estimate's check pass: each output with fresh noise of its scan's level, cleaned again.
        sigmas, renoised = quality.renoised_many(mapped, outputs)
        rechecks = denoise_images(model, renoised, **options)
        on_cpu = torch.device(device).type == "cpu"  # the shape model runs there, in the CPU's precision
        readings = _readings(shape_model, mapped, outputs, precision if on_cpu else FP32)
        scores = readings["ood_score"]
        contrasts = [info.ink - info.paper for info in infos]
        look_dbs = (np.full(len(outputs), np.nan) if quality_model is None
                    else quality_model.look_db(mapped, outputs, rechecks, sigmas, contrasts,
                                               precision=precision if on_cpu else FP32))
        clock.model += time.perf_counter() - started

    started = time.perf_counter()
    results: list[Cleaned | Exception] = list(prepared)  # type: ignore[arg-type]
    shapes = [images[i].shape for i in live]
    cleaned = _each(lambda some: restore.finish_many([o for o, _, _ in some], [f for _, f, _ in some],
                                                     [s for _, _, s in some], tone=tones),
                    list(zip(outputs, infos, shapes, strict=True)))
    done = [k for k, c in enumerate(cleaned) if not isinstance(c, Exception)]
    figures = _each(lambda ks: _figures([images[live[k]] for k in ks], [cleaned[k] for k in ks]), done)
    assessed = _each(lambda ks: quality.assess([mapped[k] for k in ks], [outputs[k] for k in ks],
                                               [rechecks[k] for k in ks], [sigmas[k] for k in ks],
                                               [contrasts[k] for k in ks], [float(scores[k]) for k in ks],
                                               shape_model.threshold if shape_model is not None else np.inf,
                                               [float(look_dbs[k]) for k in ks]), done)
    for k, i in enumerate(live):
        results[i] = cleaned[k]  # type: ignore[assignment]
    for j, k in enumerate(done):
        failed = next((r for r in (figures[j], assessed[j]) if isinstance(r, Exception)), None)
        read = {name: None if name in _DIGITS and values[k] < 0 else values[k].item()  # -1: not read
                for name, values in readings.items()}
        results[live[k]] = failed or Cleaned(cleaned[k], infos[k], {**figures[j], **assessed[j], **read})  # type: ignore[arg-type]
    clock.finish += time.perf_counter() - started
    return results


#: A reading counts as confident at this probability: an output that reads as another digit
#: than its input did, both this sure, is flagged (``identity_changed``).
IDENTITY_P = 0.9
_DIGITS = ("digit", "digit_in")  # the columns holding a digit, -1 where the scan was not judged


def _readings(shape_model: ShapeModel | None, mapped: list[np.ndarray], outputs: list[np.ndarray],
              precision: Precision) -> dict[str, np.ndarray]:
    """What the digit-shape model reads in each output and in its input: the report columns
    ``ood_score`` (the probability of "not a digit"), ``digit``, ``digit_p``, ``digit_in``,
    ``digit_in_p`` and ``identity_changed`` (NaN, -1 and False without a shape model)."""
    n = len(outputs)
    if shape_model is None:
        nan, none = np.full(n, np.nan), np.full(n, -1)
        return {"ood_score": nan, "digit": none, "digit_p": nan, "digit_in": none, "digit_in_p": nan,
                "identity_changed": np.zeros(n, dtype=bool)}
    score, digit, digit_p = shape_model.read(outputs, precision=precision)
    _, digit_in, digit_in_p = shape_model.read(mapped, precision=precision)
    changed = (digit != digit_in) & (digit >= 0) & (digit_in >= 0) & (digit_p >= IDENTITY_P) & \
        (digit_in_p >= IDENTITY_P)
    return {"ood_score": score, "digit": digit, "digit_p": digit_p, "digit_in": digit_in, "digit_in_p": digit_in_p,
            "identity_changed": changed}


def _figures(pixels: list[np.ndarray], cleaned: list[np.ndarray]) -> list[dict[str, float]]:
    """recon_mse (the mean squared change) and the noise estimates of input and output."""
    rows: list[dict[str, float] | None] = [None] * len(pixels)
    for indices in arrays.by_shape(pixels).values():
        if len(indices) == 1:  # a large scan is alone in its group: no copies of it
            before, after = pixels[indices[0]][None], cleaned[indices[0]][None]
        else:
            before = np.stack([pixels[i] for i in indices])
            after = np.stack([cleaned[i] for i in indices])
        change = np.array([float(np.mean(np.square(a - b, dtype=np.float32))) for a, b in zip(after, before, strict=True)])
        sigma_in, sigma_out = noise_sigmas(before), noise_sigmas(after)
        for k, i in enumerate(indices):
            rows[i] = {"recon_mse": float(change[k]), "noise_sigma_in": float(sigma_in[k]),
                       "noise_sigma_out": float(sigma_out[k])}
    return rows  # type: ignore[return-value]


def _each(step: Callable[[list], list[T]], items: list) -> list[T | Exception]:
    """``step`` over all ``items`` at once; when that raises, over each alone, so that one
    item's failure is that item's exception and the rest go on."""
    if not items:
        return []
    try:
        return list(step(items))
    except Exception:  # noqa: BLE001 - find which item it was
        results: list[T | Exception] = []
        for item in items:
            try:
                results.append(step([item])[0])
            except Exception as error:  # noqa: BLE001 - that item's row says why
                results.append(error)
        return results
