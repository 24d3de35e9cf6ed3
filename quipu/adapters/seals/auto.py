"""Automatic seals: the log seals its own head every N events or M minutes, as it is appended to.

``AutoSealingStore`` wraps any ``EventStore``. After an append that committed, it checks two
counters it keeps in memory (the position and time of the last seal it knows of, read once from
the seal file's last line when it opens), so deciding costs nothing and sealing costs one indexed
read of the head plus one appended line: never a scan of the log. Events appended after the last
manual seal are then covered too, up to N events or M minutes behind the head.

A seal that cannot be written (full disk, read-only file) never turns the committed append into
an error: it is logged and tried again at the next append.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from uuid import UUID

from quipu.core.audit import make_seal
from quipu.core.ports import EventStore, NewEvent, StoredRecord

from .local import LocalSealKeeper

__all__ = ["AutoSealingStore"]

log = logging.getLogger(__name__)


class AutoSealingStore:
    """An ``EventStore`` that appends a seal to ``keeper`` every ``every_events`` events or
    ``every_minutes`` minutes (whichever comes first), checked after each append."""

    def __init__(
        self,
        store: EventStore,
        keeper: LocalSealKeeper,
        *,
        every_events: int | None,
        every_minutes: float | None,
        clock: Callable[[], datetime],
    ) -> None:
        if every_events is None and every_minutes is None:
            raise ValueError("automatic seals need every_events or every_minutes")
        self.inner = store
        self.keeper = keeper
        self.every_events = every_events
        self.every = timedelta(minutes=every_minutes) if every_minutes is not None else None
        self.clock = clock
        self._sealing = threading.Lock()  # the executor's thread appends beside the tools'
        last = keeper.last()
        self.sealed_position = last.position if last is not None else 0
        self.sealed_at = _parse_time(last.at) if last is not None else None

    def _due(self, head: int, now: datetime) -> bool:
        if head <= self.sealed_position:
            return False  # nothing new to seal (another process sealed past us)
        if self.every_events is not None and head - self.sealed_position >= self.every_events:
            return True
        return self.every is not None and (
            self.sealed_at is None or now - self.sealed_at >= self.every
        )

    def _seal(self, head: int) -> None:
        with self._sealing:
            now = self.clock()
            if not self._due(head, now):
                return
            try:
                seal = make_seal(self.inner, now)
                self.keeper.append(seal)
            except Exception as exc:
                # The events are committed; failing the command now would invite a duplicate
                # retry. The next append tries again.
                log.warning("automatic seal at position %s not written: %s", head, exc)
                return
            self.sealed_position, self.sealed_at = seal.position, now

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append like the wrapped store, then seal the head if a seal is due."""
        positions = self.inner.append(events)
        if positions:
            self._seal(positions[-1])
        return positions

    def load(self, stream: UUID, *, after: int = 0) -> list[StoredRecord]:
        """See ``EventStore.load``."""
        return self.inner.load(stream, after=after)

    def read(self, *, after: int = 0, limit: int = 1000, until: int | None = None,
             types: Sequence[str] = ()) -> list[StoredRecord]:
        """See ``EventStore.read``."""
        return self.inner.read(after=after, limit=limit, until=until, types=types)

    def scan(self, *, after: int = 0, limit: int = 1000, until: int | None = None,
             types: Sequence[str] = ()) -> list[tuple[int, str, bytes]]:
        """See ``EventStore.scan``."""
        return self.inner.scan(after=after, limit=limit, until=until, types=types)

    def head(self) -> int:
        """See ``EventStore.head``."""
        return self.inner.head()

    def hash_at(self, position: int) -> str:
        """See ``EventStore.hash_at``."""
        return self.inner.hash_at(position)

    def wait_for_append(self, *, after: int, timeout: float) -> int:
        """See ``EventStore.wait_for_append``."""
        return self.inner.wait_for_append(after=after, timeout=timeout)

    def close(self) -> None:
        """Close the wrapped store."""
        self.inner.close()


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
