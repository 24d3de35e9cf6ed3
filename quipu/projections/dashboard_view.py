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
from quipu.core.runs.results import non_finite_reason
from quipu.projections._base import Folded, Indexes, rows_as_dicts
from quipu.projections.runs_lookup import (
    awaiting,
    best_results,
    experiment_outcomes,
    pipeline_verdict,
)
from quipu.projections.runs_view import ACTIVE_STATES

__all__ = ["ACTIVE_STATES", "BUDGET", "MAX_LISTED", "QUERIES", "SECTIONS", "CursorsView",
           "cursor", "dashboard", "new_since", "section_page", "state_md_runs"]

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
    # Runs in flight or awaiting a verdict whose metrics went NaN or infinite: both lists are
    # what waits on the agent now, not history, so this reads a handful of runs' summaries.
    **{f"non_finite_{kind}": "SELECT r.run_id, r.workspace, r.stage, r.state, s.name, "
       # CROSS JOIN keeps SQLite reading the short list first, in its index order.
       f"s.non_finite FROM {table} w CROSS JOIN metric_summaries s ON s.run_id = w.run_id "
       f"JOIN runs r ON r.run_id = w.run_id WHERE s.non_finite IS NOT NULL ORDER BY {order} "
       "LIMIT ?"
       for kind, table, order in (("active", "active_runs", "w.created_position"),
                                  ("pending", "unfinalized", "w.workspace, w.position"))},
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


def _since(conn: sqlite3.Connection, column: str, after: int, *, limit: int = MAX_LISTED,
           offset: int = 0) -> dict[str, Any]:
    kind = column.removesuffix("_position")
    total = conn.execute(QUERIES["marks_total"], (kind,)).fetchone()
    upto = conn.execute(QUERIES["marks_upto"], (kind, after)).fetchone()
    count = (total[0] if total else 0) - (upto[0] if upto else 0)
    if kind == "ended":
        count -= conn.execute(QUERIES["unended_since"], (after,)).fetchone()[0]
    runs = _rows(conn, QUERIES[f"since_{column}"] + " OFFSET ?", (after, limit, offset))
    return {"count": int(count), "runs": runs}


def new_since(conn: sqlite3.Connection, cursor: int, *,
              limit: int = MAX_LISTED) -> dict[str, Any]:
    """Runs started, ended and finalized after ``cursor``: exact counts, the newest ``limit``
    listed."""
    return {"cursor": cursor,
            "started": _since(conn, "created_position", cursor, limit=limit),
            "ended": _since(conn, "ended_position", cursor, limit=limit),
            "finalized": _since(conn, "finalized_position", cursor, limit=limit)}


BUDGET = 6000
"""Characters of JSON the overview stays within by default: its lists are cut (the longest
first) until it fits, and ``more`` says how to page each list that was cut."""
OVERVIEW = 5
"""Rows per list in the overview before the budget cuts any."""
SECTIONS = ("active", "pending", "outcomes", "failed", "best", "started", "ended",
            "finalized")
"""The lists ``dashboard(section=...)`` pages."""
_TEXT = 100


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    """A run row as the overview shows it: no empty fields, the hypothesis (else the reason)
    on one line of at most 100 characters."""
    text = " ".join(str(row.get("hypothesis") or row.get("reason") or "").split())
    out = {k: v for k, v in row.items() if v is not None and k not in ("reason", "hypothesis")}
    if text:
        out["hypothesis"] = text if len(text) <= _TEXT else text[:_TEXT - 1] + "…"
    return out


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    row.update(_goal(row.pop("results_spec")))
    row.pop("pipeline_run_id", None)
    return _brief(row)


def dashboard(conn: sqlite3.Connection, consumer: str, *, head: int,
              budget: int = BUDGET) -> dict[str, Any]:
    """The overview for ``consumer``; ``head`` is the position the views were caught up to.

    Every count is exact; each list shows its first rows, cut (longest list first) until the
    answer fits in ``budget`` characters of JSON, and ``more`` names the ``dashboard(section=
    ..., offset=...)`` call that pages each list that has more."""
    active = [_brief(a) for a in _rows(conn, QUERIES["active"] + " OFFSET 0", (OVERVIEW,))]
    for a in active:
        a.pop("launched_at", None)
    pending: dict[str, dict[str, Any]] = {}
    pending_total = 0
    for ws, run_id, stage, state in conn.execute(QUERIES["pending"]):
        pending_total += 1
        entry = pending.setdefault(ws, {"count": 0, "example": run_id, "runs": []})
        entry["count"] += 1
        if len(entry["runs"]) < 3:
            entry["runs"].append({"run_id": run_id, "stage": stage, "state": state})
    outcomes = [_outcome(o) for o in experiment_outcomes(conn, QUERIES["outcomes"],
                                                         limit=OVERVIEW)]
    failed = [_brief(f) for f in _rows(conn, QUERIES["failed"] + " OFFSET 0", (OVERVIEW,))]
    bests = best_results(conn, limit=OVERVIEW)
    # Runs in flight or awaiting a verdict whose metric went NaN/inf: an alert, never cut.
    non_finite = [
        {"run_id": a["run_id"], "workspace": a["workspace"], "stage": a["stage"],
         "state": a["state"], "alert": non_finite_reason(a["name"], json.loads(a["non_finite"]))}
        for kind in ("active", "pending")
        for a in _rows(conn, QUERIES[f"non_finite_{kind}"], (OVERVIEW,))][:OVERVIEW]
    seen = cursor(conn, consumer)
    since = new_since(conn, seen, limit=OVERVIEW)
    for part in ("started", "ended", "finalized"):
        since[part]["runs"] = [{k: r[k] for k in ("run_id", "workspace", "stage", "state")}
                               for r in since[part]["runs"]]
    out: dict[str, Any] = {
        "consumer": consumer,
        "active": {"count": int(conn.execute(QUERIES["active_count"]).fetchone()[0]),
                   "runs": active},
        "pending_finalization": {"count": pending_total, "workspaces": len(pending),
                                 "by_workspace": dict(list(pending.items())[:OVERVIEW])},
        "recent_outcomes": outcomes,
        "failed_recent": failed,
        "non_finite_metrics": non_finite,
        "best_by_workspace": {b.pop("workspace"): _brief(b) for b in bests["rows"]},
        "best_total": bests["total"],
        "best_by_metric": bests["by_metric"],
        "new_since_last_look": since,
        "cursor_position": head,
    }
    totals = {"active": out["active"]["count"], "pending": len(pending),
              "best": bests["total"], **{p: since[p]["count"] for p in ("started", "ended",
                                                                       "finalized")}}
    cut = _fit(out, budget - 600)  # room for ``more``
    out["more"] = _more(out, totals, cut)
    return out


def _shown(out: dict[str, Any]) -> dict[str, Any]:
    """The overview's lists, by section (each a list or dict the budget may cut)."""
    return {"active": out["active"]["runs"],
            "pending": out["pending_finalization"]["by_workspace"],
            "outcomes": out["recent_outcomes"], "failed": out["failed_recent"],
            "best": out["best_by_workspace"],
            **{p: out["new_since_last_look"][p]["runs"] for p in ("started", "ended",
                                                                 "finalized")}}


def _fit(out: dict[str, Any], budget: int) -> set[str]:
    """Cut the last row of the longest list until ``out`` fits in ``budget`` characters;
    the sections cut."""
    cut: set[str] = set()
    while len(json.dumps(out)) > budget:
        lists = {name: rows for name, rows in _shown(out).items() if rows}
        if not lists:
            break
        name = max(lists, key=lambda n: (len(json.dumps(lists[n])), n))
        rows = lists[name]
        if isinstance(rows, dict):
            rows.pop(next(reversed(rows)))
        else:
            rows.pop()
        cut.add(name)
    return cut


def _more(out: dict[str, Any], totals: dict[str, int], cut: set[str]) -> dict[str, str]:
    """For each list with more rows than shown, the call that pages the rest. Outcomes and
    failures are not counted (that would visit the history): a full or cut list may have
    more."""
    more = {}
    for name, rows in _shown(out).items():
        total = totals.get(name)
        if (len(rows) < total if total is not None
                else len(rows) >= OVERVIEW or name in cut):
            more[name] = f"dashboard(section={name!r}, offset={len(rows)})"
    return more


def section_page(conn: sqlite3.Connection, consumer: str, section: str, *, offset: int,
                 limit: int) -> dict[str, Any]:
    """One page of one of the dashboard's lists (``SECTIONS``), its rows in full."""
    offset, limit = max(offset, 0), max(limit, 0)
    total: int | None = None
    rows: list[dict[str, Any]]
    if section == "active":
        rows = _rows(conn, QUERIES["active"] + " OFFSET ?", (limit, offset))
        total = int(conn.execute(QUERIES["active_count"]).fetchone()[0])
    elif section == "failed":
        rows = _rows(conn, QUERIES["failed"] + " OFFSET ?", (limit, offset))
    elif section == "outcomes":
        rows = experiment_outcomes(conn, QUERIES["outcomes"], limit=offset + limit)[offset:]
        for o in rows:
            o.update(_goal(o.pop("results_spec")))
    elif section == "pending":
        listed: dict[str, list[dict[str, Any]]] = {}
        for ws, run_id, stage, state in conn.execute(QUERIES["pending"]):
            listed.setdefault(ws, []).append({"run_id": run_id, "stage": stage,
                                              "state": state})
        total = len(listed)
        rows = [{"workspace": ws, "count": len(r), "runs": r}
                for ws, r in list(listed.items())[offset:offset + limit]]
    elif section == "best":
        found = best_results(conn, limit=limit, offset=offset)
        rows, total = found["rows"], found["total"]
    else:
        column = f"{section}_position" if section != "started" else "created_position"
        seen = cursor(conn, consumer)
        page = _since(conn, column, seen, limit=limit, offset=offset)
        rows, total = page["runs"], page["count"]
    nxt = offset + len(rows)
    has_more = nxt < total if total is not None else len(rows) == limit and limit > 0
    return {"consumer": consumer, "section": section, "offset": offset, "rows": rows,
            "total": total, "next_offset": nxt if has_more else None}


def _goal(spec_json: str | None) -> dict[str, Any]:
    spec = json.loads(spec_json) if spec_json else {}
    return {"direction": spec.get("direction"), "min_value": spec.get("min_value"),
            "goal_value": spec.get("goal_value")}


def state_md_runs(conn: sqlite3.Connection, *, limit: int, outcomes: int,
                  best: int = 10) -> dict[str, Any] | None:
    """The rows of STATE.md's run sections (runs active or awaiting finalization capped at
    ``limit``, recent outcomes at ``outcomes``, bests at ``best``), or None when the project
    never ran anything (the sections are then left out)."""
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
    bests = best_results(conn, limit=best)
    # Blocked runs hold no gate and are in no other list; the state index finds them. They are
    # few (the supervisor cancels a blocked run after 7 days), so they are sorted here: an
    # ORDER BY in SQL would sort in a temp B-tree, and rowid order is not creation order.
    found = _rows(conn, "SELECT run_id, workspace, stage, created_position FROM runs "
                  "WHERE state = 'blocked'", ())
    found.sort(key=lambda r: -int(r["created_position"] or 0))
    blocked = [{k: r[k] for k in ("run_id", "workspace", "stage")} for r in found[:limit]]
    return {"active": active, "blocked": blocked, "awaiting": shown, "awaiting_total": total,
            "verdicts": {p: v for p, v in verdicts.items() if v is not None},
            "outcomes": recent, "best": bests["rows"], "best_total": bests["total"],
            "best_by_metric": bests["by_metric"]}
