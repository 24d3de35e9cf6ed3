"""The dashboard: what runs now, what waits on the agent, what just happened, what is best.

"New since you last looked" is a per-consumer cursor. Reading the dashboard never changes
anything, so a consumer moves its cursor with an explicit ``CursorMoved`` event (``mark_seen``),
and the dashboard lists what happened after that position. The ``cursors`` projection folds those
events; everything else is read from the runs view.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.project.events import CursorMoved
from quipu.core.runs import lifecycle
from quipu.projections._base import Folded, Indexes, rows_as_dicts
from quipu.projections.runs_lookup import current_best, unfinalized

__all__ = ["ACTIVE_STATES", "MAX_LISTED", "CursorsView", "cursor", "dashboard", "state_md_runs"]

ACTIVE_STATES = tuple(s.value for s in lifecycle.ACTIVE_STATES)
"""States of a run still in flight (not ``lifecycle.settled``)."""
_TROUBLE = tuple(lifecycle.infra_outcome(s) for s in lifecycle.TROUBLE_STATES)
"""The infra outcomes of runs that went wrong (the lifecycle table's trouble states)."""
MAX_LISTED = 20
"""Most rows in any one list of the dashboard (counts are always exact)."""
RECENT = 5


class CursorsView:
    """Folds ``CursorMoved``: each consumer's latest cursor."""

    name: ClassVar[str] = "cursors"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({CursorMoved.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("cursors",)
    indexes: ClassVar[Indexes] = ()

    def create(self, db: sqlite_utils.Database) -> None:
        """One row per consumer."""
        db.table("cursors").create({"consumer": str, "position": int, "at": str, "actor": str,
                                    "moved_at": int}, pk="consumer")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """The latest move wins (a consumer may move its cursor back to see things again)."""
        rows = []
        for f in events:
            e = f.event
            assert isinstance(e, CursorMoved)
            rows.append((e.consumer, e.position, f.at, e.actor, f.position))
        conn.executemany("INSERT OR REPLACE INTO cursors (consumer, position, at, actor, "
                         "moved_at) VALUES (?, ?, ?, ?, ?)", rows)


def cursor(conn: sqlite3.Connection, consumer: str) -> int:
    """The consumer's cursor (0: it never marked anything seen)."""
    row = conn.execute("SELECT position FROM cursors WHERE consumer = ?", (consumer,)).fetchone()
    return 0 if row is None else int(row[0])


_BRIEF = ("run_id, workspace, stage, state, infra_outcome, ml_outcome, description AS reason, "
          "hypothesis, primary_metric, value, created_at, ended_at, finalized_at")


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    return rows_as_dicts(conn.execute(sql, params))


def _since(conn: sqlite3.Connection, column: str, after: int) -> dict[str, Any]:
    total = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {column} > ?", (after,)).fetchone()[0]
    runs = _rows(conn, f"SELECT {_BRIEF} FROM runs WHERE {column} > ? ORDER BY {column} DESC "
                 "LIMIT ?", (after, MAX_LISTED))
    return {"count": int(total), "runs": runs}


def dashboard(conn: sqlite3.Connection, consumer: str, *, head: int) -> dict[str, Any]:
    """The overview for ``consumer``; ``head`` is the position the views were caught up to."""
    states = ",".join(f"'{s}'" for s in ACTIVE_STATES)
    active = _rows(conn, f"SELECT {_BRIEF}, worker, last_seen_at, heartbeat_message FROM runs "
                   f"WHERE state IN ({states}) ORDER BY created_position LIMIT ?", (MAX_LISTED,))
    pending: dict[str, dict[str, Any]] = {}
    for ws, run_id, stage, state in conn.execute(
            "SELECT u.workspace, u.run_id, u.stage, r.state FROM unfinalized u "
            "JOIN runs r ON r.run_id = u.run_id ORDER BY u.workspace, u.position"):
        entry = pending.setdefault(ws, {"count": 0, "example": run_id, "runs": []})
        entry["count"] += 1
        if len(entry["runs"]) < MAX_LISTED:
            entry["runs"].append({"run_id": run_id, "stage": stage, "state": state})
    outcomes = _rows(conn, f"SELECT {_BRIEF}, results_spec FROM runs WHERE state = 'finalized' "
                     "ORDER BY finalized_position DESC LIMIT ?", (RECENT,))
    for o in outcomes:
        o.update(_goal(o.pop("results_spec")))
    trouble = ",".join(f"'{s}'" for s in _TROUBLE)
    failed = _rows(conn, f"SELECT {_BRIEF}, error FROM runs WHERE infra_outcome IN ({trouble}) "
                   "ORDER BY ended_position DESC LIMIT ?", (RECENT,))
    best = {}
    for (ws,) in conn.execute("SELECT DISTINCT workspace FROM runs WHERE state = 'finalized' "
                              "AND value IS NOT NULL ORDER BY workspace"):
        best[ws] = current_best(conn, ws)
    seen = cursor(conn, consumer)
    active_total = conn.execute(f"SELECT COUNT(*) FROM runs WHERE state IN ({states})")
    return {
        "consumer": consumer,
        "active": {"count": int(active_total.fetchone()[0]), "runs": active},
        "pending_finalization": {"count": sum(p["count"] for p in pending.values()),
                                 "by_workspace": pending},
        "recent_outcomes": outcomes,
        "failed_recent": failed,
        "best_by_workspace": best,
        "new_since_last_look": {
            "cursor": seen,
            "started": _since(conn, "created_position", seen),
            "ended": _since(conn, "ended_position", seen),
            "finalized": _since(conn, "finalized_position", seen),
        },
        "cursor_position": head,
    }


def _goal(spec_json: str | None) -> dict[str, Any]:
    spec = json.loads(spec_json) if spec_json else {}
    return {"direction": spec.get("direction"), "min_value": spec.get("min_value"),
            "goal_value": spec.get("goal_value")}


def state_md_runs(conn: sqlite3.Connection, *, limit: int,
                  outcomes: int) -> dict[str, Any] | None:
    """The rows of STATE.md's run sections (lists capped at ``limit``, recent outcomes at
    ``outcomes``), or None when the
    project never ran anything (the sections are then left out)."""
    if conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None:
        return None
    states = ",".join(f"'{s}'" for s in ACTIVE_STATES)
    active = _rows(conn, f"SELECT {_BRIEF}, launched_at, last_seen_at FROM runs "
                   f"WHERE state IN ({states}) ORDER BY created_position LIMIT ?", (limit,))
    awaiting: list[dict[str, Any]] = []
    for (ws,) in conn.execute("SELECT DISTINCT workspace FROM unfinalized ORDER BY workspace"):
        awaiting += unfinalized(conn, ws)
    recent = _rows(conn, f"SELECT {_BRIEF}, results_spec FROM runs WHERE state = 'finalized' "
                   "ORDER BY finalized_position DESC LIMIT ?", (outcomes,))
    for o in recent:
        o.update(_goal(o.pop("results_spec")))
    best = []
    for (ws,) in conn.execute("SELECT DISTINCT workspace FROM runs WHERE state = 'finalized' "
                              "AND value IS NOT NULL ORDER BY workspace LIMIT ?", (limit,)):
        found = current_best(conn, ws)
        if found is not None:
            best.append({"workspace": ws, **found})
    return {"active": active, "awaiting": awaiting[:limit], "awaiting_total": len(awaiting),
            "outcomes": recent, "best": best}
