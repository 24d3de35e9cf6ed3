"""The dashboard: what runs now, what waits on the agent, what just happened, what is best.

"New since you last looked" is a per-consumer cursor. Reading the dashboard never changes
anything, so a consumer moves its cursor with an explicit ``CursorMoved`` event (``mark_seen``),
and the dashboard lists what happened after that position. The ``cursors`` projection folds those
events; everything else is read from the runs view, from the lists its fold keeps (runs in
flight, runs that went wrong, each workspace's best) and from its indexes, so no query here
visits every run: each list is an index read in order and stopped at its limit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.project.events import CursorMoved
from quipu.projections._base import Folded, Indexes, rows_as_dicts
from quipu.projections.runs_lookup import (
    awaiting,
    best_by_workspace,
    best_results,
    experiment_outcomes,
    pipeline_verdict,
)
from quipu.projections.runs_view import ACTIVE_STATES

__all__ = ["ACTIVE_STATES", "MAX_LISTED", "QUERIES", "CursorsView", "cursor", "dashboard",
           "new_since", "state_md_runs"]

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


_BRIEF = ("r.run_id, r.workspace, r.stage, r.state, r.infra_outcome, r.ml_outcome, "
          "r.description AS reason, r.hypothesis, r.primary_metric, r.value, r.created_at, "
          "r.ended_at, r.finalized_at")

QUERIES = {
    "active": f"SELECT {_BRIEF}, r.worker, r.launched_at, r.last_seen_at, r.heartbeat_message "
              "FROM active_runs a JOIN runs r ON r.run_id = a.run_id "
              "ORDER BY a.created_position LIMIT ?",
    "active_count": "SELECT COUNT(*) FROM active_runs",
    # ``+r.state`` keeps the planner on the finalized_position index (read newest first and
    # stopped at the limit) instead of collecting every finalized run by state and sorting.
    "outcomes": f"SELECT {_BRIEF}, r.pipeline_run_id, r.results_spec FROM runs r WHERE "
                "r.finalized_position IS NOT NULL AND +r.state = 'finalized' AND r.retired = 0 "
                "AND r.closed_by IS NULL ORDER BY r.finalized_position DESC LIMIT ?",
    "failed": f"SELECT {_BRIEF}, r.error FROM troubled_runs t JOIN runs r "
              "ON r.run_id = t.run_id WHERE r.retired = 0 ORDER BY t.ended_position DESC LIMIT ?",
    "pending": "SELECT u.workspace, u.run_id, u.stage, r.state FROM unfinalized u "
               "JOIN runs r ON r.run_id = u.run_id ORDER BY u.workspace, u.position",
    **{f"since_{c}": f"SELECT {_BRIEF} FROM runs r WHERE r.{c} > ? ORDER BY r.{c} DESC LIMIT ?"
       for c in ("created_position", "ended_position", "finalized_position")},
    # How many since: the running total now, minus the total at the cursor, minus the ends an
    # adoption took back since (rare: each corrects a supervisor's mistake).
    "marks_total": "SELECT n FROM run_marks WHERE kind = ? ORDER BY position DESC LIMIT 1",
    "marks_upto": "SELECT n FROM run_marks WHERE kind = ? AND position <= ? "
                  "ORDER BY position DESC LIMIT 1",
    "unended_since": "SELECT COUNT(*) FROM run_unended WHERE position > ?",
}
"""Every query of the dashboard and of STATE.md's run sections (a test reads their plans)."""


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    return rows_as_dicts(conn.execute(sql, params))


def _since(conn: sqlite3.Connection, column: str, after: int) -> dict[str, Any]:
    kind = column.removesuffix("_position")
    total = conn.execute(QUERIES["marks_total"], (kind,)).fetchone()
    upto = conn.execute(QUERIES["marks_upto"], (kind, after)).fetchone()
    count = (total[0] if total else 0) - (upto[0] if upto else 0)
    if kind == "ended":
        count -= conn.execute(QUERIES["unended_since"], (after,)).fetchone()[0]
    runs = _rows(conn, QUERIES[f"since_{column}"], (after, MAX_LISTED))
    return {"count": int(count), "runs": runs}


def new_since(conn: sqlite3.Connection, cursor: int) -> dict[str, Any]:
    """Runs started, ended and finalized after ``cursor``: exact counts, the newest listed."""
    return {"cursor": cursor,
            "started": _since(conn, "created_position", cursor),
            "ended": _since(conn, "ended_position", cursor),
            "finalized": _since(conn, "finalized_position", cursor)}


def dashboard(conn: sqlite3.Connection, consumer: str, *, head: int) -> dict[str, Any]:
    """The overview for ``consumer``; ``head`` is the position the views were caught up to."""
    active = _rows(conn, QUERIES["active"], (MAX_LISTED,))
    for a in active:
        del a["launched_at"]
    pending: dict[str, dict[str, Any]] = {}
    for ws, run_id, stage, state in conn.execute(QUERIES["pending"]):
        entry = pending.setdefault(ws, {"count": 0, "example": run_id, "runs": []})
        entry["count"] += 1
        if len(entry["runs"]) < MAX_LISTED:
            entry["runs"].append({"run_id": run_id, "stage": stage, "state": state})
    outcomes = experiment_outcomes(conn, QUERIES["outcomes"], limit=RECENT)
    for o in outcomes:
        o.update(_goal(o.pop("results_spec")))
    failed = _rows(conn, QUERIES["failed"], (RECENT,))
    best = {b.pop("workspace"): b for b in best_by_workspace(conn)}
    seen = cursor(conn, consumer)
    return {
        "consumer": consumer,
        "active": {"count": int(conn.execute(QUERIES["active_count"]).fetchone()[0]),
                   "runs": active},
        "pending_finalization": {"count": sum(p["count"] for p in pending.values()),
                                 "by_workspace": pending},
        "recent_outcomes": outcomes,
        "failed_recent": failed,
        "best_by_workspace": best,
        "new_since_last_look": new_since(conn, seen),
        "cursor_position": head,
    }


def _goal(spec_json: str | None) -> dict[str, Any]:
    spec = json.loads(spec_json) if spec_json else {}
    return {"direction": spec.get("direction"), "min_value": spec.get("min_value"),
            "goal_value": spec.get("goal_value")}


def state_md_runs(conn: sqlite3.Connection, *, limit: int,
                  outcomes: int) -> dict[str, Any] | None:
    """The rows of STATE.md's run sections (lists capped at ``limit``, recent outcomes at
    ``outcomes``), or None when the project never ran anything (the sections are then left
    out)."""
    if conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None:
        return None
    active = _rows(conn, QUERIES["active"], (limit,))
    for a in active:
        del a["worker"], a["heartbeat_message"]
    shown, total = awaiting(conn, limit=limit)
    verdicts = {p: pipeline_verdict(conn, p)
                for p in dict.fromkeys(str(a["pipeline_run_id"]) for a in shown)}
    recent = experiment_outcomes(conn, QUERIES["outcomes"], limit=outcomes)
    for o in recent:
        o.update(_goal(o.pop("results_spec")))
    bests = best_results(conn, limit=limit)
    return {"active": active, "awaiting": shown, "awaiting_total": total,
            "verdicts": {p: v for p, v in verdicts.items() if v is not None},
            "outcomes": recent, "best": bests["rows"], "best_total": bests["total"],
            "best_by_metric": bests["by_metric"]}
