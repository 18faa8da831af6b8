"""Folder-in/folder-out cleaning of real scans with a trained model (no noise is added).

    entries = plan(in_dir, out_dir)              # sorted image files, hidden ones left out
    for part in shards(entries, 2000):
        rows = clean_shard(part, in_dir=..., out_dir=..., checkpoint=..., run_id=...)

Every output lands at the same relative path under ``out_dir``, written to a temporary
file in ``out_dir/.denoiser/tmp`` and renamed into place, so a killed run never leaves a
partial output. ``in_dir`` is only read. A file that cannot be processed becomes a row with
``status = "error"`` and a one-line reason; the others go on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from denoiser.checkpoint import Checkpoint, load_model
from denoiser.device import resolve_device
from denoiser.files import atomic_path
from denoiser.images import Entry, GrayImage, ImageError, read_image, scan_folder, write_like
from denoiser.infer import denoise_images
from denoiser.manifest import Manifest
from denoiser.metrics import noise_sigma
from denoiser.restore import TONES, ScanInfo, finish, model_headroom, prepare
from denoiser.workdir import work_dir

log = logging.getLogger(__name__)

STATUSES = ("ok", "error", "skipped")
REPORT_COLUMNS = {
    "run_id": "string", "path": "string", "status": "string", "error": "string",
    "format": "string", "mode": "string", "width": "Int64", "height": "Int64",
    "inverted": "boolean", "paper": "float64", "ink": "float64", "scale": "float64",
    "model_id": "string", "model_reason": "string", "input_sha256": "string",
    "output_path": "string", "recon_mse": "float64", "noise_sigma_in": "float64",
    "noise_sigma_out": "float64", "seconds": "float64",
}


@dataclass(frozen=True)
class CleanOptions:
    batch_size: int | None = None  # None: infer.default_batch_size for the device
    tile: int = 256
    overlap: int = 32
    overwrite: bool = False
    device: str = "auto"
    workers: int = 2  # threads reading and writing beside the model
    tones: str = "keep"  # keep the scan's paper and ink, or "normalize" to full contrast
    rerun_other_models: bool = True  # clean again files that another model cleaned

    def __post_init__(self) -> None:
        if self.tones not in TONES:
            raise ValueError(f"unknown tones {self.tones!r}; choose one of {', '.join(TONES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def plan(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Entry]:
    """The input files to consider, after checking the two folders make sense together."""
    in_path, out_path = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not in_path.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist or is not a folder")
    if out_path == in_path or out_path.is_relative_to(in_path):
        raise ValueError(f"output folder {out_dir} must not be the input folder or inside it")
    if in_path.is_relative_to(out_path):
        raise ValueError(f"input folder {in_dir} must not be inside the output folder")
    return scan_folder(in_dir)


def shards(entries: list[Entry], size: int) -> list[list[Entry]]:
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    return [entries[i : i + size] for i in range(0, len(entries), size)]


def _row(run_id: str, entry: Entry, model_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in REPORT_COLUMNS}
    row.update(run_id=run_id, path=entry.rel, model_id=model_id, **fields)
    return row


def _output_path(out_dir: Path, rel: str) -> Path:
    dest = out_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(out_dir.resolve()):
        raise ImageError(f"output folder for {rel} resolves outside the output folder")
    if dest.is_symlink():
        raise ImageError(f"output {rel} is a link; refusing to write through it")
    return dest


def read_regular_file(path: Path) -> bytes:
    """A file's bytes, refusing what is not a regular file (a FIFO would block the run
    forever, a device could be endless)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ImageError("not a regular file (a FIFO, device or socket)")
    return path.read_bytes()


def _one_line(error: BaseException) -> str:
    """The error's first line; named by its type where it is not one of ours (a KeyError
    from a codec reads as "KeyError: 'XPM'", not "'XPM'")."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    if not isinstance(error, (ImageError, OSError)) or not line:
        line = f"{type(error).__name__}: {line}".rstrip(": ")
    return line[:300]


@dataclass
class _Pending:
    """A decoded input waiting for the model."""

    entry: Entry
    image: GrayImage
    digest: str
    mapped: np.ndarray  # in the model's look (paper 0, ink 1), shrunk if its strokes are wide
    info: ScanInfo
    seconds: float  # spent on it so far


@dataclass
class ShardTimings:
    """Where a shard's time went: seconds summed over files (reading and writing overlap
    the model in worker threads), and the shard's wall-clock span."""

    decode: float = 0.0
    model: float = 0.0
    encode: float = 0.0
    started: float = 0.0  # time.time() at the start and end of the shard
    ended: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


def clean_shard(
    entries: list[Entry],
    *,
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    checkpoint: Checkpoint,
    run_id: str,
    options: CleanOptions = CleanOptions(),
    timings: ShardTimings | None = None,
    model_reason: str | None = None,
) -> list[dict[str, Any]]:
    """Clean one shard of files; returns one report row per entry.

    The shard streams through in chunks: worker threads read and decode chunk k+1 and write
    chunk k-1 while the model denoises chunk k, so memory is bounded by a few chunks, not by
    the shard. Outputs are flushed to disk once per shard, then recorded in the manifest.
    """
    out_dir = Path(out_dir)
    clock = timings if timings is not None else ShardTimings()
    clock.started = time.time()
    manifest = Manifest(work_dir(out_dir) / "manifest.sqlite")
    done_by = checkpoint.model_id if options.rerun_other_models else None
    current = {} if options.overwrite else manifest.current([e.rel for e in entries], done_by)
    job = _ShardJob(out_dir, checkpoint, run_id, current, clock, options.tones, model_reason)
    chunk = max(options.batch_size or 0, 256)
    parts = [entries[i : i + chunk] for i in range(0, len(entries), chunk)]
    model, device = None, None
    rows: list[dict[str, Any]] = []
    written: list[Future] = []
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        reading = [pool.submit(job.read, e) for e in parts[0]] if parts else []
        for k in range(len(parts)):
            loaded = [f.result() for f in reading]
            if k + 1 < len(parts):  # read ahead while this chunk is denoised
                reading = [pool.submit(job.read, e) for e in parts[k + 1]]
            pending = [item for item in loaded if isinstance(item, _Pending)]
            rows += [item for item in loaded if not isinstance(item, _Pending)]
            if not pending:
                continue
            if model is None:
                device = resolve_device(options.device)
                model = load_model(checkpoint, device=device)
            # Denoise, in the model's look (the readers mapped tones and scale; writers map back).
            started = time.perf_counter()
            outputs = denoise_images(model, [p.mapped for p in pending], batch_size=options.batch_size,
                                     device=device, tile=options.tile, overlap=options.overlap)
            share = (time.perf_counter() - started) / len(pending)
            clock.model += share * len(pending)
            written += [pool.submit(job.write, item, out, share)
                        for item, out in zip(pending, outputs, strict=True)]
            while len(written) > 2 * chunk:  # at most two chunks of outputs in flight
                rows.append(written.pop(0).result())
        rows += [f.result() for f in written]
    if job.records:
        os.sync()  # one flush for the shard's outputs, before the manifest vouches for them
        manifest.record_many(job.records)
    clock.ended = time.time()
    log.info("shard of %d files: %d cleaned", len(entries), len(job.records))
    return sorted(rows, key=lambda r: r["path"])


class _ShardJob:
    """The per-file steps of a shard, run in worker threads."""

    def __init__(self, out_dir: Path, checkpoint: Checkpoint, run_id: str, current: dict[str, str],
                 clock: ShardTimings, tones: str, reason: str | None) -> None:
        self.out_dir, self.model_id, self.run_id = out_dir, checkpoint.model_id, run_id
        self.headroom, self.tones, self.reason = model_headroom(checkpoint.metadata), tones, reason
        self.tmp_dir = work_dir(out_dir) / "tmp"
        self.current, self.clock = current, clock
        self.records: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()

    def row(self, entry: Entry, **fields: Any) -> dict[str, Any]:
        return _row(self.run_id, entry, self.model_id, model_reason=self.reason, **fields)

    def read(self, entry: Entry) -> _Pending | dict[str, Any]:
        """Hash and decode one input: a _Pending, or a finished row (skipped or error)."""
        started = time.perf_counter()
        try:
            if entry.skip:
                return self.row(entry, status="skipped", error=entry.skip)
            if entry.problem:
                raise ImageError(entry.problem)
            content = read_regular_file(entry.path)
            digest = hashlib.sha256(content).hexdigest()
            if self.current.get(entry.rel) == digest:
                return self.row(entry, status="skipped", input_sha256=digest,
                                output_path=str(self.out_dir / entry.rel),
                                seconds=time.perf_counter() - started)
            image = read_image(entry.path, content)
            mapped, info = prepare(image.pixels, headroom=self.headroom)
            return _Pending(entry, image, digest, mapped, info, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - whatever one file does, it is that file's row
            return self.row(entry, status="error", error=_one_line(error),
                            seconds=time.perf_counter() - started)
        finally:
            with self._lock:
                self.clock.decode += time.perf_counter() - started

    def write(self, item: _Pending, result: np.ndarray, model_seconds: float) -> dict[str, Any]:
        """Write one output atomically; its report row."""
        started = time.perf_counter()
        image, entry = item.image, item.entry
        info = item.info
        base = dict(format=image.format, mode=image.mode, width=image.width, height=image.height,
                    inverted=info.inverted, paper=info.paper, ink=info.ink, scale=info.scale,
                    input_sha256=item.digest)
        try:
            cleaned = finish(result, info, image.pixels.shape, tone=self.tones)
            dest = _output_path(self.out_dir, entry.rel)
            # The temporary file lives in OUT_DIR/.denoiser/tmp, so a killed run leaves
            # nothing half-written among the outputs, and the next run sweeps it away.
            with atomic_path(dest, tmp_dir=self.tmp_dir, durable=False) as tmp:
                write_like(image, cleaned, tmp)
        except Exception as error:  # noqa: BLE001 - whatever one file does, it is that file's row
            return self.row(entry, status="error", error=_one_line(error),
                            seconds=item.seconds + model_seconds + time.perf_counter() - started, **base)
        finally:
            with self._lock:
                self.clock.encode += time.perf_counter() - started
        row = self.row(
            entry, status="ok", output_path=str(dest),
            recon_mse=float(np.mean((cleaned - image.pixels) ** 2)),
            noise_sigma_in=noise_sigma(image.pixels), noise_sigma_out=noise_sigma(cleaned),
            seconds=item.seconds + model_seconds + time.perf_counter() - started, **base,
        )
        with self._lock:
            self.records.append((entry.rel, item.digest, self.model_id, str(dest)))
        return row


def dry_run(entries: list[Entry], *, out_dir: str | os.PathLike[str], model_id: str | None,
            overwrite: bool = False, rerun_other_models: bool = True) -> list[dict[str, Any]]:
    """What a run would do, writing nothing: status "todo", "skipped" or "error" per file."""
    manifest = Manifest(work_dir(out_dir) / "manifest.sqlite", create=False)
    done_by = model_id if rerun_other_models else None
    skip_none = overwrite or (model_id is None and rerun_other_models)
    current = {} if skip_none else manifest.current([e.rel for e in entries], done_by)
    rows = []
    for entry in entries:
        if entry.skip or entry.problem:
            rows.append(_row("dry-run", entry, model_id or "", status="skipped" if entry.skip else "error",
                             error=entry.skip or entry.problem))
            continue
        try:
            content = read_regular_file(entry.path)
            digest = hashlib.sha256(content).hexdigest()
            read_image(entry.path, content)  # decoding finds the bad files without writing
        except Exception as error:  # noqa: BLE001 - a dry run reports what a run would
            rows.append(_row("dry-run", entry, model_id or "", status="error", error=_one_line(error)))
            continue
        done = current.get(entry.rel) == digest
        rows.append(_row("dry-run", entry, model_id or "", status="skipped" if done else "todo",
                         input_sha256=digest))
    return rows


def report_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the report's columns and types, sorted by path."""
    frame = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    frame = frame.astype(REPORT_COLUMNS)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def counts(frame: pd.DataFrame) -> dict[str, int]:
    return {status: int((frame["status"] == status).sum()) for status in STATUSES}
