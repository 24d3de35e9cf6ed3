"""Snapshots in a SQLite file of their own (``.quipu/snapshots.db``).

The file is a cache beside the log, never part of it: it is per machine even when the log is a
shared PostgreSQL database, and it defends itself. An unreadable file (garbage, another schema)
is discarded and recreated; a snapshot that no longer matches the log is ignored by the unit of
work (it checks the chain hash of the event the snapshot was taken after). Writes are best
effort: the unit of work logs and ignores a failed ``put``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
from pathlib import Path
from uuid import UUID

from quipu.core.ports import Snapshot

__all__ = ["SQLiteSnapshotStore"]

log = logging.getLogger("quipu.snapshots")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    stream TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    schema INTEGER NOT NULL,
    version INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    state BLOB NOT NULL,
    digest TEXT NOT NULL
)
"""
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """The file is broken (start it afresh), not busy, locked or unreachable (leave it be:
    another process may be using it, and deleting a live database's WAL corrupts it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGE_CODES:
        return True
    text = str(exc)
    return "malformed" in text or text.startswith(("no such table", "no such column",
                                                   "table snapshots has no column"))


def _digest(state: bytes) -> str:
    return hashlib.sha256(state).hexdigest()


class SQLiteSnapshotStore:
    """The newest snapshot of each stream, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=2.0, check_same_thread=False,
                                   isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                conn.execute("SELECT stream, kind, schema, version, last_hash, state, digest "
                             "FROM snapshots LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                conn.close()
                if not _is_damage(exc):
                    raise
                log.warning("snapshot file %s is unreadable; starting it afresh", self.path)
                self._remove_files()
                conn = sqlite3.connect(self.path, timeout=2.0, check_same_thread=False,
                                       isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def get(self, stream: UUID) -> Snapshot | None:
        """The newest snapshot of ``stream``; None when absent or unreadable."""
        with self._lock:
            try:
                row = self._connect().execute(
                    "SELECT kind, schema, version, last_hash, state, digest FROM snapshots "
                    "WHERE stream = ?", (str(stream),)).fetchone()
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):
                    return None  # busy or unreachable: a cache miss, the file is left alone
                # Damaged pages: forget the file; the next call starts it afresh.
                log.warning("snapshot file %s is damaged; discarding it", self.path)
                self._reset()
                self._remove_files()
                return None
        if row is None:
            return None
        kind, schema, version, last_hash, state, digest = row
        if not (isinstance(kind, str) and isinstance(schema, int) and isinstance(version, int)
                and isinstance(last_hash, str) and isinstance(state, bytes)):
            return None
        if digest != _digest(state):
            # Bytes changed on disk into something that still parses: never use it.
            log.warning("snapshot of %s in %s does not match its digest; ignoring it", stream,
                        self.path)
            return None
        return Snapshot(stream=stream, kind=kind, schema=schema, version=version,
                        last_hash=last_hash, state=state)

    def put(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of its stream is already kept."""
        with self._lock:
            self._connect().execute(
                "INSERT INTO snapshots (stream, kind, schema, version, last_hash, state, digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(stream) DO UPDATE SET "
                "kind = excluded.kind, schema = excluded.schema, version = excluded.version, "
                "last_hash = excluded.last_hash, state = excluded.state, "
                "digest = excluded.digest WHERE excluded.version >= snapshots.version",
                (str(snapshot.stream), snapshot.kind, snapshot.schema, snapshot.version,
                 snapshot.last_hash, snapshot.state, _digest(snapshot.state)))

    def discard(self, stream: UUID) -> None:
        """Forget the stream's snapshot."""
        with self._lock:
            self._connect().execute("DELETE FROM snapshots WHERE stream = ?", (str(stream),))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._reset()
