"""Every finding about every run, one row each, with where it sits in the log.

Findings arrive in several events (``FindingsRecorded`` from output contracts, statistics and
the monitor; ``ReviewCompleted`` from the pre-run review; ``OutcomeSuggested`` from the
post-run review, whose evidence becomes one informational row). This view flattens them into
one table an agent or the failure-pattern loop can filter by run, workspace, stage, phase,
signal or severity. ``RunRequested`` is folded too, only to know each run's workspace and stage
(the finding events carry just the run id).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.reviews.events import FindingsRecorded, OutcomeSuggested, ReviewCompleted
from quipu.core.reviews.findings import MAX_TEXT
from quipu.core.runs.events import RunRequested
from quipu.projections._base import Folded, Indexes, rows_as_dicts

__all__ = ["FindingsView", "finding_counts", "run_findings"]

_COLUMNS = ("position", "idx", "run_id", "workspace", "stage", "phase", "source", "signal",
            "severity", "message", "output", "file", "line", "fix", "pattern_id", "at")


class FindingsView:
    """Folds the finding events into ``findings`` (one row per finding, keyed by the event's
    position and the finding's index in it) and ``finding_runs`` (run -> workspace, stage)."""

    name: ClassVar[str] = "findings"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({
        RunRequested.TYPE, FindingsRecorded.TYPE, ReviewCompleted.TYPE, OutcomeSuggested.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("findings", "finding_runs")
    indexes: ClassVar[Indexes] = (("findings", ("run_id", "position")),
                                  ("findings", ("workspace", "position")))

    def create(self, db: sqlite_utils.Database) -> None:
        """The two tables; ``indexes`` serve per-run and per-workspace reads."""
        db.table("findings").create(
            {"position": int, "idx": int, "run_id": str, "workspace": str, "stage": str,
             "phase": str, "source": str, "signal": str, "severity": str, "message": str,
             "output": str, "file": str, "line": int, "fix": str, "pattern_id": str, "at": str},
            pk=("position", "idx"))
        db.table("finding_runs").create({"run_id": str, "workspace": str, "stage": str},
                                        pk="run_id")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Insert the page's findings (a run requested in the same page is known at once)."""
        known: dict[str, tuple[str, str]] = {}
        rows: list[tuple[Any, ...]] = []
        for f in events:
            e = f.event
            if isinstance(e, RunRequested):
                known[e.run_id] = (e.workspace, e.stage)
                conn.execute("INSERT OR REPLACE INTO finding_runs (run_id, workspace, stage) "
                             "VALUES (?, ?, ?)", (e.run_id, e.workspace, e.stage))
                continue
            run_id = getattr(e, "run_id", "")
            where = known.get(run_id) or _lookup(conn, run_id)
            known[run_id] = where
            for idx, finding in enumerate(_findings_of(e)):
                rows.append(_row(f, idx, run_id, where, finding))
        placeholders = ", ".join("?" * len(_COLUMNS))
        conn.executemany(f"INSERT OR REPLACE INTO findings ({', '.join(_COLUMNS)}) "
                         f"VALUES ({placeholders})", rows)


def _lookup(conn: sqlite3.Connection, run_id: str) -> tuple[str, str]:
    row = conn.execute("SELECT workspace, stage FROM finding_runs WHERE run_id = ?",
                       (run_id,)).fetchone()
    return (row[0], row[1]) if row else ("", "")


def _findings_of(e: Any) -> list[dict[str, Any]]:
    """The findings an event holds, each with its phase and source filled in."""
    if isinstance(e, FindingsRecorded):
        return [{"phase": e.phase, "source": e.source, **f} for f in e.findings]
    if isinstance(e, ReviewCompleted):
        return [{"phase": "pre_run", "source": ",".join(e.reviewers) or "review", **f}
                for f in e.findings]
    if isinstance(e, OutcomeSuggested):
        evidence = "; ".join(e.evidence)
        message = f"suggested outcome {e.outcome}" + (f": {evidence}" if evidence else "")
        return [{"phase": "post_run", "source": ",".join(e.reviewers) or "post_run",
                 "signal": "outcome_suggested", "severity": "info", "message": message}]
    return []


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _row(f: Folded, idx: int, run_id: str, where: tuple[str, str],
         finding: dict[str, Any]) -> tuple[Any, ...]:
    line = finding.get("line")
    return (f.position, idx, run_id, where[0], where[1], str(finding.get("phase", "")),
            str(finding.get("source", "")), str(finding.get("signal", "")),
            str(finding.get("severity", "info")), _text(finding.get("message", "")) or "",
            _text(finding.get("output")), _text(finding.get("file")),
            line if isinstance(line, int) and not isinstance(line, bool) else None,
            _text(finding.get("fix")), _text(finding.get("pattern_id")), f.at)


def run_findings(conn: sqlite3.Connection, run_id: str, *, limit: int = 50,
                 offset: int = 0) -> list[dict[str, Any]]:
    """One run's findings in log order (most severe first within the same event)."""
    cur = conn.execute(
        "SELECT phase, source, signal, severity, message, output, file, line, fix, pattern_id, "
        "stage, workspace, position FROM findings WHERE run_id = ? ORDER BY position, "
        "CASE severity WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, idx "
        "LIMIT ? OFFSET ?", (run_id, max(limit, 0), max(offset, 0)))
    return [{k: v for k, v in row.items() if v is not None} for row in rows_as_dicts(cur)]


def finding_counts(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """How many findings a run has, per severity (plus ``total``)."""
    counts = {"error": 0, "warning": 0, "info": 0}
    for severity, n in conn.execute(
            "SELECT severity, COUNT(*) FROM findings WHERE run_id = ? GROUP BY severity",
            (run_id,)):
        counts[str(severity)] = int(n)
    counts["total"] = sum(counts.values())
    return counts
