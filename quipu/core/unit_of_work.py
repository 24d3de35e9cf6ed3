"""The unit of work every command handler uses: load aggregates, commit atomically, retry.

A handler loads the aggregates it needs (``load``), decides (guards raise typed errors; nothing is
written yet), and appends every event of every aggregate it touched in ONE transaction
(``commit``). ``attempt`` runs the whole handler again when it lost a race for a stream version
(``Conflict(code="concurrency_conflict")``), a bounded number of times.

Loading costs the same at any history length: an aggregate that can be snapshotted is restored
from its latest snapshot and only the events after it are replayed. Snapshots are a cache, not a
record: a snapshot is used only when the log still holds, at the snapshot's version, the very
event the snapshot was taken after (same chain hash); anything else (a log restored from an older
copy, a garbled or outdated snapshot) is ignored and the stream is replayed in full, so a
snapshot can never make a command decide on state the log does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from .aggregate import Aggregate, Meta
from .chain import split_state
from .errors import Conflict
from .log import decode
from .ports import Clock, EventStore, NewEvent, Snapshot, SnapshotStore
from .validation import MIN_REASON_LENGTH, check_reason

__all__ = ["SNAPSHOT_EVERY", "UnitOfWork"]

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

log = logging.getLogger("quipu.unit_of_work")

SNAPSHOT_EVERY = 100
"""Events replayed after the newest snapshot (or from the start) before a new one is taken."""


class UnitOfWork:
    """Loads aggregates from the log and commits the events commands decide, atomically."""

    def __init__(self, store: EventStore, clock: Clock, *,
                 snapshots: SnapshotStore | None = None, snapshot_every: int = SNAPSHOT_EVERY,
                 min_reason_length: int = MIN_REASON_LENGTH, max_attempts: int = 5) -> None:
        self.store = store
        self.clock = clock
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.min_reason_length = min_reason_length
        self.max_attempts = max_attempts
        self.replayed = 0
        """Events folded by ``load`` so far (what a snapshot saves is visible here)."""

    # --- loading -------------------------------------------------------------------------------

    def load(self, cls: type[A], name: str) -> A:
        """Rebuild an aggregate: from its newest valid snapshot plus the events after it."""
        agg = cls(name)
        records = None
        snap = self._snapshot(agg)
        if snap is not None:
            tail = self.store.load(agg.stream, after=snap.version - 1)
            if tail and tail[0].version == snap.version and _hash(tail[0].state) == snap.last_hash:
                try:
                    agg.restore(snap.state, version=snap.version)
                    records = tail[1:]
                except Exception:  # a garbled snapshot is only a cache miss
                    log.warning("snapshot of %s %s does not restore; replaying its stream",
                                agg.KIND, name, exc_info=True)
                    agg = cls(name)
            if records is None:
                self._discard(agg)
        if records is None:
            records = self.store.load(agg.stream)
        last = None
        for record in records:
            agg.replay(decode(record).event)
            last = record
        self.replayed += len(records)
        if last is not None and len(records) >= self.snapshot_every:
            self._take(agg, last.state)
        return agg

    def _snapshot(self, agg: Aggregate) -> Snapshot | None:
        if self.snapshots is None or not agg.SNAPSHOT_SCHEMA:
            return None
        try:
            snap = self.snapshots.get(agg.stream)
        except Exception:  # an unreadable snapshot store is a cache miss, never an error
            log.warning("snapshot store unreadable; replaying %s %s in full", agg.KIND, agg.name,
                        exc_info=True)
            return None
        if snap is None or snap.kind != agg.KIND or snap.schema != agg.SNAPSHOT_SCHEMA:
            return None
        return snap

    def _take(self, agg: Aggregate, last_state: bytes) -> None:
        if self.snapshots is None or not agg.SNAPSHOT_SCHEMA:
            return
        try:
            self.snapshots.put(Snapshot(stream=agg.stream, kind=agg.KIND,
                                        schema=agg.SNAPSHOT_SCHEMA, version=agg.version,
                                        last_hash=_hash(last_state), state=agg.snapshot()))
        except Exception:  # a full disk or a locked cache must not fail the command
            log.warning("could not store a snapshot of %s %s", agg.KIND, agg.name,
                        exc_info=True)

    def _discard(self, agg: Aggregate) -> None:
        if self.snapshots is None:
            return
        try:
            self.snapshots.discard(agg.stream)
        except Exception:
            log.warning("could not discard the snapshot of %s %s", agg.KIND, agg.name,
                        exc_info=True)

    # --- committing ----------------------------------------------------------------------------

    def commit(self, *aggregates: Aggregate) -> list[int]:
        """Append the pending events of every aggregate in ONE transaction; their positions.

        Raises ``Conflict(code="concurrency_conflict")`` when another command changed one of the
        streams since it was loaded; nothing is written then.
        """
        batch: list[NewEvent] = []
        for agg in aggregates:
            for i, event in enumerate(agg.pending):
                batch.append(NewEvent(agg.stream, agg.version + 1 + i, event))
        return self.store.append(batch)

    def attempt(self, command: Callable[[], T]) -> T:
        """Run ``command`` (load, decide, commit), again if it lost a race, at most
        ``max_attempts`` times; then the conflict is raised with a hint."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return command()
            except Conflict as exc:
                if exc.code != "concurrency_conflict":
                    raise
                if attempt == self.max_attempts:
                    raise Conflict(
                        f"gave up after {attempt} attempts: other commands kept changing "
                        "the same workspace or slot",
                        code="concurrency_conflict",
                        hint="wait for the other agent's commands to finish and retry; "
                        "nothing was written",
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # --- who, why, when ------------------------------------------------------------------------

    def meta(self, actor: str, reason: str | None, *, what: str = "reason") -> Meta:
        """Stamp a command: ``reason`` must be a real sentence (``min_reason_length``)."""
        text = check_reason(reason, minimum=self.min_reason_length, what=what)
        return Meta(actor=actor, reason=text, at=self.clock.now())

    def stamp(self, actor: str, reason: str) -> Meta:
        """Stamp a fact recorded by machinery (an executor, the supervisor): no length rule."""
        return Meta(actor=actor, reason=reason, at=self.clock.now())


def _hash(state: bytes) -> str:
    return split_state(state).hash
