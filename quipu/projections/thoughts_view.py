"""What agents wrote down while they worked, newest first, per workspace or overall."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.project.events import ThoughtLogged
from quipu.projections._base import Folded, Indexes, rows_as_dicts

__all__ = ["ThoughtsView", "thoughts"]


class ThoughtsView:
    """Folds ``ThoughtLogged`` into one row per thought, keyed by log position."""

    name: ClassVar[str] = "thoughts"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({ThoughtLogged.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("thoughts",)
    indexes: ClassVar[Indexes] = (("thoughts", ("workspace", "position")),)

    def create(self, db: sqlite_utils.Database) -> None:
        """The table; ``indexes`` serves per-workspace reads."""
        db.table("thoughts").create({"position": int, "thought": str, "workspace": str,
                               "run_id": str, "at": str, "actor": str}, pk="position")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Insert the page's thoughts."""
        rows = []
        for f in events:
            e = f.event
            assert isinstance(e, ThoughtLogged)
            rows.append((f.position, e.thought, e.workspace, e.run_id, f.at, e.actor))
        conn.executemany("INSERT OR REPLACE INTO thoughts (position, thought, workspace, run_id,"
                         " at, actor) VALUES (?, ?, ?, ?, ?, ?)", rows)


def thoughts(conn: sqlite3.Connection, *, workspace: str | None = None, limit: int = 50,
             offset: int = 0) -> list[dict[str, Any]]:
    """Thoughts newest first, optionally only those about one workspace."""
    where, params = ("WHERE workspace = ? ", [workspace]) if workspace is not None else ("", [])
    cur = conn.execute(
        "SELECT thought, workspace, run_id, at, actor, position FROM thoughts "
        f"{where}ORDER BY position DESC LIMIT ? OFFSET ?", (*params, max(limit, 0),
                                                            max(offset, 0)))
    return rows_as_dicts(cur)
