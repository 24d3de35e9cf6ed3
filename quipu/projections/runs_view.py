"""Runs: every stage execution with its request, lifecycle, metrics, verdict and tags.

One row per run holds what an agent asks about it: where it stands (``state``), how the machinery
ended it (``infra_outcome``, derived only by ``core.runs.lifecycle.infra_outcome`` and kept after
finalization), what the agent made of it (``ml_outcome``, ``results``, ``comparison``), and its
provenance (version, config, inputs as requested and as launched, outputs). Beside it: the latest
metric summaries per run, run tags, pipeline runs, the inputs that link a run to the runs it
read, and the unfinalized queue (the runs that hold their workspace's finalization gate, exactly
as the workspace recorded it with ``FinalizationRequired`` / ``FinalizationCleared``).

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

from quipu.core.runs import lifecycle
from quipu.core.runs.events import (
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
)
from quipu.projections._base import Folded, Indexes, chunks, placeholders, rows_as_dicts

__all__ = ["JSON_COLUMNS", "RUN_COLUMNS", "Row", "RunsView", "dumps", "finite", "loads_row"]

RUN_COLUMNS = (
    "run_id", "pipeline_run_id", "workspace", "stage", "version", "manifest", "entrypoint",
    "state", "infra_outcome", "ml_outcome", "description", "hypothesis", "detail",
    "experiment_group", "config_hash", "config", "depends_on", "inputs", "inputs_launched",
    "outputs_declared", "outputs", "results_spec", "primary_metric", "direction", "results",
    "results_auto", "comparison", "value", "metric_points", "metric_series", "metrics_complete",
    "created_at", "created_by", "launched_at", "ended_at", "finalized_at", "last_seen_at",
    "heartbeat_message", "review", "worker", "host", "pid", "run_dir", "exit_code", "signal",
    "logs", "problems", "error", "created_position", "ended_position", "finalized_position",
    "last_position",
)
JSON_COLUMNS = frozenset({
    "detail", "config", "depends_on", "inputs", "inputs_launched", "outputs_declared", "outputs",
    "results_spec", "results", "results_auto", "comparison", "logs", "problems",
})

Row = dict[str, Any]


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
            "INSERT INTO metric_summaries (run_id, name, min, max, last, count, trend, last_step)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [(r, name, s.get("min"), s.get("max"), s.get("last"), s.get("count"),
              None if s.get("trend") is None else str(s.get("trend")), s.get("last_step"))
             for r, summaries in sorted(self.metrics.items())
             for name, s in sorted(summaries.items())])
        c.executemany("DELETE FROM unfinalized WHERE run_id = ?",
                      [(r,) for r, g in self.gate.items() if g is None])
        c.executemany("INSERT OR REPLACE INTO unfinalized (run_id, workspace, stage, state, at, "
                      "position) VALUES (?,?,?,?,?,?)",
                      [g for g in self.gate.values() if g is not None])


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
        "created_position": f.position,
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


def _claimed(page: _Page, row: Row, e: RunClaimed, f: Folded) -> None:
    row["worker"] = e.worker


def _launched(page: _Page, row: Row, e: RunLaunched, f: Folded) -> None:
    row.update(worker=e.worker, host=e.host, pid=e.pid, run_dir=e.run_dir,
               inputs_launched=e.inputs, launched_at=f.at, last_seen_at=f.at)


def _heartbeat(page: _Page, row: Row, e: RunHeartbeat, f: Folded) -> None:
    row["last_seen_at"] = f.at
    if e.message is not None:
        row["heartbeat_message"] = e.message


def _launch_failed(page: _Page, row: Row, e: RunLaunchFailed, f: Folded) -> None:
    row["error"] = e.error


def _exited(page: _Page, row: Row, e: RunExited, f: Folded) -> None:
    row.update(exit_code=e.exit_code, signal=e.signal, outputs=e.outputs, logs=e.logs,
               problems=list(e.problems))


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


def _finalized(page: _Page, row: Row, e: RunFinalized, f: Folded) -> None:
    row.update(ml_outcome=e.ml_outcome, results=e.results, results_auto=e.results_auto,
               comparison=e.comparison, finalized_at=f.at, finalized_position=f.position,
               value=finite((e.results or {}).get("value")))


def _spec_saved(page: _Page, row: Row, e: ResultsSpecSaved, f: Folded) -> None:
    row.update(results_spec=e.spec, primary_metric=e.spec.get("primary_metric"),
               direction=e.spec.get("direction"))
    summaries = page.metrics.get(row["run_id"])
    if summaries is None:
        found = page.conn.execute("SELECT last FROM metric_summaries WHERE run_id = ? AND "
                                  "name = ?", (row["run_id"], row["primary_metric"])).fetchone()
        row["value"] = finite(found[0]) if found else None
    else:
        row["value"] = finite((summaries.get(row["primary_metric"] or "") or {}).get("last"))


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
}
"""The bookkeeping of events about an existing run, besides its state (each also records the
run's latest position). The state itself comes from ``lifecycle.state_after``; a test checks
these are exactly the run events after the opening one."""


class RunsView:
    """Folds run, pipeline-run and finalization-gate events."""

    name: ClassVar[str] = "runs"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset({
        PipelineRunStarted.TYPE, RunRequested.TYPE, FinalizationRequired.TYPE,
        FinalizationCleared.TYPE, *_RUN_FOLDS})
    tables: ClassVar[tuple[str, ...]] = ("runs", "metric_summaries", "run_tags",
                                         "pipeline_runs", "run_links", "unfinalized")
    indexes: ClassVar[Indexes] = (
        ("runs", ("workspace", "created_position")),
        ("runs", ("workspace", "stage", "finalized_position")),
        ("runs", ("state",)),
        ("run_tags", ("workspace", "tag")),
        ("run_links", ("from_run",)),
        ("unfinalized", ("workspace", "position")),
    )

    def create(self, db: sqlite_utils.Database) -> None:
        """The tables."""
        types: dict[str, Any] = {c: str for c in RUN_COLUMNS}
        types.update(dict.fromkeys(
            ("version", "metric_points", "metrics_complete", "pid", "exit_code", "signal",
             "created_position", "ended_position", "finalized_position", "last_position"), int))
        types["value"] = float
        db.table("runs").create(types, pk="run_id")
        db.table("metric_summaries").create({
            "run_id": str, "name": str, "min": float, "max": float, "last": float,
            "count": int, "trend": str, "last_step": int}, pk=("run_id", "name"))
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

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page of events."""
        page = _Page(conn, {f.event.__dict__.get("run_id") or "" for f in events} - {""})
        for f in events:
            e = f.event
            if isinstance(e, PipelineRunStarted):
                page.pipelines.append((
                    e.pipeline_run_id, e.workspace, e.version, dumps(e.stages), dumps(e.runs),
                    dumps(e.detail), e.experiment_group, f.at, e.actor, f.position))
            elif isinstance(e, FinalizationRequired):
                page.gate[e.run_id] = (e.run_id, e.workspace, e.stage, e.state, f.at,
                                       f.position)
            elif isinstance(e, FinalizationCleared):
                page.gate[e.run_id] = None
            elif isinstance(e, RunRequested):
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
                state = lifecycle.state_after(State(existing["state"]), e)
                _RUN_FOLDS[e.TYPE](page, existing, e, f)
                if state.value != existing["state"]:
                    _move(existing, state, f)
                existing["last_position"] = f.position
                page.touched.add(run_id)
        page.flush()

