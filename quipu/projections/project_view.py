"""The project's name and research goal (one row), which head STATE.md, and the hosts that
share its log (the one that created it, then each that joined)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.project.events import HostJoined, ProjectInitialized
from quipu.projections._base import Folded, Indexes

__all__ = ["ProjectView", "project"]


class ProjectView:
    """Folds ``ProjectInitialized`` into the ``project`` table and, with ``HostJoined``, the
    ``hosts`` table."""

    name: ClassVar[str] = "project"
    version: ClassVar[int] = 2
    types: ClassVar[frozenset[str]] = frozenset({ProjectInitialized.TYPE, HostJoined.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("project", "hosts")
    indexes: ClassVar[Indexes] = ()

    def create(self, db: sqlite_utils.Database) -> None:
        """One row, id 1."""
        db.table("project").create({"id": int, "name": str, "goal": str, "created_at": str,
                              "created_by": str}, pk="id")
        db.table("hosts").create({"host": str, "slots": str, "joined": int, "at": str,
                                  "actor": str}, pk="host")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """The last initialisation wins (the aggregate allows only one)."""
        for f in events:
            e = f.event
            if isinstance(e, HostJoined):
                conn.execute("INSERT OR REPLACE INTO hosts VALUES (?, ?, 1, ?, ?)",
                             (e.host, json.dumps(e.slots), f.at, e.actor))
                continue
            assert isinstance(e, ProjectInitialized)
            conn.execute("INSERT OR REPLACE INTO project VALUES (1, ?, ?, ?, ?)",
                         (e.name, e.goal, f.at, e.actor))
            if e.host is not None:
                conn.execute("INSERT OR REPLACE INTO hosts VALUES (?, ?, 0, ?, ?)",
                             (e.host, json.dumps(e.slots or []), f.at, e.actor))


def project(conn: sqlite3.Connection) -> dict[str, Any]:
    """``{name, goal}``; both None before the project is initialised. Once another host has
    joined, also ``hosts``: ``[{host, slots}]`` in the order they came."""
    row = conn.execute("SELECT name, goal FROM project WHERE id = 1").fetchone()
    out: dict[str, Any] = ({"name": row[0], "goal": row[1]} if row
                           else {"name": None, "goal": None})
    hosts = conn.execute("SELECT host, slots, joined FROM hosts ORDER BY joined, at, host"
                         ).fetchall()
    if any(joined for _, _, joined in hosts):
        out["hosts"] = [{"host": host, "slots": json.loads(slots)} for host, slots, _ in hosts]
    return out
