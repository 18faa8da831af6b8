"""The per-file steps of cleaning, run in worker threads: read and decode, then write.

Whatever one file does (a disguised format, a FIFO, a link swapped in, a codec that raises
``KeyError``), it ends as that file's report row with a one-line reason; it never stops
the shard. Decoded pixels are reserved from a :class:`PixelBudget` (one per process, shared
by its shards) before decoding and given back once the output is written, so memory is
bounded by the budget, not by the files' sizes, the shard's length or the shard count.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from denoiser.folders.encode import encode
from denoiser.folders.read import Entry, GrayImage, ImageError, read_image
from denoiser.folders.report import KNOWN_BAD, error_line, new_row
from denoiser.folders.safe_read import read_input
from denoiser.folders.workdir import is_disk_full
from denoiser.models.checkpoint import Checkpoint
from denoiser.out_tree import OutTree
from denoiser.scans.batch import Cleaned
from denoiser.scans.restore import model_headroom


class PixelBudget:
    """Decoded pixels in flight: :meth:`reserve` blocks while the budget is spent, except
    that one file larger than the whole budget may go when nothing else is held."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held, self.waiting = limit, 0, 0
        self._cond = threading.Condition()

    def reserve(self, pixels: int) -> None:
        with self._cond:
            self.waiting += 1
            try:
                self._cond.wait_for(lambda: self.held == 0 or self.held + pixels <= self.limit)
            finally:
                self.waiting -= 1
            self.held += pixels

    def release(self, pixels: int) -> None:
        if pixels:
            with self._cond:
                self.held -= pixels
                self._cond.notify_all()


def fetch(entry: Entry, in_dir: str | Path, max_bytes: int) -> tuple[bytes, str]:
    """An entry's bytes, read safely (:func:`denoiser.folders.safe_read.read_input`), and their hash."""
    if entry.problem:
        raise ImageError(entry.problem)
    content = read_input(in_dir, entry.path, max_bytes=max_bytes)
    return content, hashlib.sha256(content).hexdigest()


@dataclass
class Pending:
    """A decoded input waiting for the model."""

    entry: Entry
    image: GrayImage
    digest: str
    pixels: int  # reserved from the budget
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


class FileSteps:
    """Read one file into a :class:`Pending`, write one result; each returns a report row
    when the file is done (skipped, failed or written). Outputs are written through ``tree``
    (:class:`denoiser.out_tree.OutTree`), never through a link. A full disk is no file's
    fault: the write returns None, sets :attr:`disk_full`, and the shard stops."""

    def __init__(self, *, in_dir: str | Path, tree: OutTree, tmp_dir: str, checkpoint: Checkpoint,
                 run_id: str, current: dict[str, str], clock: ShardTimings,
                 known_bad: dict[str, tuple[str, str]] | None = None,
                 reason: str | None, max_bytes: int, budget: PixelBudget,
                 encode: Callable[[GrayImage, np.ndarray | list[np.ndarray]], bytes] = encode, png_level: int = 6,
                 max_pixels: int | None = None) -> None:
        self.in_dir, self.tree, self.out_dir, self.tmp_dir = in_dir, tree, tree.path, tmp_dir
        self.disk_full = threading.Event()
        self.model_id, self.run_id, self.reason = checkpoint.model_id, run_id, reason
        self.headroom = model_headroom(checkpoint.metadata)
        self.current, self.clock, self.max_bytes, self.budget = current, clock, max_bytes, budget
        self.encode = encode  # denoiser.folders.encode.encode, or a RenderPool running it in processes
        self.png_level, self.max_pixels = png_level, max_pixels
        self.records: list[tuple[str, str, str, str]] = []  # written, not yet in the manifest
        self.known_bad = known_bad or {}  # rel -> (sha256, error) of contents that failed before
        self.failures: list[tuple[str, str, str]] = []  # (rel, sha256, error): unreadable, not yet recorded
        self.held = 0  # pixels this shard holds in the (shared) budget
        self._lock = threading.Lock()

    def release(self, pixels: int) -> None:
        self.budget.release(pixels)
        with self._lock:
            self.held -= pixels

    def release_all(self) -> None:
        """Give back whatever this shard still holds (after a failure: decoded, never written)."""
        with self._lock:
            held, self.held = self.held, 0
        self.budget.release(held)

    def count(self, **seconds: float) -> None:
        """Add ``seconds`` to the shard's timings (decode, model, encode) from any thread."""
        with self._lock:
            for part, value in seconds.items():
                setattr(self.clock, part, getattr(self.clock, part) + value)

    def row(self, entry: Entry, **fields: Any) -> dict[str, Any]:
        return new_row(self.run_id, entry.rel, self.model_id, model_reason=self.reason, **fields)

    def read(self, entry: Entry) -> Pending | dict[str, Any]:
        """Hash and decode one input: a Pending, or a finished row (skipped or error)."""
        started = time.perf_counter()
        reserved = 0

        def reserve(pixels: int) -> None:
            nonlocal reserved
            self.budget.reserve(pixels)
            with self._lock:
                self.held += pixels
            reserved = pixels

        try:
            if entry.skip:
                return self.row(entry, status="skipped", error=entry.skip)
            content, digest = fetch(entry, self.in_dir, self.max_bytes)
            if self.current.get(entry.rel) == digest:
                return self.row(entry, status="skipped", input_sha256=digest,
                                output_path=str(self.out_dir / entry.rel),
                                seconds=time.perf_counter() - started)
            bad = self.known_bad.get(entry.rel)
            if bad is not None and bad[0] == digest:
                return self.row(entry, status="skipped", input_sha256=digest, error=f"{KNOWN_BAD}: {bad[1]}",
                                seconds=time.perf_counter() - started)
            try:
                image = read_image(entry.path, content, reserve=reserve, max_pixels=self.max_pixels)
            except ImageError as error:  # the content's fault: the same content is not tried again
                with self._lock:
                    self.failures.append((entry.rel, digest, error_line(error)))
                raise
            del content
            if image.format == "PNG":
                image.save_options["compress_level"] = self.png_level
            return Pending(entry, image, digest, reserved, time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - whatever one file does, it is that file's row
            self.release(reserved)
            return self.row(entry, status="error", error=error_line(error),
                            seconds=time.perf_counter() - started)
        finally:
            with self._lock:
                self.clock.decode += time.perf_counter() - started

    def write(self, item: Pending, results: list[Cleaned | Exception], model_seconds: float) -> dict[str, Any] | None:
        """Write one output atomically from the results of its pages; its report row (an
        error row when a page's result is the exception that stopped it), or None when the
        disk is full. The row's figures are the first page's."""
        started = time.perf_counter()
        image, entry = item.image, item.entry
        base: dict[str, Any] = dict(format=image.format, mode=image.mode, width=image.width,
                                    height=image.height, input_sha256=item.digest, pages=1 + len(image.pages))
        try:
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            result = results[0]
            assert isinstance(result, Cleaned)
            info = result.info
            base.update(inverted=info.inverted, paper=info.paper, ink=info.ink, scale=info.scale)
            pixels = [r.pixels for r in results]  # type: ignore[union-attr]
            data = self.encode(image, pixels if image.pages else pixels[0])
            if self.disk_full.is_set():
                return None
            # The temporary file lives in OUT_DIR/.denoiser/tmp, so a killed run leaves
            # nothing half-written among the outputs, and the next run sweeps it away; the
            # folders on the way are opened by descriptor, never through a link.
            self.tree.write_bytes(entry.rel, data, tmp_dir=self.tmp_dir, durable=False, replace_links=False)
            dest = self.out_dir / entry.rel
            row = self.row(entry, status="ok", output_path=str(dest),
                           seconds=item.seconds + model_seconds + time.perf_counter() - started, **base,
                           **result.fields)
        except Exception as error:  # noqa: BLE001 - whatever one file does, it is that file's row
            if is_disk_full(error):
                self.disk_full.set()
                return None
            return self.row(entry, status="error", error=error_line(error),
                            seconds=item.seconds + model_seconds + time.perf_counter() - started, **base)
        finally:
            self.release(item.pixels)
            with self._lock:
                self.clock.encode += time.perf_counter() - started
        with self._lock:
            self.records.append((entry.rel, item.digest, self.model_id, str(dest)))
        return row

    def take_failures(self) -> list[tuple[str, str, str]]:
        """The unreadable inputs not yet handed to the manifest (each handed once)."""
        with self._lock:
            taken, self.failures = self.failures, []
        return taken

    def take_records(self, at_least: int = 1) -> list[tuple[str, str, str, str]]:
        """The written files not yet handed to the manifest (each handed once), if there
        are ``at_least`` of them."""
        with self._lock:
            if len(self.records) < at_least:
                return []
            taken, self.records = self.records, []
        return taken

