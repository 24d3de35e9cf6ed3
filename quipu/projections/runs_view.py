"""Runs: every stage execution with its request, lifecycle, metrics, verdict and tags.

One row per run holds what an agent asks about it: where it stands (``state``), how the machinery
ended it (``infra_outcome``, derived only by ``core.runs.lifecycle.infra_outcome`` and kept after
finalization), what the agent made of it (``ml_outcome``, ``results``, ``comparison``), and its
provenance (version, config, inputs as requested and as launched, outputs, the environment it
ran with). Beside it: the latest
metric summaries per run, run tags, pipeline runs, the inputs that link a run to the runs it
read, and the unfinalized queue (the runs that hold their workspace's finalization gate, exactly
as the workspace recorded it with ``FinalizationRequired`` / ``FinalizationCleared``).

What STATE.md and the dashboard show is kept by the fold too, so that reading it costs the same
at any length of history (no query visits every run): the runs in flight (``active_runs``), the
runs that went wrong (``troubled_runs``), the finalized runs with a value (``valued_runs``, with
the position of their latest ``best*`` tag) and each workspace's current best (``best_runs``),
all recomputed at the end of a page from the final rows of the runs it touched, so an
incremental fold and a rebuild hold the same rows. ``run_marks`` counts runs as they are
created, end and are finalized (a running total per kind at each position; ``run_unended`` the
ends an adoption took back), so "how many since position P" is two index lookups, however far
back P is; ``workspace_runs`` counts each workspace's runs (the total of an unfiltered history
page). ``runs_shown`` holds the position of the
latest event that changed what STATE.md shows of runs: a heartbeat that leaves the minute shown
unchanged, or metrics of a run still in flight (whose value STATE.md does not show), leave it.

Within a page, run rows are read once, folded in memory and written back at the end. JSON columns
are written with sorted keys, so an incremental fold and a rebuild give the same bytes.

The queries are in ``runs_lookup`` (``core.ports.RunIndex`` and the read tools) and
``dashboard_view``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.reviews.events import (
    FindingsRecorded,
    OutcomeSuggested,
    ReviewCompleted,
    ReviewStarted,
    StopRequested,
)
from quipu.core.runs import lifecycle
from quipu.core.runs.events import (
    CheckpointSaved,
    MetricsRecorded,
    ResultsSpecSaved,
    RunAdopted,
    RunCanceled,
    RunClaimed,
    RunExited,
    RunFinalized,
    RunHeartbeat,
    RunLaunched,
    RunLaunchFailed,
    RunLost,
    RunQueued,
    RunRequested,
    RunTagged,
)
from quipu.core.runs.lifecycle import State
from quipu.core.workspaces.events import (
    FinalizationCleared,
    FinalizationRequired,
    PipelineRunStarted,
    WorkspaceDeleted,
)
from quipu.projections._base import Folded, Indexes, chunks, placeholders, rows_as_dicts
from quipu.projections.state_md import when

__all__ = ["ACTIVE_STATES", "JSON_COLUMNS", "RUN_COLUMNS", "TROUBLE_OUTCOMES", "VALUE_OUTCOMES",
           "Row", "RunsView", "best_of", "counts_for_best", "dumps", "finite", "loads_row",
           "value_source"]

RUN_COLUMNS = (
    "run_id", "pipeline_run_id", "workspace", "stage", "version", "manifest", "entrypoint",
    "state", "infra_outcome", "ml_outcome", "description", "hypothesis", "detail",
    "experiment_group", "config_hash", "config", "depends_on", "inputs", "inputs_launched",
    "outputs_declared", "outputs", "results_spec", "primary_metric", "direction", "results",
    "results_auto", "comparison", "value", "metric_points", "metric_series", "metrics_complete",
    "created_at", "created_by", "launched_at", "ended_at", "finalized_at", "last_seen_at",
    "heartbeat_message", "review", "worker", "host", "pid", "run_dir", "exit_code", "signal",
    "logs", "problems", "error", "created_position", "ended_position", "finalized_position",
    "last_position", "non_finite", "retired", "closed_by", "environment",
    "checkpoints",
)
JSON_COLUMNS = frozenset({
    "detail", "config", "depends_on", "inputs", "inputs_launched", "outputs_declared", "outputs",
    "results_spec", "results", "results_auto", "comparison", "logs", "problems", "non_finite",
    "environment", "checkpoints",
})

Row = dict[str, Any]

ACTIVE_STATES = tuple(s.value for s in lifecycle.ACTIVE_STATES)
"""States of a run still in flight (not ``lifecycle.settled``)."""
TROUBLE_OUTCOMES = tuple(str(lifecycle.infra_outcome(s)) for s in lifecycle.TROUBLE_STATES)
"""The infra outcomes of runs that went wrong (the lifecycle table's trouble states)."""
_ACTIVE = frozenset(ACTIVE_STATES)
_BEST_PREFIX = "best"
VALUE_OUTCOMES = frozenset(str(lifecycle.infra_outcome(s)) for s, spec in lifecycle.STATES.items()
                           if spec.yields_value)
"""The infra outcomes of runs whose value can count (they ran their code to an end they chose:
succeeded, stopped). A value the agent gives for any other run is recorded as agent-reported."""


def dumps(value: Any) -> str | None:
    """Stable JSON text (sorted keys), None for None."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads_row(row: Row) -> Row:
    """A run row with its JSON columns parsed."""
    return {k: (json.loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v)
            for k, v in row.items()}


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class _Page:
    """The run rows one page touches, folded in memory and written back by ``flush``."""

    def __init__(self, conn: sqlite3.Connection, run_ids: set[str]) -> None:
        self.conn = conn
        self.runs: dict[str, Row] = {}
        for batch in chunks(sorted(run_ids)):
            cur = conn.execute(
                f"SELECT * FROM runs WHERE run_id IN ({placeholders(len(batch))})", batch)
            self.runs.update((r["run_id"], loads_row(r)) for r in rows_as_dicts(cur))
        self.touched: set[str] = set()
        # Runs that were candidates for their workspace's best before this page (if this page
        # changes them, the best is recomputed even when they are candidates no more).
        self.valued_before = {n: r["workspace"] for n, r in self.runs.items() if _valued(r)}
        self.shown = 0
        """Position of the page's latest event that changes what STATE.md shows (0: none)."""
        self.marks: list[tuple[str, int]] = []
        """(kind, position) in log order: a run created, ended or finalized there."""
        self.unended: list[int] = []
        """Positions of ends an adoption took back."""
        self.created: dict[str, int] = {}
        """Runs requested in this page, per workspace (kept as running counts)."""
        self.pipelines: list[tuple[Any, ...]] = []
        self.links: list[tuple[Any, ...]] = []
        self.tags: list[tuple[Any, ...]] = []
        self.metrics: dict[str, dict[str, dict[str, Any]]] = {}
        self.gate: dict[str, tuple[Any, ...] | None] = {}

    def flush(self) -> None:
        c = self.conn
        c.executemany(
            f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
            f"VALUES ({placeholders(len(RUN_COLUMNS))})",
            [tuple(dumps(r[k]) if k in JSON_COLUMNS else r[k] for k in RUN_COLUMNS)
             for r in (self.runs[n] for n in sorted(self.touched))])
        c.executemany("INSERT OR REPLACE INTO pipeline_runs (pipeline_run_id, workspace, version,"
                      " stages, runs, detail, experiment_group, created_at, actor, position) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?)", self.pipelines)
        c.executemany("INSERT OR REPLACE INTO run_links (run_id, input, kind, from_run, signal)"
                      " VALUES (?,?,?,?,?)", self.links)
        c.executemany("INSERT OR IGNORE INTO run_tags (run_id, tag, workspace, at, position) "
                      "VALUES (?,?,?,?,?)", self.tags)
        c.executemany("DELETE FROM metric_summaries WHERE run_id = ?",
                      [(r,) for r in sorted(self.metrics)])
        c.executemany(
            "INSERT INTO metric_summaries (run_id, name, min, max, last, count, trend, last_step,"
            " non_finite) VALUES (?,?,?,?,?,?,?,?,?)",
            [(r, name, s.get("min"), s.get("max"), s.get("last"), s.get("count"),
              None if s.get("trend") is None else str(s.get("trend")), s.get("last_step"),
              dumps(s["non_finite"]) if isinstance(s.get("non_finite"), dict) else None)
             for r, summaries in sorted(self.metrics.items())
             for name, s in sorted(summaries.items())])
        c.executemany("DELETE FROM unfinalized WHERE run_id = ?",
                      [(r,) for r, g in self.gate.items() if g is None])
        c.executemany("INSERT OR REPLACE INTO unfinalized (run_id, workspace, stage, state, at, "
                      "position) VALUES (?,?,?,?,?,?)",
                      [g for g in self.gate.values() if g is not None])
        self._flush_shown()

    def _flush_shown(self) -> None:
        """Bring the tables STATE.md and the dashboard read in line with the touched rows."""
        c = self.conn
        rows = [self.runs[n] for n in sorted(self.touched)]
        _keep(c, "active_runs", "created_position",
              [(r["run_id"], r["created_position"]) for r in rows if r["state"] in _ACTIVE],
              [r["run_id"] for r in rows if r["state"] not in _ACTIVE])
        trouble = {r["run_id"] for r in rows if r["infra_outcome"] in TROUBLE_OUTCOMES}
        _keep(c, "troubled_runs", "ended_position",
              [(r["run_id"], r["ended_position"]) for r in rows if r["run_id"] in trouble],
              [r["run_id"] for r in rows if r["run_id"] not in trouble])
        valued = [r for r in rows if _valued(r)]
        tagged = _best_tags(c, [r["run_id"] for r in valued])
        c.executemany("DELETE FROM valued_runs WHERE run_id = ?",
                      [(r["run_id"],) for r in rows if not _valued(r)])
        c.executemany(
            "INSERT OR REPLACE INTO valued_runs (run_id, workspace, stage, primary_metric, value,"
            " finalized_position, best_tag_position) VALUES (?,?,?,?,?,?,?)",
            [(r["run_id"], r["workspace"], r["stage"], r["primary_metric"], r["value"],
              r["finalized_position"], tagged.get(r["run_id"])) for r in valued])
        affected = {r["workspace"] for r in valued}
        affected.update(ws for n, ws in self.valued_before.items() if n in self.touched)
        for ws in sorted(affected):
            found = best_of(c, ws)
            if found is None:
                c.execute("DELETE FROM best_runs WHERE workspace = ?", (ws,))
            else:
                c.execute("INSERT OR REPLACE INTO best_runs (workspace, run_id, chosen_by) "
                          "VALUES (?,?,?)", (ws, *found))
        for kind in sorted({k for k, _ in self.marks}):
            last = c.execute("SELECT n FROM run_marks WHERE kind = ? ORDER BY position DESC "
                             "LIMIT 1", (kind,)).fetchone()
            c.executemany("INSERT INTO run_marks (kind, position, n) VALUES (?,?,?)",
                          [(kind, p, n) for n, p in enumerate(
                              (p for k, p in self.marks if k == kind),
                              start=(last[0] if last else 0) + 1)])
        c.executemany("INSERT OR REPLACE INTO run_unended (position) VALUES (?)",
                      [(p,) for p in self.unended])
        c.executemany("INSERT INTO workspace_runs (workspace, runs) VALUES (?, ?) "
                      "ON CONFLICT(workspace) DO UPDATE SET runs = runs + excluded.runs",
                      sorted(self.created.items()))
        if self.shown:
            c.execute("INSERT INTO runs_shown (id, position) VALUES (1, ?) ON CONFLICT(id) "
                      "DO UPDATE SET position = MAX(position, excluded.position)",
                      (self.shown,))


def _valued(row: Row) -> bool:
    """Whether a run can be its workspace's best and a reference for comparisons: finalized
    with a value, having run to an end it chose (``counts_for_best``), in a workspace that was
    not deleted."""
    return (row["state"] == State.FINALIZED.value and row["value"] is not None
            and counts_for_best(row) and not row.get("retired"))


def counts_for_best(row: Row) -> bool:
    """Whether the run's value may count for bests and comparisons: it ended succeeded or
    stopped. A value the agent gave for a run that failed, crashed, was lost or canceled is
    kept in its record, flagged as agent-reported, and never counts."""
    return row["infra_outcome"] in VALUE_OUTCOMES


def value_source(row: Row) -> str | None:
    """Where a run's ``value`` comes from: ``results`` (the agent's verdict on a run that ran
    to its end), ``agent`` (a value the agent gave for a run that did not succeed: recorded,
    never counted), ``auto`` (the last logged value, before finalization) or None."""
    if row["value"] is None:
        return None
    if row["state"] != State.FINALIZED.value:
        return "auto"
    return "results" if counts_for_best(row) else "agent"


def _keep(conn: sqlite3.Connection, table: str, column: str, rows: list[tuple[Any, ...]],
          gone: list[str]) -> None:
    """Upsert ``(run_id, column)`` rows of a run list and drop the runs no longer in it."""
    conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(n,) for n in gone])
    conn.executemany(f"INSERT OR REPLACE INTO {table} (run_id, {column}) VALUES (?,?)", rows)


def _best_tags(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, int]:
    """The position of each run's latest ``best*`` tag (runs without one are left out)."""
    out: dict[str, int] = {}
    for batch in chunks(run_ids):
        out.update(conn.execute(
            f"SELECT run_id, MAX(position) FROM run_tags WHERE run_id IN "
            f"({placeholders(len(batch))}) AND substr(tag, 1, 4) = ? GROUP BY run_id",
            (*batch, _BEST_PREFIX)).fetchall())
    return out


def best_of(conn: sqlite3.Connection, workspace: str) -> tuple[str, str] | None:
    """(run_id, chosen_by) of the workspace's reference result, from ``valued_runs``: the run
    most recently tagged ``best*``, else the best value (by the direction of the run finalized
    most recently) of the stage and metric finalized most recently; ties go to the run
    finalized last. Each step is one lookup in an index, at any length of history."""
    row = conn.execute("SELECT run_id FROM valued_runs WHERE workspace = ? AND "
                       "best_tag_position IS NOT NULL ORDER BY best_tag_position DESC LIMIT 1",
                       (workspace,)).fetchone()
    if row is not None:
        return str(row[0]), "tagged best"
    latest = conn.execute(
        "SELECT v.stage, v.primary_metric, r.direction FROM valued_runs v JOIN runs r ON "
        "r.run_id = v.run_id WHERE v.workspace = ? ORDER BY v.finalized_position DESC LIMIT 1",
        (workspace,)).fetchone()
    if latest is None:
        return None
    stage, metric, direction = latest
    # The extreme value first, then the run finalized last with it: two index lookups where
    # ORDER BY value, finalized_position DESC would sort the ties.
    extreme = "MIN" if direction == "minimize" else "MAX"
    found = conn.execute(
        "SELECT v.run_id FROM valued_runs v WHERE v.workspace = ? AND v.stage = ? AND "
        "v.primary_metric IS ? AND v.value = (SELECT "
        f"{extreme}(x.value) FROM valued_runs x WHERE x.workspace = ? AND x.stage = ? AND "
        "x.primary_metric IS ?) ORDER BY v.finalized_position DESC LIMIT 1",
        (workspace, stage, metric, workspace, stage, metric)).fetchone()
    return None if found is None else (str(found[0]), "best value")


def _new_row(e: RunRequested, f: Folded) -> Row:
    row: Row = dict.fromkeys(RUN_COLUMNS)
    spec = e.results_spec
    row.update({
        "run_id": e.run_id, "pipeline_run_id": e.pipeline_run_id, "workspace": e.workspace,
        "stage": e.stage, "version": e.version, "manifest": e.manifest,
        "entrypoint": e.entrypoint, "state": State.REQUESTED.value,
        "description": e.detail.get("description"), "hypothesis": e.detail.get("hypothesis"),
        "detail": dict(e.detail), "experiment_group": e.experiment_group,
        "config_hash": e.config_hash, "config": e.config, "depends_on": list(e.depends_on),
        "inputs": e.inputs, "inputs_launched": {}, "outputs_declared": e.outputs,
        "outputs": {}, "results_spec": spec, "primary_metric": spec.get("primary_metric"),
        "direction": spec.get("direction"), "metric_points": 0, "metrics_complete": 0,
        "created_at": f.at, "created_by": e.actor, "problems": [],
        "created_position": f.position, "retired": 0,
    })
    return row


def _move(row: Row, state: State, f: Folded) -> None:
    """Enter ``state`` (``lifecycle.state_after``'s answer); the infra outcome is the lifecycle
    table's, kept once finalized."""
    row["state"] = state.value
    if state is not State.FINALIZED:
        row["infra_outcome"] = lifecycle.infra_outcome(state)
    if lifecycle.is_ended(state) and row["ended_position"] is None:
        row["ended_at"], row["ended_position"] = f.at, f.position


def _queued(page: _Page, row: Row, e: RunQueued, f: Folded) -> None:
    row["review"] = e.review


def _review_started(page: _Page, row: Row, e: ReviewStarted, f: Folded) -> None:
    row["review"] = "reviewing"


def _review_completed(page: _Page, row: Row, e: ReviewCompleted, f: Folded) -> None:
    row["review"] = e.decision


def _no_bookkeeping(page: _Page, row: Row, e: Any, f: Folded) -> None:
    """A passive event this view keeps nothing of (yet): the row only records its position."""


def _claimed(page: _Page, row: Row, e: RunClaimed, f: Folded) -> None:
    row["worker"] = e.worker


def _launched(page: _Page, row: Row, e: RunLaunched, f: Folded) -> None:
    row.update(worker=e.worker, host=e.host, pid=e.pid, run_dir=e.run_dir,
               inputs_launched=e.inputs, launched_at=f.at, last_seen_at=f.at,
               environment=e.environment)


def _heartbeat(page: _Page, row: Row, e: RunHeartbeat, f: Folded) -> None:
    row["last_seen_at"] = f.at
    if e.message is not None:
        row["heartbeat_message"] = e.message


def _launch_failed(page: _Page, row: Row, e: RunLaunchFailed, f: Folded) -> None:
    row["error"] = e.error


def _exited(page: _Page, row: Row, e: RunExited, f: Folded) -> None:
    row.update(exit_code=e.exit_code, signal=e.signal, outputs=e.outputs, logs=e.logs,
               problems=list(e.problems))
    if e.error is not None:
        row["error"] = e.error


def _lost(page: _Page, row: Row, e: RunLost, f: Folded) -> None:
    row["error"] = e.why


def _adopted(page: _Page, row: Row, e: RunAdopted, f: Folded) -> None:
    # Back to running: the ending recorded as lost was a mistake the log corrects.
    row.update(ended_at=None, ended_position=None, error=None)
    row.update(worker=e.worker, pid=e.pid, last_seen_at=f.at)


def _canceled(page: _Page, row: Row, e: RunCanceled, f: Folded) -> None:
    pass  # only the state moves


def _metrics(page: _Page, row: Row, e: MetricsRecorded, f: Folded) -> None:
    page.metrics[e.run_id] = e.summaries
    row.update(metric_points=e.points, metric_series=e.series,
               metrics_complete=int(e.complete))
    if row["state"] != State.FINALIZED.value:
        primary = e.summaries.get(row["primary_metric"] or "") or {}
        row["value"] = finite(primary.get("last"))
    row["non_finite"] = _facts(e.summaries.get(row["primary_metric"] or ""))


def _facts(summary: Any) -> dict[str, Any] | None:
    """A metric summary's non-finite facts, None when it has none."""
    found = summary.get("non_finite") if isinstance(summary, dict) else None
    return found if isinstance(found, dict) else None


def _finalized(page: _Page, row: Row, e: RunFinalized, f: Folded) -> None:
    row.update(ml_outcome=e.ml_outcome, results=e.results, results_auto=e.results_auto,
               comparison=e.comparison, finalized_at=f.at, finalized_position=f.position,
               value=finite((e.results or {}).get("value")), closed_by=e.closed_by)


def _spec_saved(page: _Page, row: Row, e: ResultsSpecSaved, f: Folded) -> None:
    row.update(results_spec=e.spec, primary_metric=e.spec.get("primary_metric"),
               direction=e.spec.get("direction"))
    summaries = page.metrics.get(row["run_id"])
    if summaries is None:
        found = page.conn.execute("SELECT last, non_finite FROM metric_summaries WHERE "
                                  "run_id = ? AND name = ?",
                                  (row["run_id"], row["primary_metric"])).fetchone()
        row["value"] = finite(found[0]) if found else None
        row["non_finite"] = json.loads(found[1]) if found and found[1] else None
    else:
        primary = summaries.get(row["primary_metric"] or "")
        row["value"] = finite((primary or {}).get("last"))
        row["non_finite"] = _facts(primary)


def _checkpoint(page: _Page, row: Row, e: CheckpointSaved, f: Folded) -> None:
    # One entry per name (bounded however many steps a stage saves): its latest save.
    saved = dict(row["checkpoints"] or {})
    saves = saved.get(e.name, {}).get("saves", 0) + 1
    saved[e.name] = {"saves": saves, "step": e.step, "sha256": e.sha256, "size": e.size,
                     "manifest": e.manifest}
    row["checkpoints"] = saved


def _tagged(page: _Page, row: Row, e: RunTagged, f: Folded) -> None:
    page.tags.append((e.run_id, e.tag, e.workspace, f.at, f.position))


Fold = Callable[[_Page, Row, Any, Folded], None]

_RUN_FOLDS: dict[str, Fold] = {
    RunQueued.TYPE: _queued,
    RunClaimed.TYPE: _claimed,
    RunLaunched.TYPE: _launched,
    RunHeartbeat.TYPE: _heartbeat,
    RunLaunchFailed.TYPE: _launch_failed,
    RunExited.TYPE: _exited,
    RunLost.TYPE: _lost,
    RunAdopted.TYPE: _adopted,
    RunCanceled.TYPE: _canceled,
    MetricsRecorded.TYPE: _metrics,
    RunFinalized.TYPE: _finalized,
    ResultsSpecSaved.TYPE: _spec_saved,
    RunTagged.TYPE: _tagged,
    CheckpointSaved.TYPE: _checkpoint,
    ReviewStarted.TYPE: _review_started,
    ReviewCompleted.TYPE: _review_completed,
    FindingsRecorded.TYPE: _no_bookkeeping,
    StopRequested.TYPE: _no_bookkeeping,
    OutcomeSuggested.TYPE: _no_bookkeeping,
}
"""The bookkeeping of events about an existing run, besides its state (each also records the
run's latest position). The state itself comes from ``lifecycle.state_after``; a test checks
these are exactly the run events after the opening one."""


def _mark(page: _Page, row: Row, ended: int | None, finalized: int | None) -> None:
    """Count an end or a finalization the event just recorded, or take back an end."""
    if row["ended_position"] != ended:
        if ended is not None:
            page.unended.append(ended)
        if row["ended_position"] is not None:
            page.marks.append(("ended", row["ended_position"]))
    if row["finalized_position"] != finalized and row["finalized_position"] is not None:
        page.marks.append(("finalized", row["finalized_position"]))


def _changes_state_md(row: Row, e: Any, f: Folded) -> bool:
    """Whether folding ``e`` into ``row`` can change STATE.md: a heartbeat only moves the
    "last seen" minute of a run in flight; metrics only change the value of a run that ended
    (STATE.md shows no value for a run in flight). Everything else may."""
    if isinstance(e, RunHeartbeat):
        return row["state"] in _ACTIVE and (
            row["last_seen_at"] is None or when(row["last_seen_at"]) != when(f.at))
    if isinstance(e, MetricsRecorded):
        return row["state"] not in _ACTIVE
    return not isinstance(e, CheckpointSaved)  # STATE.md does not show checkpoints


class RunsView:
    """Folds run, pipeline-run and finalization-gate events."""

    name: ClassVar[str] = "runs"
    version: ClassVar[int] = 7  # 6: runs.environment, runs.checkpoints; 7: review events
    types: ClassVar[frozenset[str]] = frozenset({
        PipelineRunStarted.TYPE, RunRequested.TYPE, FinalizationRequired.TYPE,
        FinalizationCleared.TYPE, WorkspaceDeleted.TYPE, *_RUN_FOLDS})
    tables: ClassVar[tuple[str, ...]] = (
        "runs", "metric_summaries", "run_tags", "pipeline_runs", "run_links", "unfinalized",
        "active_runs", "troubled_runs", "valued_runs", "best_runs", "run_marks", "run_unended",
        "runs_shown", "workspace_runs")
    indexes: ClassVar[Indexes] = (
        ("runs", ("workspace", "created_position")),
        ("runs", ("workspace", "stage", "finalized_position")),
        ("runs", ("state",)),
        ("runs", ("created_position",)),
        ("runs", ("ended_position",)),
        ("runs", ("finalized_position",)),
        ("run_tags", ("workspace", "tag")),
        ("run_links", ("from_run",)),
        ("unfinalized", ("workspace", "position")),
        ("active_runs", ("created_position",)),
        ("troubled_runs", ("ended_position",)),
        ("valued_runs", ("workspace", "finalized_position")),
        ("valued_runs", ("workspace", "best_tag_position")),
        ("valued_runs", ("workspace", "stage", "primary_metric", "value",
                         "finalized_position")),
    )

    def create(self, db: sqlite_utils.Database) -> None:
        """The tables."""
        types: dict[str, Any] = {c: str for c in RUN_COLUMNS}
        types.update(dict.fromkeys(
            ("version", "metric_points", "metrics_complete", "pid", "exit_code", "signal",
             "created_position", "ended_position", "finalized_position", "last_position",
             "retired"), int))
        types["value"] = float
        db.table("runs").create(types, pk="run_id")
        db.table("metric_summaries").create({
            "run_id": str, "name": str, "min": float, "max": float, "last": float,
            "count": int, "trend": str, "last_step": int, "non_finite": str},
            pk=("run_id", "name"))
        db.table("run_tags").create({"run_id": str, "tag": str, "workspace": str, "at": str,
                                     "position": int}, pk=("run_id", "tag"))
        db.table("pipeline_runs").create({
            "pipeline_run_id": str, "workspace": str, "version": int, "stages": str,
            "runs": str, "detail": str, "experiment_group": str, "created_at": str,
            "actor": str, "position": int}, pk="pipeline_run_id")
        db.table("run_links").create({"run_id": str, "input": str, "kind": str,
                                      "from_run": str, "signal": str}, pk=("run_id", "input"))
        db.table("unfinalized").create({"run_id": str, "workspace": str, "stage": str,
                                        "state": str, "at": str, "position": int},
                                       pk="run_id")
        db.table("active_runs").create({"run_id": str, "created_position": int}, pk="run_id")
        db.table("troubled_runs").create({"run_id": str, "ended_position": int}, pk="run_id")
        db.table("valued_runs").create({
            "run_id": str, "workspace": str, "stage": str, "primary_metric": str,
            "value": float, "finalized_position": int, "best_tag_position": int}, pk="run_id")
        db.table("best_runs").create({"workspace": str, "run_id": str, "chosen_by": str},
                                     pk="workspace")
        db.table("run_marks").create({"kind": str, "position": int, "n": int},
                                     pk=("kind", "position"))
        db.table("run_unended").create({"position": int}, pk="position")
        db.table("runs_shown").create({"id": int, "position": int}, pk="id")
        db.table("workspace_runs").create({"workspace": str, "runs": int}, pk="workspace")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page of events."""
        ids = {f.event.__dict__.get("run_id") or "" for f in events} - {""}
        for f in events:
            if isinstance(f.event, WorkspaceDeleted):
                # Deleting a workspace retires its runs from bests and outcomes: read them all
                # (deletion is rare; what they show must leave at once).
                ids.update(r for (r,) in conn.execute(
                    "SELECT run_id FROM runs WHERE workspace = ?", (f.event.workspace,)))
        page = _Page(conn, ids)
        for f in events:
            e = f.event
            if e.TYPE not in _RUN_FOLDS:
                page.shown = f.position  # a new run, a pipeline run, the gate: all shown
            if isinstance(e, PipelineRunStarted):
                page.pipelines.append((
                    e.pipeline_run_id, e.workspace, e.version, dumps(e.stages), dumps(e.runs),
                    dumps(e.detail), e.experiment_group, f.at, e.actor, f.position))
            elif isinstance(e, FinalizationRequired):
                page.gate[e.run_id] = (e.run_id, e.workspace, e.stage, e.state, f.at,
                                       f.position)
            elif isinstance(e, FinalizationCleared):
                page.gate[e.run_id] = None
            elif isinstance(e, WorkspaceDeleted):
                # The runs the workspace had so far (a workspace created again later under the
                # same name starts with none).
                for row in page.runs.values():
                    if row["workspace"] == e.workspace and not row["retired"]:
                        row["retired"] = 1
                        page.touched.add(row["run_id"])
            elif isinstance(e, RunRequested):
                page.marks.append(("created", f.position))
                page.created[e.workspace] = page.created.get(e.workspace, 0) + 1
                page.runs[e.run_id] = row = _new_row(e, f)
                row["last_position"] = f.position
                page.touched.add(e.run_id)
                page.links += [(e.run_id, name, how.get("kind"), how["run_id"],
                                how.get("signal"))
                               for name, how in sorted(e.inputs.items()) if how.get("run_id")]
            else:
                run_id: str = e.run_id  # type: ignore[attr-defined]
                existing = page.runs.get(run_id)
                if existing is None:
                    continue  # the aggregate never records facts about an unknown run
                if _changes_state_md(existing, e, f):
                    page.shown = f.position
                ended, finalized = existing["ended_position"], existing["finalized_position"]
                state = lifecycle.state_after(State(existing["state"]), e)
                _RUN_FOLDS[e.TYPE](page, existing, e, f)
                if state.value != existing["state"]:
                    _move(existing, state, f)
                _mark(page, existing, ended, finalized)
                existing["last_position"] = f.position
                page.touched.add(run_id)
        page.flush()

