"""The cleaning manifest: which input content was cleaned by which model into which file.

A SQLite file under ``OUT_DIR/.denoiser/`` (safe for concurrent shards and crash-safe:
a row is committed only after its output file is in place). A rerun skips an input whose
content hash and model id match its row and whose output still exists. A path that is not
UTF-8 is stored as its bytes (:func:`denoiser.files.name_key`).

A manifest that SQLite cannot read raises :class:`ManifestError`; :func:`rebuild` sets it
aside and derives a new one from the shard reports of earlier runs, keeping only the rows
whose output still exists and whose input still has the recorded hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from denoiser.files import name_key
from denoiser.folders.read import ImageError
from denoiser.folders.safe_read import read_input
from denoiser.folders.workdir import MANIFEST, DiskFull, is_disk_full
from denoiser.out_tree import LinkRefused, OutTree, split

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    output_path TEXT NOT NULL,
    cleaned_at TEXT NOT NULL
)
"""
#: Inputs whose content could not be read as an image: a later run skips the same content as
#: known bad (no new error, no error rate) until it changes or ``--retry-errors`` is given.
_FAILED_SCHEMA = """
CREATE TABLE IF NOT EXISTS failed (
    path TEXT PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL
)
"""


def sqlite_path(tree: OutTree, rel: str) -> str:
    """A path SQLite can open for the database ``rel`` under OUT_DIR that passes through no
    link: its folder by the tree's open descriptor (kept open for the tree's life). The
    database and its journals must be regular files or absent (a link is refused)."""
    *folder, name = split(rel)
    with tree.folder(tuple(folder), create=True, keep=True) as parent:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                mode = os.stat(name + suffix, dir_fd=parent, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                what = "a link" if stat.S_ISLNK(mode) else "not a regular file"
                raise LinkRefused(f"{tree.shown(rel + suffix)} is {what}; refusing to open it")
        if os.path.isdir(f"/proc/self/fd/{parent}"):
            return f"/proc/self/fd/{parent}/{name}"
    return str(tree.path / rel)  # no /proc: the checks above are what holds


class ManifestError(ValueError):
    """The manifest exists but SQLite cannot read it."""


class Manifest:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, tree: OutTree | None = None,
                 shown: str | None = None) -> None:
        """Open (or with ``create``, make) the manifest; a missing one reads as empty. Use
        :meth:`of` for OUT_DIR's: ``tree`` then checks outputs without following links."""
        self.path, self.tree, self.shown = Path(path), tree, shown or str(path)
        self.exists = self.path.is_file()
        if not create:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.exists = True
        for attempt in range(100):  # shards starting together on a new folder: one sets it up
            try:
                with self._connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute(_SCHEMA)
                    db.execute(_FAILED_SCHEMA)
                return
            except sqlite3.OperationalError as error:
                if is_disk_full(error) and self.tree is not None:
                    raise DiskFull(self.tree.path) from None
                if "locked" not in str(error) or attempt == 99:
                    raise
                time.sleep(0.1)

    @classmethod
    def of(cls, tree: OutTree, *, create: bool = True) -> Manifest:
        """OUT_DIR's manifest (``.denoiser/manifest.sqlite``), opened through the tree's
        folder (a link in its place is refused); without ``create`` nothing is made, and
        an absent one reads as empty."""
        if not create and tree.lstat(MANIFEST) is None:
            return cls(tree.shown(MANIFEST), create=False, tree=tree, shown=tree.shown(MANIFEST))
        return cls(sqlite_path(tree, MANIFEST), create=create, tree=tree, shown=tree.shown(MANIFEST))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed."""
        try:
            db = sqlite3.connect(self.path, timeout=60)
        except sqlite3.Error as error:
            raise ManifestError(f"cannot open the manifest {self.shown}: {error}") from None
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as error:
            if is_disk_full(error):
                raise DiskFull(self.tree.path if self.tree is not None else self.path.parent) from None
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise
            raise ManifestError(f"the manifest {self.shown} is corrupt or not a manifest ({error}); "
                                "it can be rebuilt from the run reports") from None
        finally:
            db.close()

    def current(self, rels: list[str], model_id: str | None) -> dict[str, str]:
        """``{rel: input_sha256}`` of the ``rels`` cleaned by ``model_id`` (None: by any model)
        whose output exists, in one query per thousand paths (a shard asks once, not once per
        file)."""
        if not self.exists or not rels:
            return {}
        keys = {name_key(rel): rel for rel in rels}
        which = "" if model_id is None else "model_id = ? AND "
        query = f"SELECT path, input_sha256, output_path FROM files WHERE {which}path IN ({{marks}})"
        with self._connect() as db:
            rows = _by_path(db, query, list(keys), () if model_id is None else (model_id,))
            return {keys[key]: sha for key, sha, out in rows if self._output_exists(keys[key], os.fsdecode(out))}

    def known_bad(self, rels: list[str]) -> dict[str, tuple[str, str]]:
        """``{rel: (input_sha256, error)}`` of the ``rels`` whose content failed to be read as
        an image on an earlier run (:meth:`record_failures`)."""
        if not self.exists or not rels:
            return {}
        keys = {name_key(rel): rel for rel in rels}
        with self._connect() as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'failed'").fetchone():
                return {}  # a manifest from before the table, opened without create
            rows = _by_path(db, "SELECT path, input_sha256, error FROM failed WHERE path IN ({marks})", list(keys))
            return {keys[key]: (sha, error) for key, sha, error in rows}

    def record_failures(self, failures: list[tuple[str, str, str]]) -> None:
        """Record (rel, input_sha256, error) of inputs that could not be read as images."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?)",
                           [(name_key(rel), sha, error, stamp) for rel, sha, error in failures])

    def _output_exists(self, rel: str, output: str) -> bool:
        """Whether the output is still a regular file (a link in its place is not one)."""
        if self.tree is not None:
            return self.tree.is_file(rel)
        try:
            return stat.S_ISREG(os.lstat(output).st_mode)
        except OSError:
            return False

    def check(self) -> None:
        """Raise :class:`ManifestError` unless SQLite reads the manifest whole (a quick check
        before a run, so a damaged one is one line rather than a failed shard)."""
        if not self.exists:
            return
        with self._connect() as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            db.execute("SELECT COUNT(*) FROM files").fetchone()
        if verdict != "ok":
            raise ManifestError(f"the manifest {self.shown} is corrupt ({verdict}); it can be rebuilt from "
                                "the run reports")

    def record_many(self, records: list[tuple[str, str, str, str]]) -> None:
        """Record (rel, input_sha256, model_id, output_path) rows in one transaction."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                           [(name_key(rel), sha, model, name_key(out), stamp)
                            for rel, sha, model, out in records])
            db.executemany("DELETE FROM failed WHERE path = ?", [(name_key(rel),) for rel, *_ in records])

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])


def rebuild(tree: OutTree, in_dir: str | os.PathLike[str], shard_reports: list[str], *, max_bytes: int) -> int:
    """Set OUT_DIR's manifest aside (``.corrupt-<time>``) and derive a new one from
    ``shard_reports`` (paths under OUT_DIR, oldest first; a later row for a path wins). A
    row is kept only if its output (the same relative path under OUT_DIR) is a regular
    file and its input, read again, has the hash the report recorded. Returns how many rows
    the new manifest holds."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        if tree.lstat(MANIFEST + suffix) is not None:
            tree.rename(MANIFEST + suffix, f"{MANIFEST}.corrupt-{stamp}{suffix}")
    latest: dict[str, tuple[str, str]] = {}
    for report in shard_reports:
        try:
            frame = pd.read_parquet(io.BytesIO(tree.read_bytes(report)),
                                    columns=["path", "path_bytes", "status", "input_sha256", "model_id"])
        except Exception:  # noqa: BLE001 - an unreadable old report only means fewer rows
            continue
        for row in frame[frame["status"] == "ok"].itertuples():
            rel = os.fsdecode(row.path_bytes) if isinstance(row.path_bytes, bytes) else row.path
            latest[rel] = (row.input_sha256, row.model_id)
    records = []
    for rel, (sha, model_id) in sorted(latest.items()):
        if not tree.is_file(rel):
            continue
        try:
            content = read_input(in_dir, Path(in_dir) / rel, max_bytes=max_bytes)
        except ImageError:
            continue
        if hashlib.sha256(content).hexdigest() == sha:
            records.append((rel, sha, model_id, str(tree.path / rel)))
    manifest = Manifest.of(tree)
    manifest.record_many(records)
    return len(records)


def _by_path(db: sqlite3.Connection, query: str, paths: list[str], args: tuple = ()) -> list[tuple]:
    """The rows of ``query`` for ``paths`` (its ``{marks}`` stands for their placeholders, after
    ``args``), in one query per 900 paths: below SQLite's limit on parameters."""
    rows: list[tuple] = []
    for start in range(0, len(paths), 900):
        part = paths[start : start + 900]
        rows += db.execute(query.format(marks=",".join("?" * len(part))), [*args, *part]).fetchall()
    return rows
