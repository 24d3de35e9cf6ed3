"""The embedded default log: one SQLite file (``.quipu/events.db``) in WAL mode.

Waiting for appends: this process's appends wake waiters at once; another process's commit is
noticed within 25 ms by polling ``PRAGMA data_version`` on a connection of the waiter's own
(the value changes whenever ANOTHER connection commits, and reading it touches no table).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteTransaction,
)

from quipu.core.errors import Unavailable

from ._base import (
    PollingSignal,
    RawAccess,
    RawRow,
    RecorderEventStore,
    head_hash,
    link_pending,
    scan_sql,
    storage_failure,
)

__all__ = ["TABLE", "Synchronous", "open_sqlite_store"]

TABLE = "stored_events"
"""The events table of every SQLite log (read directly by ``quipu status``'s shortcut)."""

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class _ImmediateTransaction(SQLiteTransaction):
    """A write transaction that takes SQLite's write lock when it begins.

    The chain is linked from the head read inside the transaction; with a deferred ``BEGIN``
    another process could commit between that read and the insert, and the upgrade would fail
    with a stale snapshot. ``BEGIN IMMEDIATE`` waits (busy timeout) for the lock instead.
    """

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise OperationalError(exc) from exc
        return cursor


class _Connection(SQLiteConnection):
    """Writes begin IMMEDIATE; reads stay deferred."""

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[SQLiteCursor]:
        tx = (_ImmediateTransaction(self, commit=True) if commit
              else SQLiteTransaction(self, commit=False))
        with tx as curs, curs:
            yield curs


class _Pool(SQLiteConnectionPool):
    """A connection pool that applies Quipu's durability setting to every connection."""

    def __init__(self, *, synchronous: Synchronous, **kwargs: Any) -> None:
        self._synchronous = synchronous
        super().__init__(**kwargs)

    def _create_connection(self) -> SQLiteConnection:
        raw = super()._create_connection()._sqlite_conn
        raw.execute(f"PRAGMA synchronous={self._synchronous}")
        return _Connection(sqlite_conn=raw, max_age=self.max_age)


class _ChainedRecorder(SQLiteApplicationRecorder):
    """Links the hash chain inside SQLite's write transaction, then inserts in one batch."""

    def __init__(self, datastore: SQLiteDatastore, *, key: bytes | None = None) -> None:
        super().__init__(datastore, events_table_name=TABLE)
        self.chain_key = key
        # Explicit rowids: each link hashes the position it is stored at, so the position must
        # be decided before linking, under the same write lock that inserts.
        self.insert_positioned_statement = (
            f"INSERT INTO {self.events_table_name} "
            "(rowid, originator_id, originator_version, topic, state) VALUES (?,?,?,?,?)"
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        c.execute(f"SELECT rowid, state FROM {self.events_table_name} ORDER BY rowid DESC LIMIT 1")
        row = c.fetchone()
        first = (row["rowid"] if row else 0) + 1
        prev = head_hash(row["state"] if row else None, key=self.chain_key)
        positions = range(first, first + len(stored_events))
        linked = link_pending(prev, positions, stored_events, key=self.chain_key)
        c.executemany(
            self.insert_positioned_statement,
            [(p, s.originator_id.hex, s.originator_version, s.topic, s.state)  # type: ignore[union-attr]
             for p, s in zip(positions, linked, strict=True)],
        )
        return list(positions)


class _DataVersion:
    """``PRAGMA data_version`` on a connection of its own, opened on first use."""

    def __init__(self, db: str) -> None:
        self._db = db
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = sqlite3.connect(self._db, check_same_thread=False,
                                                 isolation_level=None)
                return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                return -1  # unknown: the waiter wakes and reads the head, which retries

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_sqlite_store(
    path: Path | str,
    *,
    synchronous: Synchronous = "FULL",
    lock_timeout: int = 5,
    lock_retries: int = 5,
    key: bytes | None = None,
) -> RecorderEventStore:
    """Open (creating if needed) the SQLite log at ``path``.

    With ``key`` (the audit key, kept outside the database) every appended link carries its
    key MAC: the keyed chain.
    """
    db = str(path)
    where = str(Path(db).resolve().parent) if db != ":memory:" else "memory"
    try:
        if db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        datastore = SQLiteDatastore(db, lock_timeout=lock_timeout)
        datastore.pool.close()
        datastore.pool = _Pool(synchronous=synchronous, db_name=db, lock_timeout=lock_timeout)
        recorder = _ChainedRecorder(datastore, key=key)
        recorder.create_table()
    except Exception as exc:  # sqlite3 errors arrive wrapped differently by version
        failure = storage_failure(exc, f"sqlite {db}", where)
        if failure is not None:
            raise failure from exc
        raise Unavailable(
            f"cannot open the event log at {db}: {exc}",
            code="log_unreadable",
            hint="check the path and permissions; a locked database clears when the other "
            "writer finishes",
        ) from exc
    table = recorder.events_table_name

    def rows(sql: str, params: Sequence[Any]) -> list[Any]:
        with datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples: no sqlite3.Row per event
            cursor.execute(sql, params)
            return cursor.fetchall()

    def scanner(after: int, limit: int, until: int | None,
                types: tuple[str, ...]) -> list[tuple[int, str, bytes]]:
        return rows(*scan_sql(table, "rowid", after, limit, until, types, "?"))

    def reader(after: int, limit: int, until: int | None, types: tuple[str, ...]) -> list[RawRow]:
        return rows(*scan_sql(table, "rowid", after, limit, until, types, "?",
                              columns="originator_id, originator_version, topic, state"))

    def loader(stream: UUID, after: int) -> list[RawRow]:
        return rows(f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
                    "WHERE originator_id = ? AND originator_version > ? "
                    "ORDER BY originator_version", (stream.hex, after))

    def tail(position: int) -> bytes | None:
        with datastore.transaction(commit=False) as c:
            c.execute(f"SELECT state FROM {table} WHERE rowid <= ? ORDER BY rowid DESC LIMIT 1",
                      (position,))
            row = c.fetchone()
            return None if row is None else bytes(row["state"])

    # An in-memory database is private to one connection: only this store can append to it.
    signal = None
    if db != ":memory:":
        version = _DataVersion(db)
        signal = PollingSignal(version, on_close=version.close)
    return RecorderEventStore(recorder, description=f"sqlite {db}", lock_retries=lock_retries,
                              tail=tail, raw=RawAccess(scanner, reader, loader),
                              location=where, signal=signal)
