"""Event store adapters: SQLite (embedded default), PostgreSQL (shared), memory (tests)."""

from .memory import open_memory_store
from .sqlite import TABLE as SQLITE_TABLE
from .sqlite import open_sqlite_store

__all__ = ["SQLITE_TABLE", "open_memory_store", "open_sqlite_store"]
