"""What a cleaning run will do, before it does it: the folders checked against each other,
the input files found (:func:`plan`), split into shards, and a dry run that says per file
what a run would do, writing nothing.

    entries = plan(in_dir, out_dir)              # sorted image files, hidden ones left out
    parts = shards(entries, 2000)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from denoiser.choices import MAX_PIXELS
from denoiser.folders.manifest import Manifest
from denoiser.folders.read import Entry, read_image, scan_folder
from denoiser.folders.report import error_line, new_row
from denoiser.folders.safe_read import MAX_FILE_MB
from denoiser.folders.steps import fetch
from denoiser.out_tree import OutTree


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


def shards(entries: list[Entry], size: int, processes: int = 0) -> list[list[Entry]]:
    """``entries`` in shards of ``size`` files; for ``processes`` > 1 worker processes, as
    many shards as a multiple of ``processes``, as even as can be and none over ``size``, so
    that no process idles through the last round."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    if processes <= 1 or not entries:
        return [entries[i : i + size] for i in range(0, len(entries), size)]
    rounds = math.ceil(math.ceil(len(entries) / size) / processes)
    count = min(len(entries), rounds * processes)
    base, extra = divmod(len(entries), count)
    bounds = [0]
    for i in range(count):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return [entries[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


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
