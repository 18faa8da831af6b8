"""Folder-in/folder-out cleaning of real scans with a trained model (no noise is added).

    entries = plan(in_dir, out_dir)              # sorted image files, hidden ones left out
    for part in shards(entries, 2000):
        rows = clean_shard(part, in_dir=..., out_dir=..., checkpoint=..., run_id=...)

Every output lands at the same relative path under ``out_dir``, written to a temporary
file in ``out_dir/.denoiser/tmp`` and renamed into place, so a killed run never leaves a
partial output. ``in_dir`` is only read. A file that cannot be processed becomes a row with
``status = "error"`` and a one-line reason (:mod:`denoiser.folders.steps`); the others go on.
Finished files are recorded in the manifest as they complete, chunk by chunk, so a shard
that fails or is retried keeps, and then skips, what it finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from denoiser import memory
from denoiser.folders.encode import RenderPool
from denoiser.folders.manifest import Manifest
from denoiser.folders.model_choice import ModelChoice, cached_model, cached_quality, cached_shapes
from denoiser.folders.read import Entry
from denoiser.folders.settings import CleanOptions
from denoiser.folders.steps import FileSteps, Pending, PixelBudget, ShardTimings
from denoiser.folders.workdir import TMP, DiskFull, ensure_reserve, open_tree, release_reserve
from denoiser.models.checkpoint import Checkpoint
from denoiser.models.device import resolve_device
from denoiser.out_tree import OutTree
from denoiser.scans.batch import BatchTimings, clean_batch

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


def clean_shard(
    entries: list[Entry],
    *,
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: ModelChoice | Checkpoint,
    run_id: str,
    options: CleanOptions = CleanOptions(),
    timings: ShardTimings | None = None,
) -> list[dict[str, Any]]:
    """Clean one shard of files with ``model`` (a :class:`ModelChoice`, or a checkpoint used
    alone in float32); returns one report row per entry.

    Reader threads hash and decode files while the model denoises the last batch and
    writer threads encode the batch before; decoded pixels in flight are bounded by
    :data:`HELD_PIXELS`. Written files are flushed to disk and recorded in the manifest
    after every batch, so a retried shard skips what it finished.
    """
    choice = model if isinstance(model, ModelChoice) else ModelChoice.of(model)
    clock = timings if timings is not None else ShardTimings()
    clock.started = time.time()
    memory.for_scans()  # freed image arrays go back to the system (denoiser.memory)
    with open_tree(out_dir) as tree:
        return _clean_shard(entries, tree, in_dir=in_dir, choice=choice, run_id=run_id, options=options,
                            clock=clock)


def _clean_shard(entries: list[Entry], tree: OutTree, *, in_dir: str | os.PathLike[str], choice: ModelChoice,
                 run_id: str, options: CleanOptions, clock: ShardTimings) -> list[dict[str, Any]]:
    checkpoint = choice.checkpoint()
    shapes = cached_shapes(choice.shapes)
    shape_model = shapes.for_model(checkpoint.model_id, choice.parent) if shapes is not None else None
    quality_model = cached_quality(choice.quality)
    manifest = Manifest.of(tree)
    done_by = checkpoint.model_id if choice.rerun else None
    current = {} if options.overwrite else manifest.current([e.rel for e in entries], done_by)
    retry = options.overwrite or options.retry_errors
    known_bad = {} if retry else manifest.known_bad([e.rel for e in entries])
    budget = _BUDGET
    tree.make_folder(TMP)
    ensure_reserve(tree)  # room for the manifest to record what was written if the disk fills
    steps = FileSteps(in_dir=in_dir, tree=tree, tmp_dir=TMP,
                      checkpoint=checkpoint, run_id=run_id, current=current, clock=clock, known_bad=known_bad,
                      reason=choice.reason, png_level=options.png_level,
                      max_bytes=int(options.max_file_mb * 10**6), budget=budget,
                      encode=RenderPool(options.encode_processes), max_pixels=options.max_pixels)
    device = resolve_device(options.device)
    precision = choice.resolved_precision  # decided once, when the model was chosen
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
        failures = steps.take_failures()
        if failures:
            manifest.record_failures(failures)
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
