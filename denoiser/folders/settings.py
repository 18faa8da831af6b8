"""How a folder is cleaned: per file (:class:`CleanOptions`) and per run (:class:`CleanRun`).

Both are frozen, validated once here, and are what the cleaning flow takes besides the two
folders (``clean_folder(in_dir, out_dir, options, run)``), so the command line, a
deployment and a library caller build the same objects.

    options = CleanOptions(tones="normalize", max_pixels=2**26)
    run = CleanRun(model="unet-3f2a9c1b7d4e", keep_runs=30, strict=True)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, MAX_FILE_MB, MAX_PIXELS, SHARD_SIZE


@dataclass(frozen=True)
class CleanOptions:
    """How each file is cleaned and written."""

    tones: Literal["keep", "normalize"] = "keep"  # the scan's own paper and ink, or full contrast
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # resolved once, when the model is chosen
    batch_size: int | None = None  # None: denoiser.models.infer.default_batch_size for the device
    tile: int = 256
    overlap: int = 32
    overwrite: bool = False  # clean every file again, even unchanged ones
    retry_errors: bool = False  # read again inputs whose same content failed before (else: known bad, skipped)
    workers: int = 2  # threads reading and writing beside the model
    #: processes cleaning shards side by side (denoiser.folders.processes); None: one per
    #: CPU for runs of 4,000 files or more on the CPU, else 0 (shards in this process)
    processes: int | None = None
    #: processes encoding outputs (denoiser.folders.encode); 0: in the writing threads, which
    #: measured faster on small scans (479 against 319 images/s with one process, 2 cores)
    encode_processes: int = 0
    #: zlib level of PNG outputs: 6 (Pillow's) measured no slower than 1-3 on small scans;
    #: on 2000x2000 scans 3 encodes about a third faster for files about 8% larger
    png_level: int = 6
    max_file_mb: float = MAX_FILE_MB  # larger input files are error rows, never read
    max_pixels: int = MAX_PIXELS  # files that would decode to more (all pages) are error rows

    def __post_init__(self) -> None:
        _one_of("tones", self.tones, ("keep", "normalize"))
        _one_of("device", self.device, ("auto", "cpu", "cuda", "mps"))
        _one_of("precision", self.precision, ("auto", "fp32", "bf16"))
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.processes is not None and self.processes < 0:
            raise ValueError(f"processes must be >= 0, got {self.processes}")
        if self.encode_processes < 0:
            raise ValueError(f"encode_processes must be >= 0, got {self.encode_processes}")
        if self.max_file_mb <= 0:
            raise ValueError(f"max_file_mb must be > 0, got {self.max_file_mb}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if not 0 <= self.png_level <= 9:
            raise ValueError(f"png_level must be 0-9, got {self.png_level}")


@dataclass(frozen=True)
class CleanRun:
    """What one cleaning run does besides cleaning each file: which model, the shards, the
    report, when it fails, how much history it keeps, adaptation, and the stores."""

    model: str | None = None  # a model id or a checkpoint's path; None: promoted, else the scan recipe's
    shard_size: int = SHARD_SIZE  # files per retryable task
    report: str | None = None  # None: OUT_DIR/.denoiser/reports/<run id>.parquet
    strict: bool = False  # a run in which any file failed ends Failed (known-bad files are read again)
    keep_runs: int | None = None  # retention of earlier runs' reports, shard files, history rows
    keep_days: float | None = None
    adapt: bool = False  # clean with the model adapted to this folder (made when needed)
    adapt_minutes: float = 2.5
    rebuild_manifest: bool = False  # set a corrupt manifest aside and rebuild it from the reports
    models_dir: str = str(DEFAULT_MODELS_DIR)
    data_dir: str | None = None  # MNIST, for training a missing default model and for adapting
    runs_dir: str = str(DEFAULT_RUNS_DIR)
    train: bool = True  # train the scan recipe's model when nothing else is at hand; False: fail at once

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.adapt_minutes <= 0:
            raise ValueError(f"adapt_minutes must be > 0, got {self.adapt_minutes}")
        if self.keep_runs is not None and self.keep_runs < 1:
            raise ValueError(f"keep_runs must be >= 1 (or unset), got {self.keep_runs}")
        if self.keep_days is not None and not self.keep_days > 0:
            raise ValueError(f"keep_days must be > 0 (or unset), got {self.keep_days}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def shard_options(options: CleanOptions, run: CleanRun) -> CleanOptions:
    """The options each shard runs with: a strict run reads known-bad files again, so that a
    bad file fails every strict run instead of being skipped as known bad."""
    return replace(options, retry_errors=True) if run.strict and not options.retry_errors else options
