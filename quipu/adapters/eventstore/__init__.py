"""Event store adapters: SQLite (embedded default), PostgreSQL (shared), memory (tests)."""

from .memory import open_memory_store
from .sqlite import open_sqlite_store

__all__ = ["open_memory_store", "open_sqlite_store"]
