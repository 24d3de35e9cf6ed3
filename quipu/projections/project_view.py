"""The project's name and research goal (one row), which head STATE.md."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.project.events import ProjectInitialized
from quipu.projections._base import Folded, Indexes

__all__ = ["ProjectView", "project"]


class ProjectView:
    """Folds ``ProjectInitialized`` into the ``project`` table."""

    name: ClassVar[str] = "project"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({ProjectInitialized.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("project",)
    indexes: ClassVar[Indexes] = ()

    def create(self, db: sqlite_utils.Database) -> None:
        """One row, id 1."""
        db.table("project").create({"id": int, "name": str, "goal": str, "created_at": str,
                              "created_by": str}, pk="id")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """The last initialisation wins (the aggregate allows only one)."""
        for f in events:
            e = f.event
            assert isinstance(e, ProjectInitialized)
            conn.execute("INSERT OR REPLACE INTO project VALUES (1, ?, ?, ?, ?)",
                         (e.name, e.goal, f.at, e.actor))


def project(conn: sqlite3.Connection) -> dict[str, Any]:
    """``{name, goal}``; both None before the project is initialised."""
    row = conn.execute("SELECT name, goal FROM project WHERE id = 1").fetchone()
    return {"name": row[0], "goal": row[1]} if row else {"name": None, "goal": None}
