"""The post-run review's suggested ML outcome per run (``OutcomeSuggested``).

One row per run: the first suggestion recorded (the Run aggregate refuses a second), so
``list_unfinalized_runs`` shows it beside each run's finalize call without reading the runs'
streams. Only a suggestion: the agent's ``finalize_run`` decides.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.reviews.events import OutcomeSuggested
from quipu.projections._base import Folded, Indexes

__all__ = ["SuggestionsView", "suggestion"]


class SuggestionsView:
    """Folds ``OutcomeSuggested`` into one row per run."""

    name: ClassVar[str] = "suggestions"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({OutcomeSuggested.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("outcome_suggestions",)
    indexes: ClassVar[Indexes] = ()

    def create(self, db: sqlite_utils.Database) -> None:
        """The table, keyed by run id."""
        db.table("outcome_suggestions").create(
            {"run_id": str, "outcome": str, "evidence": str, "reviewers": str,
             "position": int}, pk="run_id")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """The first suggestion per run wins (as in the aggregate)."""
        rows = []
        for f in events:
            e = f.event
            assert isinstance(e, OutcomeSuggested)
            rows.append((e.run_id, e.outcome, json.dumps(e.evidence), json.dumps(e.reviewers),
                         f.position))
        conn.executemany("INSERT OR IGNORE INTO outcome_suggestions (run_id, outcome, "
                         "evidence, reviewers, position) VALUES (?, ?, ?, ?, ?)", rows)


def suggestion(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """``{outcome, evidence, reviewers}`` suggested for the run, or None."""
    row = conn.execute("SELECT outcome, evidence, reviewers FROM outcome_suggestions "
                       "WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    return {"outcome": row[0], "evidence": json.loads(row[1]), "reviewers": json.loads(row[2])}
