"""The cleaning manifest: which input content was cleaned by which model into which file.

A SQLite file under ``OUT_DIR/.denoiser/`` (safe for concurrent shards and crash-safe:
a row is committed only after its output file is in place). A rerun skips an input whose
content hash and model id match its row and whose output still exists.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    input_sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    output_path TEXT NOT NULL,
    cleaned_at TEXT NOT NULL
)
"""


class Manifest:
    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open (or with ``create``, make) the manifest; a missing one reads as empty."""
        self.path = Path(path)
        self.exists = self.path.is_file()
        if not create:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.exists = True
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and is always closed."""
        db = sqlite3.connect(self.path, timeout=60)
        try:
            with db:
                yield db
        finally:
            db.close()

    def current(self, rels: list[str], model_id: str | None) -> dict[str, str]:
        """``{rel: input_sha256}`` of the ``rels`` cleaned by ``model_id`` (None: by any model)
        whose output exists, in one query per thousand paths (a shard asks once, not once per
        file)."""
        if not self.exists or not rels:
            return {}
        found: dict[str, str] = {}
        with self._connect() as db:
            for start in range(0, len(rels), 900):  # below SQLite's limit on parameters
                part = rels[start : start + 900]
                marks = ",".join("?" * len(part))
                which = "" if model_id is None else "model_id = ? AND "
                query = f"SELECT path, input_sha256, output_path FROM files WHERE {which}path IN ({marks})"
                args = part if model_id is None else [model_id, *part]
                found.update((rel, sha) for rel, sha, out in db.execute(query, args) if Path(out).is_file())
        return found

    def record(self, rel: str, input_sha256: str, model_id: str, output_path: str) -> None:
        self.record_many([(rel, input_sha256, model_id, output_path)])

    def record_many(self, records: list[tuple[str, str, str, str]]) -> None:
        """Record (rel, input_sha256, model_id, output_path) rows in one transaction."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                           [(*record, stamp) for record in records])

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
