"""Failure patterns as agents read them, and the findings count behind the dashboard's alert.

``PatternsView`` folds the pattern streams (``core.patterns.events``) into one row per pattern:
status, what it is, how often and where it was seen, who decided and why, and the positions
the dashboard's "new since you last looked" compares with a consumer's cursor. It also keeps
``finding_marks``: one row per ``FindingsRecorded`` / ``ReviewCompleted`` that carried
findings, with the running total, so "how many findings since position p" is two index reads
at any history length (the full findings read model is ``findings_view``'s job).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.patterns.events import (
    PatternApproved,
    PatternProposed,
    PatternRejected,
    PatternSeen,
)
from quipu.core.reviews.events import FindingsRecorded, ReviewCompleted
from quipu.core.reviews.findings import severity_rank
from quipu.projections._base import Folded, Indexes, rows_as_dicts

__all__ = ["ALERT_ROWS", "MAX_APPROVED", "RUNS_KEPT", "PatternsView", "alerts", "approved",
           "get", "ids", "listing", "state_md_patterns"]

RUNS_KEPT = 5
"""Runs a pattern row lists (the newest); ``count`` counts them all."""
ALERT_ROWS = 3
"""Rows of each list in the dashboard's alert."""
MAX_APPROVED = 200
"""Approved patterns handed to one review at most (the most recently approved)."""
_TEXT = 100


class PatternsView:
    """One row per failure pattern, and the running count of findings."""

    name: ClassVar[str] = "patterns"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({
        PatternProposed.TYPE, PatternSeen.TYPE, PatternApproved.TYPE, PatternRejected.TYPE,
        FindingsRecorded.TYPE, ReviewCompleted.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("patterns", "finding_marks")
    indexes: ClassVar[Indexes] = (("patterns", ("status", "decided_position")),
                                  ("patterns", ("proposed_position",)),
                                  ("patterns", ("seen_position",)))

    def create(self, db: sqlite_utils.Database) -> None:
        """The two tables."""
        db.table("patterns").create({
            "pattern_id": str, "key": str, "status": str, "signal": str, "source": str,
            "stage": str, "symptom": str, "severity": str, "root_cause": str,
            "prevention": str, "detection": str, "count": int, "first_run": str,
            "last_run": str, "runs": str, "outcomes": str, "proposed_position": int,
            "proposed_at": str, "seen_position": int, "seen_at": str, "decided_position": int,
            "decided_at": str, "decided_by": str, "decision_reason": str,
        }, pk="pattern_id", not_null={"status", "count"})
        db.table("finding_marks").create({
            "position": int, "run_id": str, "origin": str, "count": int, "worst": str,
            "total": int}, pk="position")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page in log order."""
        for f in events:
            e = f.event
            if isinstance(e, FindingsRecorded | ReviewCompleted):
                _mark(conn, f, e)
            elif isinstance(e, PatternProposed):
                conn.execute(
                    "INSERT OR REPLACE INTO patterns (pattern_id, key, status, signal, source, "
                    "stage, symptom, severity, prevention, count, first_run, last_run, runs, "
                    "outcomes, proposed_position, proposed_at, seen_position, seen_at) VALUES "
                    "(?, ?, 'candidate', ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.pattern_id, e.key, e.signal, e.source, e.stage, e.symptom, e.severity,
                     e.prevention, e.first_run, e.first_run, json.dumps([e.first_run]),
                     json.dumps({e.outcome: 1}), f.position, f.at, f.position, f.at))
            elif isinstance(e, PatternSeen):
                row = conn.execute("SELECT runs, outcomes FROM patterns WHERE pattern_id = ?",
                                   (e.pattern_id,)).fetchone()
                if row is None:
                    continue
                runs = [*json.loads(row[0]), *e.runs][-RUNS_KEPT:]
                outcomes = json.loads(row[1])
                outcomes[e.outcome] = outcomes.get(e.outcome, 0) + 1
                conn.execute(
                    "UPDATE patterns SET count = count + 1, last_run = ?, runs = ?, "
                    "outcomes = ?, seen_position = ?, seen_at = ? WHERE pattern_id = ?",
                    (e.runs[-1], json.dumps(runs), json.dumps(outcomes, sort_keys=True),
                     f.position, f.at, e.pattern_id))
            elif isinstance(e, PatternApproved):
                conn.execute(
                    "UPDATE patterns SET status = 'approved', detection = ?, "
                    "root_cause = COALESCE(?, root_cause), prevention = COALESCE(?, prevention), "
                    "decided_position = ?, decided_at = ?, decided_by = ?, decision_reason = ? "
                    "WHERE pattern_id = ?",
                    (None if e.detection is None else json.dumps(e.detection, sort_keys=True),
                     e.root_cause, e.prevention, f.position, f.at, e.actor, e.reason,
                     e.pattern_id))
            elif isinstance(e, PatternRejected):
                conn.execute(
                    "UPDATE patterns SET status = 'rejected', decided_position = ?, "
                    "decided_at = ?, decided_by = ?, decision_reason = ? WHERE pattern_id = ?",
                    (f.position, f.at, e.actor, e.reason, e.pattern_id))


def _mark(conn: sqlite3.Connection, f: Folded, e: FindingsRecorded | ReviewCompleted) -> None:
    count = len(e.findings) + e.omitted
    if count == 0:
        return
    ranks = [severity_rank(str(x.get("severity", "info"))) for x in e.findings
             if x.get("severity") in ("info", "warning", "error")]
    worst = ("info", "warning", "error")[max(ranks)] if ranks else None
    origin = (f"review:{e.decision}" if isinstance(e, ReviewCompleted)
              else f"{e.phase}:{e.source}")
    row = conn.execute("SELECT total FROM finding_marks ORDER BY position DESC LIMIT 1"
                       ).fetchone()
    total = (row[0] if row else 0) + count
    conn.execute("INSERT OR REPLACE INTO finding_marks VALUES (?, ?, ?, ?, ?, ?)",
                 (f.position, e.run_id, origin, count, worst, total))


_COLUMNS = ("pattern_id, status, signal, source, stage, symptom, severity, root_cause, "
            "prevention, detection, count, first_run, last_run, runs, outcomes, "
            "proposed_position, proposed_at, seen_at, decided_position, decided_at, "
            "decided_by, decision_reason")


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        for key in ("detection", "runs", "outcomes"):
            r[key] = json.loads(r[key]) if r.get(key) else None
    return rows


def get(conn: sqlite3.Connection, pattern_id: str) -> dict[str, Any] | None:
    """One pattern in full (the decision's reason cut at 1,000 characters), or None."""
    rows = _decoded(rows_as_dicts(conn.execute(
        f"SELECT {_COLUMNS} FROM patterns WHERE pattern_id = ?", (pattern_id,))))
    if rows and rows[0]["decision_reason"]:  # a reason has no cap; the log keeps it whole
        rows[0]["decision_reason"] = _cut(rows[0]["decision_reason"], 1000)
    return rows[0] if rows else None


def listing(conn: sqlite3.Connection, *, status: str | None = None, stage: str | None = None,
            limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of patterns, most recently seen first, each in brief, and how many match."""
    where, params = [], []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if stage is not None:
        where.append("stage = ?")
        params.append(stage)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    total = int(conn.execute(f"SELECT COUNT(*) FROM patterns{clause}", params).fetchone()[0])
    rows = rows_as_dicts(conn.execute(
        "SELECT pattern_id, status, stage, severity, signal, symptom, count, "
        f"detection IS NOT NULL AS checkable FROM patterns{clause} "
        "ORDER BY seen_position DESC LIMIT ? OFFSET ?", (*params, limit, offset)))
    for r in rows:
        r["symptom"] = _cut(r["symptom"], 80)
        r["checkable"] = bool(r["checkable"])
    return rows, total


def approved(conn: sqlite3.Connection, *, stage: str | None = None) -> list[dict[str, Any]]:
    """Approved patterns that apply to ``stage`` (theirs, or any stage's when None), most
    recently approved first, at most ``MAX_APPROVED``."""
    sql = f"SELECT {_COLUMNS} FROM patterns WHERE status = 'approved'"
    params: list[Any] = []
    if stage is not None:
        sql += " AND (stage = ? OR stage IS NULL)"
        params.append(stage)
    sql += " ORDER BY decided_position DESC LIMIT ?"
    return _decoded(rows_as_dicts(conn.execute(sql, (*params, MAX_APPROVED))))


def ids(conn: sqlite3.Connection, *, limit: int = 2000) -> list[str]:
    """Pattern ids (for did-you-mean), most recently seen first."""
    return [str(r[0]) for r in conn.execute(
        "SELECT pattern_id FROM patterns ORDER BY seen_position DESC LIMIT ?", (limit,))]


def _cut(text: str | None, limit: int = _TEXT) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def alerts(conn: sqlite3.Connection, cursor: int) -> dict[str, Any] | None:
    """Findings and candidate patterns that appeared after ``cursor`` (exact counts, the
    newest ``ALERT_ROWS`` of each, at most about 1,400 characters of JSON), or None when
    there are none."""
    last = conn.execute("SELECT total FROM finding_marks ORDER BY position DESC LIMIT 1"
                        ).fetchone()
    upto = conn.execute("SELECT total FROM finding_marks WHERE position <= ? "
                        "ORDER BY position DESC LIMIT 1", (cursor,)).fetchone()
    findings = (last[0] if last else 0) - (upto[0] if upto else 0)
    candidates = int(conn.execute(
        "SELECT COUNT(*) FROM patterns WHERE proposed_position > ?", (cursor,)).fetchone()[0])
    if findings == 0 and candidates == 0:
        return None
    out: dict[str, Any] = {}
    if findings:
        latest = rows_as_dicts(conn.execute(
            "SELECT run_id, origin, count, worst FROM finding_marks WHERE position > ? "
            "ORDER BY position DESC LIMIT ?", (cursor, ALERT_ROWS)))
        for r in latest:
            r["origin"] = _cut(r["origin"], 40)
        out["findings"] = {"count": findings, "latest": latest}
    if candidates:
        rows = rows_as_dicts(conn.execute(
            "SELECT pattern_id, status, stage, severity, symptom, count FROM patterns "
            "WHERE proposed_position > ? ORDER BY proposed_position DESC LIMIT ?",
            (cursor, ALERT_ROWS)))
        for r in rows:
            r["symptom"] = _cut(r["symptom"], 80)
        out["candidate_patterns"] = {"count": candidates, "latest": rows,
                                     "review": "manage_patterns(action='list', "
                                               "status='candidate')"}
    return out


def state_md_patterns(conn: sqlite3.Connection, *, limit: int) -> dict[str, Any] | None:
    """STATE.md's failure-pattern rows: the ``limit`` most recently approved, how many are
    approved and how many candidates wait; None when there is no pattern at all."""
    counts = dict(conn.execute("SELECT status, COUNT(*) FROM patterns GROUP BY status"
                               ).fetchall())
    if not counts:
        return None
    rows = rows_as_dicts(conn.execute(
        "SELECT pattern_id, stage, severity, symptom, prevention, detection, count "
        "FROM patterns WHERE status = 'approved' ORDER BY decided_position DESC LIMIT ?",
        (limit,)))
    for r in rows:
        rule = json.loads(r.pop("detection")) if r.get("detection") else None
        r["checks"] = rule["kind"] if rule else None
    return {"approved": rows, "approved_total": int(counts.get("approved", 0)),
            "candidates": int(counts.get("candidate", 0))}
