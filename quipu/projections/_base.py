"""What every projection shares: the Projection protocol, fast decoding and the catch-up runner.

A projection is a pure fold of events into a few tables of ``views.db``. It declares its name,
a ``version`` (bumped when its tables or fold change, which refolds it from 0), the event types
it handles and its tables. The runner reads the log in pages, decodes only events some
projection handles, gives each projection the events it has not seen yet, and writes every
projection's position (and the chain hash of the log there) in the SAME transaction as its rows,
one transaction per page. A page that holds no event a projection handles still advances its
position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID

import sqlite_utils
from pydantic import TypeAdapter

from quipu.core.chain import split_state
from quipu.core.errors import IntegrityFailure
from quipu.core.log import decode
from quipu.core.messages import Event, event_type
from quipu.core.ports import EventStore, StoredRecord

__all__ = ["PAGE_SIZE", "Folded", "Indexes", "Progress", "Projection", "Runner", "Stored",
           "chain_hash", "chunks", "create_indexes", "fast_decode", "placeholders",
           "rows_as_dicts"]

PAGE_SIZE = 2000
"""Events read (and folded) per transaction."""


Indexes = tuple[tuple[str, tuple[str, ...]], ...]
"""(table, columns) of secondary indexes."""


class Projection(Protocol):
    """A read model folded from the log into its own tables."""

    name: ClassVar[str]
    version: ClassVar[int]
    types: ClassVar[frozenset[str]]
    tables: ClassVar[tuple[str, ...]]
    indexes: ClassVar[Indexes]
    """(table, columns) of each secondary index; a rebuild creates them after folding."""

    def create(self, db: sqlite_utils.Database) -> None:
        """Create this projection's (empty) tables."""
        ...

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold events (only of ``types``, in log order) into the tables, inside the page's
        transaction. Must not read a clock or anything but the tables and the events."""
        ...


@dataclass(frozen=True, slots=True)
class Folded:
    """What a projection sees of one stored event: its position, the event, and its time as the
    ISO 8601 text the log holds (computed once per event, shared by every projection)."""

    position: int
    event: Event
    at: str


_NO_STREAM = UUID(int=0)  # upcasting needs no stream id
_AT_KEY = b'"at":"'
_AT = TypeAdapter(datetime)
_CURRENT: dict[str, tuple[type[Event], bytes]] = {}


def fast_decode(position: int, type_name: str, state: bytes) -> Folded:
    """``core.log.decode`` with a fast path for events stored at their current schema version.

    The chain header starts ``{"v":<schema_version>,``; when that version is current, pydantic
    parses the event's JSON directly (about 4x faster than parsing the header and the data with
    json and validating a dict). Anything else (an old version to upcast, an odd header) goes
    through ``core.log.decode``.
    """
    known = _CURRENT.get(type_name)
    if known is None:
        cls = event_type(type_name)
        known = _CURRENT[type_name] = (cls, f'{{"v":{cls.SCHEMA_VERSION},'.encode())
    data = state[state.find(b"\n") + 1 :]
    event = (known[0].model_validate_json(data) if state.startswith(known[1])
             else decode(StoredRecord(position, _NO_STREAM, 0, type_name, state)).event)
    # Base fields are serialised first and JSON escapes every quote inside a string, so the first
    # '"at":"' is the event's own timestamp, kept as the text the log holds.
    start = data.find(_AT_KEY) + 6
    end = data.find(b'"', start)
    at = (data[start:end].decode() if start >= 6 and end > 0
          else str(_AT.dump_python(event.at, mode="json")))
    return Folded(position, event, at)


def create_indexes(db: sqlite_utils.Database, projection: Projection) -> None:
    """Create a projection's secondary indexes unless they exist."""
    for table, columns in projection.indexes:
        db.table(table).create_index(list(columns), if_not_exists=True)


def placeholders(n: int) -> str:
    """``?,?,?`` for an ``IN (...)`` of ``n`` values."""
    return ",".join("?" * n)


Progress = Callable[[int, int], None]

Stored = dict[str, tuple[int, str | None]]
"""Each projection's stored (position, chain hash of the newest event at or before it)."""


def chain_hash(state: bytes) -> str:
    """The chain hash in a stored state's header (``split_state`` without the data)."""
    return split_state(state[: state.find(b"\n") + 1]).hash


class Runner:
    """Catches projections up with the log, one transaction per page.

    Beside each projection's position it stores the chain hash of the newest event at or before
    that position, in the same transaction, so ``diverged`` can tell later whether the log
    under the views is still the one they were folded from.
    """

    def __init__(self, conn: sqlite3.Connection, store: EventStore,
                 projections: Sequence[Projection], *, until: int | None,
                 page_size: int = PAGE_SIZE) -> None:
        self.conn = conn
        self.store = store
        self.projections = list(projections)
        self.until = until
        self.page_size = page_size

    def target(self, head: int | None = None) -> int:
        """The position to catch up to: the log's head, capped by ``until``."""
        if head is None:
            head = self.store.head()
        return head if self.until is None else min(head, self.until)

    def stored(self) -> Stored:
        """Each projection's stored position and hash ((0, None) if it has none)."""
        rows = self.conn.execute("SELECT name, position, hash FROM _positions").fetchall()
        found = {str(name): (int(position), None if h is None else str(h))
                 for name, position, h in rows}
        return {p.name: found.get(p.name, (0, None)) for p in self.projections}

    def positions(self) -> dict[str, int]:
        """Each projection's stored position."""
        return {name: position for name, (position, _) in self.stored().items()}

    def diverged(self, stored: Stored, head: int) -> dict[str, str]:
        """The projections whose stored position the log no longer backs, each with why.

        ``stored`` must have been read BEFORE ``head``: the log only grows and views only fold
        what the log held, so a position read first can only exceed a head read after it if
        the log lost events (an older file restored, a lost WAL). A hash that differs from the
        log's at the same position means the log was replaced by another one.
        """
        target = self.target(head)
        reasons: dict[int, str | None] = {}
        out: dict[str, str] = {}
        for name, (position, stored_hash) in stored.items():
            if position == 0:
                continue  # nothing folded: nothing to contradict
            if position not in reasons:
                reasons[position] = self._contradiction(position, stored_hash, head, target)
            reason = reasons[position]
            if reason is not None:
                out[name] = reason
        return out

    def _contradiction(self, position: int, stored_hash: str | None, head: int,
                       target: int) -> str | None:
        if position > head:
            return (f"they have folded the log up to position {position} but the log ends at "
                    f"{head} (an older events.db restored, or its WAL lost?)")
        if position > target:
            return (f"they have folded the log up to position {position}, past the "
                    f"{target} they were opened to show")
        actual = _log_hash(position, lambda: self.store.hash_at(position))
        if stored_hash != actual:
            return (f"the log's event at position {position} is not the one they folded "
                    f"(chain hash {actual[:12]}, folded {str(stored_hash)[:12]}): "
                    "the log was replaced by another one")
        return None

    def run(self, *, progress: Progress | None = None,
            target: int | None = None) -> tuple[int, int]:
        """Fold until every projection reached the target (default: ``target()``); return
        (position, events read)."""
        if target is None:
            target = self.target()
        if min(self.positions().values(), default=target) >= target:
            return target, 0  # the fast path of every read: nothing new, no write lock
        read = 0
        while True:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                # Positions are re-read under the write lock: another process may have folded
                # this page already, and folding it twice must not happen.
                done, count = self._page(self.positions(), target)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # a damaged file may have ended it already
                    self.conn.execute("ROLLBACK")
                raise
            read += count
            if progress is not None:
                progress(min(done, target), target)
            if done >= target:
                return target, read

    def _page(self, positions: dict[str, int], target: int) -> tuple[int, int]:
        lagging = [p for p in self.projections if positions[p.name] < target]
        if not lagging:
            return target, 0
        start = min(positions[p.name] for p in lagging)
        types = sorted(set().union(*(p.types for p in lagging)))
        records = self.store.scan(after=start, limit=self.page_size, until=target, types=types)
        # A short page means nothing the lagging projections handle remains up to the target.
        reached = records[-1][0] if len(records) == self.page_size else target
        handlers: dict[str, list[int]] = {}
        for i, p in enumerate(lagging):
            for t in p.types:
                handlers.setdefault(t, []).append(i)
        batches: list[list[Folded]] = [[] for _ in lagging]
        after = [positions[p.name] for p in lagging]
        for position, type_name, state in records:
            mine = handlers.get(type_name)
            if mine is None:
                continue  # the store ignored the type filter; never decode what nobody folds
            folded = _decode_stored(position, type_name, state)
            for i in mine:
                if folded.position > after[i]:
                    batches[i].append(folded)
        for p, batch in zip(lagging, batches, strict=True):
            if batch:
                p.apply(self.conn, batch)
        # The hash of the position reached: the page's last event when it is there, else (the
        # page ended on events nobody here folds) one indexed read of the log.
        last = records[-1] if records and records[-1][0] == reached else None
        reached_hash = _log_hash(reached, lambda: chain_hash(last[2]) if last is not None
                                 else self.store.hash_at(reached))
        # A projection already past this page (others are being refolded from 0) keeps its own.
        self.conn.executemany(
            "INSERT INTO _positions (name, position, version, hash) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET position = excluded.position, hash = excluded.hash",
            [(p.name, reached, p.version, reached_hash)
             for i, p in enumerate(lagging) if reached > after[i]])
        return reached, len(records)


def _log_hash(position: int, read: Callable[[], str]) -> str:
    """A chain hash read from the log; a header that cannot be parsed is the log's fault."""
    try:
        return read()
    except (ValueError, TypeError, KeyError) as exc:
        raise IntegrityFailure(
            f"the event at or before position {position} has no readable chain header: {exc}",
            code="event_undecodable",
            hint="run `quipu audit verify` to see what is wrong with the log") from exc


def _decode_stored(position: int, type_name: str, state: bytes) -> Folded:
    """``fast_decode``, with a log event that cannot be read named as the log's fault: it must
    never pass for damage to the views (refolding them would meet the same event again)."""
    try:
        return fast_decode(position, type_name, state)
    except Exception as exc:
        raise IntegrityFailure(
            f"the event at position {position} ({type_name}) cannot be decoded: {exc}",
            code="event_undecodable",
            hint="run `quipu audit verify` to see what is wrong with the log") from exc


def rows_as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """All rows of a cursor as plain dicts (column name -> value)."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def chunks(values: Iterable[Any], size: int = 500) -> Iterable[list[Any]]:
    """Split values into lists small enough for SQLite's parameter limit."""
    batch: list[Any] = []
    for v in values:
        batch.append(v)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
