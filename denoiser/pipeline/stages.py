"""The pipeline's five stages as plain functions over a run directory (train-or-load is in
:mod:`denoiser.pipeline.train_stage`; what each stage records, in :mod:`denoiser.pipeline.record`).

Each stage reads the files earlier stages wrote, writes its own outputs atomically, and
returns a small JSON-able dict of paths and figures (also saved as ``stages/<name>.json``).
So any stage can be run, retried or resumed alone, with or without Prefect::

    ingest -> synthesize_noise -> train_or_load -> denoise -> report

Run directory layout (``data/runs/<run_id>/``)::

    test_images.npy  test_labels.npy                     (ingest; the training images are
                                                          ../cache/train-<digest>.npy, one
                                                          copy shared by every run)
    noisy_test.npy                                       (synthesize_noise)
    denoised_test.npy                                    (denoise)
    report.parquet  summary.json  preview.png            (report)
    stages/<stage>.json                                  (each stage's result)
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from denoiser import files, runs
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR
from denoiser.data import datasets, mnist
from denoiser.files import load_array, save_array
from denoiser.models import checkpoint
from denoiser.models.device import resolve_device
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.models.registry import CLEAN_RECIPE
from denoiser.noise.spec import NoiseSpec
from denoiser.noise.synthetic import synthesize
from denoiser.pipeline import report
from denoiser.pipeline.record import StageResult, read_stage, record
from denoiser.pipeline.train_stage import train_or_load
from denoiser.runs import new_run_id
from denoiser.scans import restore

log = logging.getLogger(__name__)

STAGES = ("ingest", "synthesize_noise", "train_or_load", "denoise", "report")


def ingest(
    run_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    dataset: str = "mnist",
    test_limit: int | None = None,
) -> StageResult:
    """Load and verify the IDX files, and write them as ``.npy`` arrays: the test split into
    the run, the training images once for all runs into the runs folder's cache (named by
    their digest, so a later run, or a resumed one, reads the same file)."""
    started, run_dir = time.perf_counter(), Path(run_dir)
    if dataset not in datasets.DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(datasets.DATASETS)}")
    if test_limit is not None and test_limit < 1:
        raise ValueError(f"test_limit must be >= 1 (or unset), got {test_limit}")
    splits = mnist.load_dataset(data_dir, dataset=datasets.DATASETS[dataset])
    test_images, test_labels = splits.test_images[:test_limit], splits.test_labels[:test_limit]
    train_sha256 = mnist.array_digest(splits.train_images)
    cached = run_dir.parent / runs.CACHE_DIR / f"train-{train_sha256[:24]}.npy"
    if cached.is_file():
        os.utime(cached)  # in use: retention leaves recently used arrays alone
    else:
        save_array(cached, splits.train_images)
    result = {
        "dataset": dataset,
        "data_dir": str(mnist.resolve_data_dir(data_dir)),
        "train_images": str(cached),
        "test_images": str(save_array(run_dir / "test_images.npy", test_images)),
        "test_labels": str(save_array(run_dir / "test_labels.npy", test_labels)),
        "train_sha256": train_sha256,
        "n_train": int(len(splits.train_images)),
        "n_test": int(len(test_images)),
    }
    log.info("ingested %d training and %d test images", result["n_train"], result["n_test"])
    return record(run_dir, "ingest", result, started)


def synthesize_noise(
    run_dir: str | os.PathLike[str], *, test_images: str, noise: str, seed: int
) -> StageResult:
    """Write ``noisy_test.npy``: the test images with ``noise``, reproducible from ``seed``.

    Scan degradations also change the truth (paper and ink tones): it goes to
    ``truth_test.npy``, which the report then scores against instead of the test images.
    """
    started, run_dir = time.perf_counter(), Path(run_dir)
    spec = NoiseSpec.parse(noise)
    truth, noisy = synthesize(load_array(test_images), spec=spec, seed=seed)
    result = {
        "noisy": str(save_array(run_dir / "noisy_test.npy", noisy)),
        "truth": str(save_array(run_dir / "truth_test.npy", truth)) if spec.kind == "scan" else test_images,
        "noise": str(spec),
        "noise_seed": seed,
    }
    return record(run_dir, "synthesize_noise", result, started)


def train_clean_default(models_dir: str | os.PathLike[str], *, runs_dir: str | os.PathLike[str],
                        data_dir: str | None = None, device: str = "auto",
                        precision: str = "auto") -> checkpoint.Checkpoint:
    """Train the scan recipe's model, the one ``clean`` uses when none is named or promoted
    (:data:`denoiser.models.registry.CLEAN_RECIPE`), on MNIST: the ingest and train stages in a
    run folder of its own."""
    run_dir = Path(runs_dir) / f"default-model-{new_run_id()}"
    ingested = ingest(run_dir, data_dir=data_dir)
    trained = train_or_load(run_dir, train_images=ingested["train_images"],
                            train_sha256=ingested["train_sha256"], config=CLEAN_RECIPE,
                            models_dir=models_dir, device=device, precision=precision)
    return checkpoint.resolve_checkpoint(trained["model_id"], models_dir)


def denoise(
    run_dir: str | os.PathLike[str],
    *,
    noisy: str,
    model_id: str,
    models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> StageResult:
    """Write ``denoised_test.npy``: the noisy test images through the stored model."""
    started, run_dir = time.perf_counter(), Path(run_dir)
    found = checkpoint.find_checkpoint(models_dir, model_id)
    if found is None:
        raise FileNotFoundError(f"model {model_id} is not in {models_dir}")
    torch_device = resolve_device(device)
    chosen = resolve_precision(precision, torch_device)
    log.info("denoising in %s (%s)", chosen.name, chosen.reason)
    model = checkpoint.load_model(found, device=torch_device)
    images = load_array(noisy)
    t0 = time.perf_counter()
    denoised = restore.apply_model(found.metadata, model, images, as_scans=False,
                                   batch_size=batch_size, device=torch_device, precision=chosen)
    seconds = time.perf_counter() - t0
    result = {
        "denoised": str(save_array(run_dir / "denoised_test.npy", denoised)),
        "images_per_second": round(len(images) / max(seconds, 1e-9), 1),
        **chosen.to_dict(),
    }
    return record(run_dir, "denoise", result, started)


def write_report(
    run_dir: str | os.PathLike[str],
    *,
    run_id: str,
    test_images: str,
    test_labels: str,
    noisy: str,
    denoised: str,
    noise: str,
    noise_seed: int,
    model_id: str,
) -> StageResult:
    """Write ``report.parquet``, ``summary.json`` and ``preview.png`` for the run."""
    started, run_dir = time.perf_counter(), Path(run_dir)
    clean, noisy_images = load_array(test_images), load_array(noisy)
    denoised_images = load_array(denoised)
    frame = report.build_report(
        run_id=run_id,
        clean=clean,
        noisy=noisy_images,
        denoised=denoised_images,
        labels=load_array(test_labels),
        split="test",
        noise=noise,
        noise_seed=noise_seed,
        model_id=model_id,
    )
    parquet = files.write_parquet(frame, run_dir / "report.parquet")
    preview = report.write_preview(
        run_dir / "preview.png", clean=clean, noisy=noisy_images, denoised=denoised_images
    )
    # This stage's own time is counted up to here: writing the summary is all that is left.
    stage_seconds = {**_stage_seconds(run_dir), "report": round(time.perf_counter() - started, 3)}
    summary = report.summarize(
        frame,
        run_id=run_id,
        model_id=model_id,
        noise=noise,
        noise_seed=noise_seed,
        seconds_per_stage=stage_seconds,
        denoise_images_per_second=read_stage(run_dir, "denoise").get("images_per_second"),
        denoise_precision=read_stage(run_dir, "denoise").get("precision"),
        train_precision=read_stage(run_dir, "train_or_load").get("precision"),
    )
    summary_path = report.write_summary(summary, run_dir / "summary.json")
    result = {"report": str(parquet), "summary": str(summary_path), "preview": str(preview),
              "rows": int(len(frame))}
    return record(run_dir, "report", result, started)


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    return {
        stage: record["seconds"]
        for stage in STAGES
        if (record := read_stage(run_dir, stage)) and "seconds" in record
    }


def run_pipeline(
    *,
    runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR,
    run_id: str | None = None,
    data_dir: str | None = None,
    dataset: str = "mnist",
    config: TrainConfig | None = None,
    test_limit: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    models_dir: str | os.PathLike[str] = DEFAULT_MODELS_DIR,
    retrain: bool = False,
) -> StageResult:
    """All five stages in order, without Prefect (the flow in ``flows/`` adds retries, UI)."""
    if config is None:  # the default recipe, with the epochs bf16 buys where it runs
        config = TrainConfig.recipe(bf16=resolve_precision(precision, resolve_device(device)).name == "bf16")
    run_id = run_id or new_run_id()
    run_dir = Path(runs_dir) / run_id
    ingested = ingest(run_dir, data_dir=data_dir, dataset=dataset, test_limit=test_limit)
    noised = synthesize_noise(run_dir, test_images=ingested["test_images"],
                              noise=config.noise, seed=config.seed)
    model = train_or_load(run_dir, train_images=ingested["train_images"],
                          train_sha256=ingested["train_sha256"], config=config,
                          models_dir=models_dir, device=device, precision=precision, retrain=retrain)
    cleaned = denoise(run_dir, noisy=noised["noisy"], model_id=model["model_id"],
                      models_dir=models_dir, batch_size=batch_size, device=device, precision=precision)
    return write_report(run_dir, run_id=run_id, test_images=noised["truth"],
                        test_labels=ingested["test_labels"], noisy=noised["noisy"],
                        denoised=cleaned["denoised"], noise=noised["noise"],
                        noise_seed=noised["noise_seed"], model_id=model["model_id"])
