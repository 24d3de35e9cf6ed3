"""What every projection shares: the Projection protocol, fast decoding and the catch-up runner.

A projection is a pure fold of events into a few tables of ``views.db``. It declares its name,
a ``version`` (bumped when its tables or fold change, which refolds it from 0), the event types
it handles and its tables. The runner reads the log in pages, decodes only events some
projection handles, gives each projection the events it has not seen yet, and writes every
projection's position in the SAME transaction as its rows, one transaction per page. A page
that holds no event a projection handles still advances its position.
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

from quipu.core.log import decode
from quipu.core.messages import Event, event_type
from quipu.core.ports import EventStore, StoredRecord

__all__ = ["PAGE_SIZE", "Folded", "Indexes", "Progress", "Projection", "Runner", "chunks",
           "create_indexes", "fast_decode", "placeholders", "rows_as_dicts"]

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


class Runner:
    """Catches projections up with the log, one transaction per page."""

    def __init__(self, conn: sqlite3.Connection, store: EventStore,
                 projections: Sequence[Projection], *, until: int | None,
                 page_size: int = PAGE_SIZE) -> None:
        self.conn = conn
        self.store = store
        self.projections = list(projections)
        self.until = until
        self.page_size = page_size

    def target(self) -> int:
        """The position to catch up to: the log's head, capped by ``until``."""
        head = self.store.head()
        return head if self.until is None else min(head, self.until)

    def positions(self) -> dict[str, int]:
        """Each projection's stored position."""
        rows = self.conn.execute("SELECT name, position FROM _positions").fetchall()
        stored = {str(name): int(position) for name, position in rows}
        return {p.name: stored.get(p.name, 0) for p in self.projections}

    def run(self, *, progress: Progress | None = None) -> tuple[int, int]:
        """Fold until every projection reached the target; return (position, events read)."""
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
            folded = fast_decode(position, type_name, state)
            for i in mine:
                if folded.position > after[i]:
                    batches[i].append(folded)
        for p, batch in zip(lagging, batches, strict=True):
            if batch:
                p.apply(self.conn, batch)
        # A projection already past this page (others are being refolded from 0) keeps its own.
        self.conn.executemany(
            "INSERT INTO _positions (name, position, version) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            [(p.name, max(reached, after[i]), p.version) for i, p in enumerate(lagging)])
        return reached, len(records)


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
