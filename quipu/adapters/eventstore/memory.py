"""An in-memory log for unit tests: the same recorder contract, nothing on disk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from ._base import RecorderEventStore, head_hash, link_pending

__all__ = ["open_memory_store"]


class _ChainedRecorder(POPOApplicationRecorder):
    """Links the chain under the in-memory recorder's lock."""

    def __init__(self, *, key: bytes | None = None) -> None:
        super().__init__()
        self.chain_key = key

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            last = self._stored_events[-1].state if self._stored_events else None
            # The parent numbers events len+1, len+2, ... under this same lock.
            first = len(self._stored_events) + 1
            positions = range(first, first + len(stored_events))
            linked = link_pending(head_hash(last, key=self.chain_key), positions, stored_events,
                                  key=self.chain_key)
            return super()._insert_events(linked, **kwargs)

    @property
    def stored(self) -> list[StoredEvent]:
        """The raw stored events (tests tamper with these to exercise ``verify``)."""
        return self._stored_events


def open_memory_store(*, key: bytes | None = None) -> RecorderEventStore:
    """A fresh, empty in-memory log (with ``key``: a keyed chain)."""
    recorder = _ChainedRecorder(key=key)

    def tail(position: int) -> bytes | None:
        # Positions here are list indexes + 1, with no gaps.
        stored = recorder.stored[:position]
        return bytes(stored[-1].state) if stored else None

    return RecorderEventStore(recorder, description="memory", tail=tail)
