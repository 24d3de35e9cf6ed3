"""The shared log for a team: PostgreSQL, through eventsourcing's recorder.

Chosen by ``eventstore.url: postgresql://user:pass@host:port/db`` in ``quipu.yaml`` or by
``QUIPU_EVENTSTORE_URL``. The recorder takes an EXCLUSIVE table lock for every insert, and the
chain is linked after that lock, so writers on many hosts still form one chain.

Every append transaction also issues ``NOTIFY <table>``; a thread waiting for appends
(``wait_for_append``) holds its own autocommit connection that ``LISTEN``s on that channel, so
appends from any host wake it as soon as they commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import sql

from quipu.core.chain import stored_state
from quipu.core.errors import InvalidInput, Unavailable

from ._base import (
    AppendSignal,
    RawAccess,
    RawRow,
    RecorderEventStore,
    head_hash,
    link_pending,
    scan_sql,
)

__all__ = ["open_postgres_store"]


class _ChainedRecorder(PostgresApplicationRecorder):
    """Links the chain after the table lock, inside the insert transaction."""

    chain_key: bytes | None = None

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        table = f'"{self.datastore.schema}"."{self.events_table_name}"'
        with curs.connection.cursor() as head_cursor:
            head_cursor.execute(f"SELECT state FROM {table} ORDER BY notification_id DESC LIMIT 1")
            row = head_cursor.fetchone()
            # Positions are drawn from the column's own sequence here, under the EXCLUSIVE
            # lock, so they increase in commit order (a rolled-back draw only leaves a gap, which
            # the log tolerates) and each link can hash the position it is stored at. They need
            # not be consecutive: each event is linked with the one it got.
            head_cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'notification_id')) AS id "
                "FROM generate_series(1, %s)", (table, len(stored_events)))
            positions = [int(r["id"]) for r in head_cursor.fetchall()]
        prev = head_hash(stored_state(0, row["state"]) if row else None, key=self.chain_key)
        linked = link_pending(prev, positions, stored_events, key=self.chain_key)
        curs.execute(
            f"INSERT INTO {table} (notification_id, originator_id, originator_version, topic, "
            "state) SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::bigint[], %s::text[], "
            "%s::bytea[]) RETURNING notification_id",
            (positions, [e.originator_id for e in linked],
             [e.originator_version for e in linked], [e.topic for e in linked],
             [e.state for e in linked]),
        )


class _ListenSignal(AppendSignal):
    """Wakes waiters on ``NOTIFY <channel>``: one listening connection per waiting thread."""

    def __init__(self, connect_args: dict[str, Any], channel: str) -> None:
        super().__init__()
        self._args = connect_args
        self._channel = channel
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(**self._args, autocommit=True, connect_timeout=5)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._local.conn = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def arm(self) -> Any:
        """Listen (from now on every commit is queued on the connection) and drop what
        arrived before: the caller reads the head next, which covers it."""
        try:
            for _ in self._connection().notifies(timeout=0):
                pass
        except psycopg.Error:
            self._local.conn = None  # reconnect next time; this wait falls back to its timeout
        return None

    def wait(self, token: Any, timeout: float) -> None:
        """Return at the first notification since ``arm``, or after ``timeout`` seconds."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            time.sleep(min(timeout, 0.05))  # no listener: a short poll instead
            return
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            self._local.conn = None

    def close(self) -> None:
        """Close every listening connection."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


def _create_table(recorder: _ChainedRecorder, attempts: int = 5) -> None:
    # Several workers starting at once race on CREATE ... IF NOT EXISTS / CREATE OR REPLACE
    # FUNCTION ("tuple concurrently updated"); the statements are idempotent, so retry.
    for attempt in range(1, attempts + 1):
        try:
            recorder.create_table()
            return
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)


def parse_url(url: str) -> dict[str, Any]:
    """Split a ``postgresql://`` URL into connection arguments."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise InvalidInput(
            f"not a PostgreSQL URL: {url!r}",
            code="invalid_eventstore_url",
            hint="use postgresql://user:password@host:5432/dbname",
        )
    return {
        "dbname": (parsed.path or "/").lstrip("/") or "postgres",
        "host": parsed.hostname or "localhost",
        "port": parsed.port or 5432,
        "user": unquote(parsed.username or "postgres"),
        "password": unquote(parsed.password or ""),
    }


def open_postgres_store(
    url: str,
    *,
    schema: str = "",
    table: str = "quipu_events",
    lock_retries: int = 5,
    key: bytes | None = None,
) -> RecorderEventStore:
    """Connect to the PostgreSQL log at ``url`` (creating its table if needed).

    With ``key`` (the audit key, kept outside the database) every appended link carries its
    key MAC: the keyed chain.
    """
    args = parse_url(url)
    try:
        datastore = PostgresDatastore(**args, schema=schema, lock_timeout=5, pool_size=2,
                                      max_overflow=4)
        recorder = _ChainedRecorder(datastore, events_table_name=table)
        recorder.chain_key = key
        _create_table(recorder)
    except Exception as exc:
        raise Unavailable(
            f"cannot reach the PostgreSQL log at {args['host']}:{args['port']}/{args['dbname']}:"
            f" {exc}",
            code="log_unreachable",
            hint="check that the server is running and the URL's user, password and database "
            "are right",
        ) from exc
    qualified = f'"{datastore.schema}"."{table}"'

    def rows(sql: str, params: Sequence[Any]) -> list[Any]:
        with datastore.transaction(commit=False) as curs:
            curs.execute(sql, params)
            return [tuple(r.values()) for r in curs.fetchall()]

    def scanner(after: int, limit: int, until: int | None,
                types: tuple[str, ...]) -> list[tuple[int, str, bytes]]:
        return [(p, t, bytes(st) if isinstance(st, memoryview) else st)
                for p, t, st in rows(*scan_sql(qualified, "notification_id", after, limit,
                                               until, types, "%s"))]

    def reader(after: int, limit: int, until: int | None, types: tuple[str, ...]) -> list[RawRow]:
        return rows(*scan_sql(qualified, "notification_id", after, limit, until, types, "%s",
                              columns="originator_id, originator_version, topic, state"))

    def loader(stream: UUID, after: int) -> list[RawRow]:
        return rows(f"SELECT notification_id, originator_id, originator_version, topic, state "
                    f"FROM {qualified} WHERE originator_id = %s AND originator_version > %s "
                    "ORDER BY originator_version", (stream, after))

    def tail(position: int) -> bytes | None:
        with datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT state FROM {qualified} WHERE notification_id <= %s "
                         "ORDER BY notification_id DESC LIMIT 1", (position,))
            row = curs.fetchone()
            return None if row is None else bytes(row["state"])

    return RecorderEventStore(
        recorder, description=f"postgresql {args['host']}/{args['dbname']}",
        lock_retries=lock_retries, tail=tail, raw=RawAccess(scanner, reader, loader),
        location=f"the PostgreSQL server {args['host']}:{args['port']} (its data directory)",
        signal=_ListenSignal(args, recorder.channel_name),
    )
