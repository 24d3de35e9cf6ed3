"""What every event store adapter shares: encoding, linking, retries and error mapping.

Each adapter subclasses an ``eventsourcing`` 9.5 application recorder and links the chain inside
that recorder's own write lock (``link_pending``), so the chain order is the log order even with
several writers. ``RecorderEventStore`` wraps such a recorder as Quipu's ``EventStore`` port.

Followers (the executor, ``run(wait=True)``) wait for appends instead of polling on a timer: an
``AppendSignal`` wakes them at once for appends made through this process's store, and each
adapter adds how it hears of other processes' appends (SQLite: ``PollingSignal``; PostgreSQL:
``LISTEN``/``NOTIFY``).
"""

from __future__ import annotations

import errno
import hmac
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)

from quipu.core.chain import GENESIS, link_mac, link_state, split_state, stored_state
from quipu.core.errors import Conflict, IntegrityFailure, Unavailable
from quipu.core.log import encode_data
from quipu.core.ports import NewEvent, StoredRecord

__all__ = ["AppendSignal", "PollingSignal", "RawAccess", "RawRow", "RecorderEventStore",
           "Scanner", "Tail", "head_hash", "link_pending", "scan_sql", "storage_failure"]

T = TypeVar("T")


Scanner = Callable[[int, int, "int | None", tuple[str, ...]], list[tuple[int, str, bytes]]]
"""An adapter's raw page reader: (after, limit, until, types) -> (position, type, state) rows."""

Tail = Callable[[int], "bytes | None"]
"""An adapter's reader of the state of the newest event at or before a position (None: none)."""

RawRow = tuple[int, Any, int, str, object]
"""(position, stream id, version, type, state) as the database returned them, unchecked."""


@dataclass(frozen=True, slots=True)
class RawAccess:
    """An adapter's own SQL readers, used instead of the recorder's where the recorder would
    crash on a damaged row (it calls ``bytes(state)``) before Quipu can name the position."""

    scanner: Scanner
    reader: Callable[[int, int, int | None, tuple[str, ...]], list[RawRow]]
    """(after, limit, until, types) -> raw rows in log order."""
    loader: Callable[[UUID, int], list[RawRow]]
    """(stream, after) -> that stream's raw rows with a version above ``after``, in order."""


def scan_sql(table: str, position: str, after: int, limit: int, until: int | None,
             types: tuple[str, ...], mark: str,
             columns: str = "topic, state") -> tuple[str, list[Any]]:
    """The SELECT of one raw page (``mark`` is the driver's placeholder: ``?`` or ``%s``)."""
    sql = f"SELECT {position}, {columns} FROM {table} WHERE {position} > {mark}"
    params: list[Any] = [after]
    if until is not None:
        sql += f" AND {position} <= {mark}"
        params.append(until)
    if types:
        sql += f" AND topic IN ({','.join([mark] * len(types))})"
        params.extend(types)
    sql += f" ORDER BY {position} LIMIT {mark}"
    params.append(limit)
    return sql, params


def _pending(event: NewEvent) -> StoredEvent:
    # Before linking, the state is "<schema_version>\n<data>"; the recorder swaps in the header.
    data = encode_data(event.event)
    return StoredEvent(
        originator_id=event.stream,
        originator_version=event.version,
        topic=event.event.TYPE,
        state=f"{event.event.SCHEMA_VERSION}\n".encode() + data,
    )


def head_hash(state: bytes | None, *, key: bytes | None = None) -> str:
    """The chain hash of the newest stored event (its state), or the genesis hash.

    Called inside the write lock before linking. When the newest event carries a key MAC the
    writer must hold the same audit key: without it (``audit_key_missing``) or with another one
    (``audit_key_mismatch``) the append is refused, since its events would break the keyed chain.
    """
    if state is None:
        return GENESIS
    link = split_state(stored_state(0, state))
    if link.mac is not None:
        if key is None:
            raise Conflict(
                "the log is keyed (its events carry audit-key MACs) but this writer has no key",
                code="audit_key_missing",
                hint="set audit.key_file in quipu.yaml or QUIPU_AUDIT_KEY_FILE to the log's key "
                "file; nothing was written",
            )
        if not hmac.compare_digest(link.mac, link_mac(key, link.hash)):
            raise IntegrityFailure(
                "the newest event's key MAC does not match this writer's audit key",
                code="audit_key_mismatch",
                hint="either the key file is not this log's key, or the newest event was forged "
                "without it: run `quipu audit verify` with the key; nothing was written",
            )
    return link.hash


def link_pending(
    prev: str, positions: Sequence[int], pending: Sequence[StoredEvent], *,
    key: bytes | None = None,
) -> list[StoredEvent]:
    """Chain pending events after ``prev``; called inside the recorder's write lock.

    ``positions`` are the global positions the events will be stored at (the adapter decides
    them under its lock and inserts with them explicitly), so each link covers its position.
    With ``key`` each link also carries its key MAC.
    """
    linked = []
    for position, s in zip(positions, pending, strict=True):
        newline = s.state.index(b"\n")
        schema_version = int(s.state[:newline])
        stream = s.originator_id.hex if isinstance(s.originator_id, UUID) else str(s.originator_id)
        state, prev = link_state(
            prev, stream, s.originator_version, s.topic, schema_version, s.state[newline + 1 :],
            position=position, key=key,
        )
        linked.append(StoredEvent(s.originator_id, s.originator_version, s.topic, state))
    return linked


# SQLite's primary result codes (the low byte of the extended code Python reports).
_SQLITE_FULL = 13
_SQLITE_NOT_WRITABLE = {3, 8, 14}  # PERM, READONLY, CANTOPEN
_SQLITE_IOERR = 10
# PostgreSQL SQLSTATEs: disk_full, read_only_sql_transaction.
_PG_DISK_FULL = "53100"
_PG_READ_ONLY = "25006"
_ERRNO_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_ERRNO_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_failure(exc: BaseException, description: str, location: str) -> Unavailable | None:
    """The typed error for a write that failed because of the storage itself, or None.

    Walks the exception's causes (eventsourcing wraps the driver's error) for SQLite's result
    code, PostgreSQL's SQLSTATE or an ``OSError``'s errno: a full disk becomes ``disk_full``, a
    read-only or forbidden file ``log_not_writable``, an I/O error ``log_io_error``. Anything
    else (a lock, a lost connection) is left to the caller's retry.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlite_code = getattr(current, "sqlite_errorcode", None)
        primary = sqlite_code & 0xFF if isinstance(sqlite_code, int) else None
        sqlstate = getattr(current, "sqlstate", None)
        number = current.errno if isinstance(current, OSError) else None
        if primary == _SQLITE_FULL or sqlstate == _PG_DISK_FULL or number in _ERRNO_FULL:
            return Unavailable(
                f"the event log ({description}) could not be written: the disk is full "
                f"({current})",
                code="disk_full",
                hint=f"free space on {location}; nothing was written",
            )
        if (primary in _SQLITE_NOT_WRITABLE or sqlstate == _PG_READ_ONLY
                or number in _ERRNO_NOT_WRITABLE):
            return Unavailable(
                f"the event log ({description}) is not writable: {current}",
                code="log_not_writable",
                hint=f"make {location} writable by this user (is the disk mounted read-only?); "
                "nothing was written",
            )
        if primary == _SQLITE_IOERR:
            return Unavailable(
                f"the event log ({description}) hit an I/O error: {current}",
                code="log_io_error",
                hint=f"check the disk holding {location} (space, health, mount); nothing was "
                "written",
            )
        current = current.__cause__ or current.__context__
    return None


_STATE = itemgetter(2)


class AppendSignal:
    """Wakes the threads of this process that wait for the log to grow.

    The store calls ``notify`` after every append it commits. A waiter calls ``arm`` BEFORE it
    reads the head and passes the token to ``wait``, so an append that lands between the read
    and the wait is not missed: ``wait`` returns at once when anything happened since ``arm``.
    This base class hears only appends made through this process's store; subclasses also
    hear other processes (override ``arm``/``wait``).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        """An append through this store committed: wake every waiter."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def arm(self) -> Any:
        """A token for ``wait``: what has been seen so far."""
        with self._changed:
            return self._generation

    def wait(self, token: Any, timeout: float) -> None:
        """Return when something may have been appended since ``arm`` gave ``token``, or
        after ``timeout`` seconds. Waking too often is allowed: callers check the head."""
        with self._changed:
            if self._generation == token:
                self._changed.wait(timeout)

    def close(self) -> None:
        """Release what the signal holds (nothing here)."""


class PollingSignal(AppendSignal):
    """``AppendSignal`` plus a cheap probe of the database, every ``interval`` seconds, for
    appends by other processes: ``probe()`` returns a value that changes when another
    connection commits (SQLite's ``PRAGMA data_version``)."""

    def __init__(self, probe: Callable[[], int], interval: float = 0.025,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._probe = probe
        self._on_close = on_close
        self.interval = interval

    def close(self) -> None:
        """Release the probe's connection."""
        if self._on_close is not None:
            self._on_close()

    def arm(self) -> Any:
        """(generation, probe value) as seen now."""
        return (super().arm(), self._probe())

    def wait(self, token: Any, timeout: float) -> None:
        """Return on an in-process append at once, on another process's within ``interval``."""
        generation, seen = token
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                if self._generation != generation:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(min(self.interval, remaining))
                if self._generation != generation:
                    return
            if self._probe() != seen:
                return


def _as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class RecorderEventStore:
    """Quipu's ``EventStore`` port over an eventsourcing application recorder."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        *,
        description: str,
        lock_retries: int = 5,
        retry_wait: float = 0.05,
        tail: Tail,
        raw: RawAccess | None = None,
        location: str = "",
        signal: AppendSignal | None = None,
    ) -> None:
        self._recorder = recorder
        self._tail = tail
        self.location = location or description
        self._raw = raw
        self._signal = signal if signal is not None else AppendSignal()
        self.description = description
        self._lock_retries = lock_retries
        self._retry_wait = retry_wait

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append all events in one transaction; see ``EventStore.append``."""
        if not events:
            return []
        pending = [_pending(e) for e in events]
        attempt = 0
        while True:
            try:
                ids = self._recorder.insert_events(pending)
                self._signal.notify()
                return list(ids or [])
            except IntegrityError as exc:
                raise Conflict(
                    "another command changed the same workspace or slot at the same moment",
                    code="concurrency_conflict",
                    hint="reload and retry the command",
                ) from exc
            except OperationalError as exc:
                failure = storage_failure(exc, self.description, self.location)
                if failure is not None:
                    raise failure from exc  # a full or read-only disk does not clear by waiting
                attempt += 1
                if attempt > self._lock_retries:
                    raise Unavailable(
                        f"the event log ({self.description}) stayed locked or unreachable "
                        f"after {self._lock_retries} retries: {exc}",
                        code="database_locked",
                        hint="another process holds a long write lock on the log; wait for it "
                        "to finish (or stop it) and retry; nothing was written",
                    ) from exc
                time.sleep(self._retry_wait * (2 ** (attempt - 1)))
            except PersistenceError as exc:
                # Not a lock: retrying would not help and "locked" would mislead.
                failure = storage_failure(exc, self.description, self.location)
                if failure is not None:
                    raise failure from exc
                raise Unavailable(
                    f"the event log ({self.description}) refused the write: {exc}",
                    code="log_write_failed",
                    hint="check the database's disk space, permissions and health; nothing "
                    "was written",
                ) from exc

    def load(self, stream: UUID, *, after: int = 0) -> list[StoredRecord]:
        """The events of one stream with a version above ``after``, oldest first."""
        if self._raw is not None:
            loader = self._raw.loader
            return [StoredRecord(0, _as_uuid(r[1]), r[2], r[3], stored_state(r[0], r[4]))
                    for r in self._call(lambda: loader(stream, after))]
        rows = self._call(lambda: self._recorder.select_events(stream, gt=after or None))
        return [
            StoredRecord(0, _as_uuid(r.originator_id), r.originator_version, r.topic,
                         stored_state(0, r.state))
            for r in rows
        ]

    def read(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[StoredRecord]:
        """Up to ``limit`` events after ``after`` (and up to ``until``), in log order."""
        if until is not None and until <= after:
            return []
        if self._raw is not None:
            reader = self._raw.reader
            return [StoredRecord(r[0], _as_uuid(r[1]), r[2], r[3], stored_state(r[0], r[4]))
                    for r in self._call(lambda: reader(after, limit, until, tuple(types)))]
        rows = self._call(
            lambda: self._recorder.select_notifications(
                after + 1, limit, stop=until, topics=tuple(types)
            )
        )
        return [
            StoredRecord(r.id, _as_uuid(r.originator_id), r.originator_version, r.topic,
                         stored_state(r.id, r.state))
            for r in rows
        ]

    def scan(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[tuple[int, str, bytes]]:
        """(position, type, state) of up to ``limit`` events after ``after``, in log order."""
        if until is not None and until <= after:
            return []
        if self._raw is None:
            return [(r.position, r.type, r.state)
                    for r in self.read(after=after, limit=limit, until=until, types=types)]
        scanner = self._raw.scanner
        rows = self._call(lambda: scanner(after, limit, until, tuple(types)))
        # The fold would crash on a state that is not bytes; one C-level pass finds out (about
        # 2% of a rebuild), and only then is the first bad row looked for.
        if rows and set(map(type, map(_STATE, rows))) != {bytes}:
            for position, _, state in rows:
                stored_state(position, state)
        return rows

    def head(self) -> int:
        """Position of the newest event (0 when empty)."""
        return int(self._call(self._recorder.max_notification_id) or 0)

    def hash_at(self, position: int) -> str:
        """Chain hash of the newest event at or before ``position``; GENESIS if there is none."""
        if position <= 0:
            return GENESIS
        tail = self._tail
        state = self._call(lambda: tail(position))
        # Only the hash is read: a reader need not hold the audit key (writers check the MAC).
        return GENESIS if state is None else split_state(stored_state(position, state)).hash

    def wait_for_append(self, *, after: int, timeout: float) -> int:
        """Block until the head passes ``after`` or ``timeout`` seconds pass; return the head.

        See ``EventStore.wait_for_append``. The head is read after arming the signal, so an
        append between the read and the wait still wakes this call.
        """
        deadline = time.monotonic() + timeout
        while True:
            token = self._signal.arm()
            head = self.head()
            remaining = deadline - time.monotonic()
            if head > after or remaining <= 0:
                return head
            self._signal.wait(token, remaining)

    def close(self) -> None:
        """Close the recorder's connections (and the signal's)."""
        self._signal.close()
        datastore = getattr(self._recorder, "datastore", None)
        if datastore is not None:
            datastore.close()

    def _call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except (OperationalError, PersistenceError) as exc:
                attempt += 1
                if attempt > self._lock_retries:
                    raise Unavailable(
                        f"could not read the event log ({self.description}): {exc}",
                        code="log_unreadable",
                        hint="check that the database exists and is reachable, then retry",
                    ) from exc
                time.sleep(self._retry_wait * (2 ** (attempt - 1)))
