"""Snapshots kept in a dict (tests, and projects whose log lives in memory)."""

from __future__ import annotations

import threading
from uuid import UUID

from quipu.core.ports import Snapshot

__all__ = ["MemorySnapshotStore"]


class MemorySnapshotStore:
    """The newest snapshot of each stream, in memory."""

    def __init__(self) -> None:
        self._snapshots: dict[UUID, Snapshot] = {}
        self._lock = threading.Lock()

    def get(self, stream: UUID) -> Snapshot | None:
        """The newest snapshot of ``stream``, or None."""
        with self._lock:
            return self._snapshots.get(stream)

    def put(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a newer one of its stream is already kept."""
        with self._lock:
            held = self._snapshots.get(snapshot.stream)
            if held is None or held.version <= snapshot.version:
                self._snapshots[snapshot.stream] = snapshot

    def discard(self, stream: UUID) -> None:
        """Forget the stream's snapshot."""
        with self._lock:
            self._snapshots.pop(stream, None)

    def close(self) -> None:
        """Nothing to release."""
