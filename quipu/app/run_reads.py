"""The facade's read side for runs: history, records, the gate queue, inspect_run, logs,
metric history and the dashboard. ``quipu.app.facade.Quipu`` inherits it; it reads the views, the
run aggregates and the blob store, and never changes anything (``mark_seen`` is a command and
lives on the facade).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu import rundir
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.log import decode, stream_id
from quipu.core.runs import lifecycle
from quipu.core.validation import check_name

if TYPE_CHECKING:
    from quipu.app.config import Config
    from quipu.core.ports import BlobStore, EventStore
    from quipu.core.runs.handlers import RunService
    from quipu.core.workspaces.handlers import Service
    from quipu.projections import Views

__all__ = ["RunQueries"]


class RunQueries:
    """Run queries over ``views``, ``runs`` and ``blobs`` (set by the facade)."""

    views: Views
    live_log: Callable[[Path], bytes]
    """The captured output of a running stage's run directory (the executor's file contract)."""
    runs: RunService
    blobs: BlobStore
    store: EventStore
    config: Config
    service: Service

    def logs(self, run_id: str, *, tail: int = 200, since: int | None = None) -> dict[str, Any]:
        """A stage run's captured stdout/stderr lines, and the newest runtime_log lines.

        Without ``since``: the last ``tail`` lines. With ``since`` (the ``next`` of an earlier
        call): up to ``tail`` lines after that cursor, to follow a running stage. While a run
        goes, its live log is read from its run directory (a line still being written waits
        for the next call); once it ended, from the stored log blob. Never changes anything.
        """
        run = self.runs.load_run(run_id)
        state = run.current
        ended = lifecycle.settled(state)
        truncated = False
        runtime: list[str] = []
        data = b""
        if run.exit is not None and run.exit.logs:
            data = self.blobs.get_bytes(str(run.exit.logs["sha256"]))
            truncated = bool(run.exit.logs.get("truncated"))
        elif run.run_dir:
            data = self.live_log(Path(run.run_dir))
        if run.run_dir and since is None:
            try:
                text = (Path(run.run_dir) / rundir.SIDE_DIR / rundir.RUNTIME_LOG).read_text("utf-8",
                                                                                "replace")
                runtime = text.splitlines()[-tail:]
            except OSError:
                pass
        text = data.decode("utf-8", "replace")
        lines = text.splitlines()
        if lines and not ended and not text.endswith("\n"):
            lines.pop()  # still being written
        first = max(len(lines) - tail, 0) if since is None else min(max(since, 0), len(lines))
        shown = lines[first:first + tail]
        return {"run_id": run_id, "state": state.value, "ended": ended, "lines": shown,
                "next": first + len(shown), "total_lines": len(lines), "truncated": truncated,
                "runtime_log": runtime}


    # --- queries: runs -------------------------------------------------------------------------

    def _run_workspace(self, workspace: str) -> str:
        """A workspace name (a slot stands for the workspace mounted in it); NotFound if none."""
        if workspace in self.config.slot_names():
            occupant = self.views.slots([workspace])[0]["workspace"]
            if occupant is None:
                raise NotFound(f"slot {workspace} is empty", code="slot_empty",
                               hint="name the workspace, or mount one in the slot")
            return str(occupant)
        if self.views.workspace(workspace) is None:
            raise NotFound(f"workspace {workspace!r} does not exist", code="unknown_workspace",
                           hint="list workspaces with status()")
        return workspace

    def _run_id(self, ref: str, workspace: str | None = None) -> str:
        """A run id from a run id or ``@tag`` (which needs the workspace)."""
        if ref.startswith("@"):
            if workspace is None:
                raise InvalidInput(f"{ref} is a tag and tags are per workspace",
                                   code="workspace_required",
                                   hint=f"pass workspace=..., e.g. inspect_record({ref!r}, "
                                   "workspace='baseline')")
            name = self._run_workspace(workspace)
            found = self.views.tagged_run(name, ref[1:])
            if found is None:
                raise NotFound(f"no run of {name} is tagged {ref[1:]!r}", code="unknown_tag",
                               hint="list_history(workspace, tagged=...) lists tagged runs")
            return found
        if self.views.run_execution(ref) is None:
            raise NotFound(f"there is no run {ref!r}", code="unknown_run",
                           hint="list runs with list_history(workspace) or dashboard()")
        return ref

    def list_history(self, workspace: str, *, stage: str | None = None,
                     tagged: str | None = None, metric: str | None = None,
                     min_value: float | None = None, experiment_group: str | None = None,
                     sort_by: str = "created", desc: bool = True, finalized_only: bool = False,
                     limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """A page of a workspace's runs: ``{records, total, has_more}`` (see ``Views.history``)."""
        self.views.catch_up()
        name = self._run_workspace(workspace)
        records, total = self.views.history(
            name, stage=stage, tagged=tagged, metric=metric, min_value=min_value,
            experiment_group=experiment_group, sort_by=sort_by, desc=desc,
            finalized_only=finalized_only, limit=limit, offset=offset)
        return {"workspace": name, "records": records, "total": total,
                "has_more": max(offset, 0) + len(records) < total}

    def inspect_record(self, ref: str, workspace: str | None = None) -> dict[str, Any]:
        """One run's full record (results, comparison, tags, metrics); ``ref`` is a run id or
        ``@tag`` (with ``workspace``)."""
        self.views.catch_up()
        record = self.views.run_record(self._run_id(ref, workspace))
        assert record is not None
        return record

    def list_unfinalized_runs(self, workspace: str) -> dict[str, Any]:
        """The runs holding the workspace's finalization gate, each with its finalize_run call."""
        self.views.catch_up()
        name = self._run_workspace(workspace)
        runs = self.views.unfinalized_runs(name)
        return {"workspace": name, "runs": runs, "count": len(runs),
                "gate_rule": lifecycle.gate_rule()}

    def get_experiment_context(self, workspace: str) -> dict[str, Any]:
        """``{current_best, awaiting_finalization, recent_trend, regression_alerts}``."""
        self.views.catch_up()
        return self.views.experiment_context(self._run_workspace(workspace))

    def inspect_run(self, run_id: str, include: Sequence[str] | None = None, *,
                    log_lines: int = 20) -> dict[str, Any]:
        """A run as it stands: state and results, always its ``dashboard`` (progress, metric
        trends, log tail), and the sections in ``include`` (default: provenance and metrics):
        ``provenance`` (version, config, inputs requested and launched, outputs, downstream
        runs, and ``upstream``: the whole upstream closure, see ``Views.lineage_provenance``),
        ``metrics`` (summaries and where the series is), ``events`` (its own log)."""
        sections = {"dashboard", *(("provenance", "metrics") if include is None else include)}
        unknown = sorted(sections - {"dashboard", "provenance", "metrics", "events"})
        if unknown:
            raise InvalidInput(f"unknown include {unknown}", code="invalid_include",
                               hint="include any of: dashboard, provenance, metrics, events")
        self.views.catch_up()
        record = self.views.run_record(self._run_id(run_id))
        execution = self.views.run_execution(run_id)
        assert record is not None and execution is not None
        out: dict[str, Any] = {k: record[k] for k in (
            "run_id", "pipeline_run_id", "workspace", "stage", "version", "state",
            "infra_outcome", "ml_outcome", "results_status", "reason", "hypothesis", "tags")}
        out["results"] = {k: record[k] for k in ("results_spec", "results", "results_auto",
                                                 "comparison")}
        if "dashboard" in sections:
            out["dashboard"] = {
                "state": record["state"], "progress": self._progress(record["stage"], execution),
                "metrics": record["metrics"], "worker": execution["worker"],
                "host": execution["host"], "pid": execution["pid"],
                "error": execution["error"], "problems": execution["problems"],
                "log_tail": self._log_tail(execution, log_lines),
            }
        if "provenance" in sections:
            out["provenance"] = self.views.run_provenance(run_id)
            out["provenance"]["upstream"] = self.views.lineage_provenance(run_id)
        if "metrics" in sections:
            out["metrics"] = {"summaries": record["metrics"],
                              "points": execution["metric_points"],
                              "series": execution["metric_series"],
                              "complete": bool(execution["metrics_complete"])}
        if "events" in sections:
            out["events"] = [{"type": r.event.TYPE, "at": r.event.at.isoformat(),
                              "actor": r.event.actor, "reason": r.event.reason}
                             for r in map(decode, self.store.load(stream_id("run", run_id)))]
        return out

    def _progress(self, stage: str, execution: dict[str, Any]) -> dict[str, Any]:
        now = self.service.clock.now()

        def seconds(since: str | None, until: str | None = None) -> float | None:
            if since is None:
                return None
            end = datetime.fromisoformat(until) if until else now
            return round((end - datetime.fromisoformat(since)).total_seconds(), 3)

        return {"stage": stage, "created_at": execution["created_at"],
                "launched_at": execution["launched_at"], "ended_at": execution["ended_at"],
                "elapsed_seconds": seconds(execution["launched_at"], execution["ended_at"]),
                "last_seen_at": execution["last_seen_at"],
                "seconds_since_seen": (seconds(execution["last_seen_at"])
                                       if execution["ended_at"] is None else None),
                "message": execution["heartbeat_message"]}

    def _log_tail(self, execution: dict[str, Any], lines: int) -> dict[str, Any]:
        """The last lines of the run's output: the live file while it runs, else the blob."""
        data: bytes | None = None
        source = None
        logs = execution["logs"] or {}
        if execution["ended_at"] is None and execution["run_dir"]:
            # Through the executor's reader: the live file is capped (its freed head reads as
            # zeros), and only the reader knows where the kept bytes start.
            try:
                data, source = self.live_log(Path(execution["run_dir"])), "live"
            except OSError:
                data = None
        if data is None and logs.get("sha256"):
            try:
                data, source = self.blobs.get_bytes(logs["sha256"]), "blob"
            except Exception:  # a missing log blob must not hide the rest of the run
                data = None
        text = (data or b"").decode("utf-8", errors="replace").splitlines()
        return {"source": source, "lines": text[-max(lines, 0):] if lines else [],
                "truncated": bool(logs.get("truncated"))}

    def get_metric_history(self, run_id: str, name: str) -> dict[str, Any]:
        """Every logged point of one metric, read from the run's latest Parquet series."""
        self.views.catch_up()
        execution = self.views.run_execution(self._run_id(run_id))
        assert execution is not None
        series = execution["metric_series"]
        points: list[dict[str, Any]] = []
        if series:
            import io

            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(self.blobs.get_bytes(series)))
            columns = table.column_names
            if "name" in columns:  # long format: one row per point
                for row in table.to_pylist():
                    if row.get("name") == name:
                        points.append({k: v for k, v in row.items() if k != "name"})
            elif name in columns:  # wide format: one column per metric
                for row in table.to_pylist():
                    if row.get(name) is not None:
                        points.append({k: row[k] for k in ("step", "ts") if k in row}
                                      | {"value": row[name]})
        return {"run_id": run_id, "name": name, "points": points, "count": len(points),
                "series": series}

    def dashboard(self, consumer: str | None = None) -> dict[str, Any]:
        """Active runs, pending finalization by workspace, recent outcomes, failures, the best
        result per workspace, and what is new since ``consumer`` last called ``mark_seen``.

        Reading changes nothing; pass the returned ``cursor_position`` to ``mark_seen``.
        ``consumer`` defaults to ``"default"``."""
        consumer = check_name(consumer or "default", what="consumer")
        self.views.catch_up()
        return self.views.dashboard(consumer)

