"""Folder-in/folder-out cleaning of real scans with a trained model (no noise is added).

    entries = plan(in_dir, out_dir)              # sorted image files, hidden ones left out
    for part in shards(entries, 2000):
        rows = clean_shard(part, in_dir=..., out_dir=..., checkpoint=..., run_id=...)

Every output lands at the same relative path under ``out_dir``, written to a temporary
file in ``out_dir/.denoiser/tmp`` and renamed into place, so a killed run never leaves a
partial output. ``in_dir`` is only read. A file that cannot be processed becomes a row with
``status = "error"`` and a one-line reason (:mod:`denoiser.file_steps`); the others go on.
Finished files are recorded in the manifest as they complete, chunk by chunk, so a shard
that fails or is retried keeps, and then skips, what it finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from denoiser import memory
from denoiser.checkpoint import Checkpoint, load_model
from denoiser.choices import MAX_PIXELS, TONES
from denoiser.clean_report import error_line, new_row
from denoiser.device import resolve_device
from denoiser.precision import resolve_precision
from denoiser.file_steps import FileSteps, Pending, PixelBudget, ShardTimings, fetch
from denoiser.images import Entry, read_image, scan_folder
from denoiser.manifest import Manifest
from denoiser.out_tree import OutTree
from denoiser.render import RenderPool
from denoiser.safe_fs import MAX_FILE_MB
from denoiser.scan_batch import BatchTimings, clean_batch
from denoiser.quality_net import QualityEstimator, load_quality
from denoiser.shapes import ShapeModel, load_shapes
from denoiser.workdir import TMP, DiskFull, ensure_reserve, open_tree, release_reserve

log = logging.getLogger(__name__)

#: Decoded pixels held at once by all shards of a process (read ahead, on the model, being
#: written), beyond one file larger than this: with the working copies made on the way,
#: about 20-25 bytes each, so ~200 MB whatever the files' sizes.
HELD_PIXELS = 8 * 2**20

_BUDGET = PixelBudget(HELD_PIXELS)  # one per process: shards running together share it
#: Written files are flushed to disk and recorded in the manifest in groups of this many
#: (a flush costs about as much as writing a few dozen files).
COMMIT_EVERY = 500
#: Pixels (in the model's look) sent to the model together.
BATCH_PIXELS = 2 * 2**20


@dataclass(frozen=True)
class CleanOptions:
    batch_size: int | None = None  # None: infer.default_batch_size for the device
    tile: int = 256
    overlap: int = 32
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"  # denoiser.precision: auto, fp32 or bf16
    workers: int = 2  # threads reading and writing beside the model
    #: processes encoding outputs (denoiser.render); 0: in the writing threads, which measured
    #: faster on small scans (479 against 319 images/s with one process, 2 cores)
    encode_processes: int = 0
    tones: str = "keep"  # keep the scan's paper and ink, or "normalize" to full contrast
    #: zlib level of PNG outputs: 6 (Pillow's) measured no slower than 1-3 on small scans;
    #: on 2000x2000 scans 3 encodes about a third faster for files about 8% larger
    png_level: int = 6
    rerun_other_models: bool = True  # clean again files that another model cleaned
    #: the digit-shape model's weights (denoiser.shapes) that flags non-digits; None: no such check
    shapes: str | None = None
    #: the learned PSNR estimate's weights (denoiser.quality_net) for the cleaning model;
    #: None: the analytic one
    quality: str | None = None
    max_file_mb: float = MAX_FILE_MB  # larger input files are error rows, never read
    #: files that would decode to more pixels (all pages) are error rows, never decoded
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.tones not in TONES:
            raise ValueError(f"unknown tones {self.tones!r}; choose one of {', '.join(TONES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.max_file_mb <= 0:
            raise ValueError(f"max_file_mb must be > 0, got {self.max_file_mb}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if not 0 <= self.png_level <= 9:
            raise ValueError(f"png_level must be 0-9, got {self.png_level}")


def plan(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
         report: str | os.PathLike[str] | None = None) -> list[Entry]:
    """The input files to consider, after :func:`check_folders`."""
    check_folders(in_dir, out_dir, report)
    return scan_folder(in_dir)


def check_folders(in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                  report: str | os.PathLike[str] | None = None) -> None:
    """Check that the folders (and the report's path) make sense together, without reading
    the input tree: nothing is ever written inside ``in_dir``."""
    in_path, out_path = Path(in_dir).resolve(), Path(out_dir).resolve()
    if not in_path.is_dir():
        raise FileNotFoundError(f"input folder {in_dir} does not exist or is not a folder")
    if report is not None and Path(report).resolve().is_relative_to(in_path):
        raise ValueError(f"report {report} must not be inside the input folder {in_dir}")
    if out_path == in_path or out_path.is_relative_to(in_path):
        raise ValueError(f"output folder {out_dir} must not be the input folder or inside it")
    if in_path.is_relative_to(out_path):
        raise ValueError(f"input folder {in_dir} must not be inside the output folder")


def shards(entries: list[Entry], size: int) -> list[list[Entry]]:
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    return [entries[i : i + size] for i in range(0, len(entries), size)]


_MODELS: dict[tuple, torch.nn.Module] = {}
_MODELS_LOCK = threading.Lock()
_SHAPES: dict[tuple, ShapeModel] = {}
_QUALITY: dict[tuple, QualityEstimator] = {}


def cached_model(checkpoint: Checkpoint, device: str | torch.device) -> torch.nn.Module:
    """The checkpoint's model, loaded once per process and shared by its shards
    (:func:`denoiser.infer.denoise_images` works on its own copy of it)."""
    info = os.stat(checkpoint.weights)
    key = (str(checkpoint.weights), info.st_mtime_ns, info.st_size, str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()  # one model at a time: a long-lived server switches, not piles up
            _MODELS[key] = load_model(checkpoint, device=device)
        return _MODELS[key]


def cached_shapes(weights: str | None) -> ShapeModel | None:
    """The shape model at ``weights``, loaded once per process (None for None)."""
    if weights is None:
        return None
    info, meta = os.stat(weights), os.stat(Path(weights).with_suffix(".json"))  # calibrations go there
    key = ("shapes", weights, info.st_mtime_ns, info.st_size, meta.st_mtime_ns)
    with _MODELS_LOCK:
        if key not in _SHAPES:
            _SHAPES.clear()
            _SHAPES[key] = load_shapes(weights)
        return _SHAPES[key]


def cached_quality(weights: str | None) -> QualityEstimator | None:
    """The quality estimator at ``weights``, loaded once per process (None for None)."""
    if weights is None:
        return None
    info = os.stat(weights)
    key = ("quality", weights, info.st_mtime_ns, info.st_size)
    with _MODELS_LOCK:
        if key not in _QUALITY:
            _QUALITY.clear()
            _QUALITY[key] = load_quality(weights)
        return _QUALITY[key]


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

    Reader threads hash and decode files while the model denoises the last batch and
    writer threads encode the batch before; decoded pixels in flight are bounded by
    :data:`HELD_PIXELS`. Written files are flushed to disk and recorded in the manifest
    after every batch, so a retried shard skips what it finished.
    """
    out_dir = Path(out_dir)
    clock = timings if timings is not None else ShardTimings()
    clock.started = time.time()
    memory.for_scans()  # freed image arrays go back to the system (denoiser.memory)
    shapes = cached_shapes(options.shapes)
    shape_model = shapes.for_model(checkpoint.model_id) if shapes is not None else None
    quality_model = cached_quality(options.quality)
    with open_tree(out_dir) as tree:
        return _clean_shard(entries, tree, in_dir=in_dir, checkpoint=checkpoint, run_id=run_id, options=options,
                            clock=clock, model_reason=model_reason, shape_model=shape_model,
                            quality_model=quality_model)


def _clean_shard(entries: list[Entry], tree: OutTree, *, in_dir: str | os.PathLike[str], checkpoint: Checkpoint,
                 run_id: str, options: CleanOptions, clock: ShardTimings, model_reason: str | None,
                 shape_model: Any, quality_model: Any) -> list[dict[str, Any]]:
    manifest = Manifest.of(tree)
    done_by = checkpoint.model_id if options.rerun_other_models else None
    current = {} if options.overwrite else manifest.current([e.rel for e in entries], done_by)
    budget = _BUDGET
    tree.make_folder(TMP)
    ensure_reserve(tree)  # room for the manifest to record what was written if the disk fills
    steps = FileSteps(in_dir=in_dir, tree=tree, tmp_dir=TMP,
                      checkpoint=checkpoint, run_id=run_id, current=current, clock=clock,
                      tones=options.tones, reason=model_reason, png_level=options.png_level,
                      max_bytes=int(options.max_file_mb * 10**6), budget=budget,
                      encode=RenderPool(options.encode_processes), max_pixels=options.max_pixels)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    ahead = max(options.batch_size or 0, 256)  # files submitted for reading ahead of the model
    todo = deque(entries)
    rows: list[dict[str, Any]] = []
    reading: set[Future] = set()
    writing: set[Future] = set()
    batch: list[Pending] = []
    cleaned = 0

    def flush(final: bool = False) -> None:
        nonlocal cleaned
        finished = [f for f in writing if f.done() or final]
        for future in finished:
            row = future.result()
            if row is not None:  # None: not written, the disk is full
                rows.append(row)
            writing.discard(future)
        records = steps.take_records(1 if final else COMMIT_EVERY)
        if records and steps.disk_full.is_set():
            release_reserve(tree)
        if records:
            os.sync()  # the outputs reach the disk before the manifest vouches for them
            manifest.record_many(records)
            cleaned += len(records)

    with contextlib.ExitStack() as stack:
        stack.callback(steps.release_all)  # runs last, once both pools have finished
        readers = stack.enter_context(ThreadPoolExecutor(options.workers, "read"))
        writers = stack.enter_context(ThreadPoolExecutor(options.workers, "write"))
        try:
            while todo or reading or batch:
                if steps.disk_full.is_set():
                    raise DiskFull(tree.path)
                while todo and len(reading) < ahead:
                    reading.add(readers.submit(steps.read, todo.popleft()))
                pixels = sum(p.image.size for p in batch)
                stalled = bool(batch) and budget.waiting >= min(len(reading), options.workers)
                if batch and (not reading or stalled or len(batch) >= ahead or pixels >= BATCH_PIXELS):
                    model = cached_model(checkpoint, device)
                    parts = BatchTimings()
                    results = clean_batch(model, [px for p in batch for px in p.image.all_pixels],
                                          headroom=steps.headroom,
                                          tones=options.tones, device=device, batch_size=options.batch_size,
                                          tile=options.tile, overlap=options.overlap, precision=precision,
                                          shape_model=shape_model, quality_model=quality_model,
                                          timings=parts)
                    steps.count(decode=parts.prepare, model=parts.model, encode=parts.finish)
                    share = (parts.prepare + parts.model + parts.finish) / len(batch)
                    first = 0
                    for item in batch:  # each file's pages' results, in order
                        pages = 1 + len(item.image.pages)
                        writing.add(writers.submit(steps.write, item, results[first : first + pages], share))
                        first += pages
                    batch = []
                    flush()
                    continue
                done, reading = wait(reading, timeout=0.05, return_when=FIRST_COMPLETED)
                for future in done:
                    item = future.result()
                    (batch if isinstance(item, Pending) else rows).append(item)
        except BaseException:
            for future in reading:
                future.cancel()
            for item in batch:  # readers waiting for pixels go on, so the pools can close
                steps.release(item.pixels)
            batch = []
            raise
        finally:  # what was written is recorded, even when the shard fails
            flush(final=True)
    if steps.disk_full.is_set():  # the last writes filled it
        raise DiskFull(tree.path)
    clock.ended = time.time()
    log.info("shard of %d files: %d cleaned", len(entries), cleaned)
    return sorted(rows, key=lambda r: r["path"])


def dry_run(entries: list[Entry], *, in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
            model_id: str | None, overwrite: bool = False, rerun_other_models: bool = True,
            max_file_mb: float = MAX_FILE_MB, max_pixels: int = MAX_PIXELS) -> list[dict[str, Any]]:
    """What a run would do, writing nothing: status "todo", "skipped" or "error" per file."""
    done_by = model_id if rerun_other_models else None
    skip_none = overwrite or (model_id is None and rerun_other_models)
    current = {}
    if not skip_none and os.path.isdir(out_dir):
        with OutTree(out_dir, create=False) as tree:
            current = Manifest.of(tree, create=False).current([e.rel for e in entries], done_by)
    rows = []
    for entry in entries:
        try:
            if entry.skip:
                rows.append(new_row("dry-run", entry.rel, model_id or "", status="skipped", error=entry.skip))
                continue
            content, digest = fetch(entry, in_dir, int(max_file_mb * 10**6))
            read_image(entry.path, content, max_pixels=max_pixels)  # decoding finds the bad files, writing nothing
        except Exception as error:  # noqa: BLE001 - a dry run reports what a run would
            rows.append(new_row("dry-run", entry.rel, model_id or "", status="error",
                                error=error_line(error)))
            continue
        done = current.get(entry.rel) == digest
        rows.append(new_row("dry-run", entry.rel, model_id or "", status="skipped" if done else "todo",
                            input_sha256=digest))
    return rows
