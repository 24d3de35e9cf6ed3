"""Snapshot stores: a cache of aggregate states so loading costs the same at any history length.

``SQLiteSnapshotStore`` (``.quipu/snapshots.db``, per machine, whatever the log is) is the default;
``MemorySnapshotStore`` serves tests and in-memory projects. Losing either only costs a replay.
"""

from .memory import MemorySnapshotStore
from .sqlite import SQLiteSnapshotStore

__all__ = ["MemorySnapshotStore", "SQLiteSnapshotStore"]
