"""The facade's read side for runs: history, records, the gate queue, inspect_run, logs,
metric history and the dashboard. ``quipu.app.facade.Quipu`` inherits it; it reads the views, the
run aggregates and the blob store, and never changes anything (``mark_seen`` is a command and
lives on the facade).
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu import rundir
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.log import decode, stream_id
from quipu.core.reviews.events import ReviewCompleted
from quipu.core.runs import lifecycle
from quipu.core.runs.results import non_finite_kind
from quipu.core.validation import check_name, did_you_mean

if TYPE_CHECKING:
    from quipu.app.config import Config
    from quipu.core.ports import BlobStore, EventStore
    from quipu.core.runs.handlers import RunService
    from quipu.core.workspaces.handlers import Service
    from quipu.projections import Views

__all__ = [
    "INCLUDES",
    "MIN_POINTS",
    "PACKAGES_PAGE",
    "PACKAGES_PAGE_MAX",
    "RAW_PAGE",
    "SVS_FINDINGS_MAX",
    "SVS_FINDINGS_PAGE",
    "RunQueries",
    "downsample",
    "review_summary",
    "svs_stats",
]

INCLUDES = ("dashboard", "provenance", "metrics", "events", "environment", "svs")
"""The sections ``inspect_run`` can include."""
SVS_FINDINGS_PAGE = 20
"""Findings per answer of ``get_run_svs_findings`` when no limit is given."""
SVS_FINDINGS_MAX = 50
_STAT_KEYS = ("shape", "dtype", "rows", "count", "sampled", "mean", "std", "min", "max",
              "null_ratio", "entropy", "unique", "top_k_share", "vocab_utilisation",
              "constant_features", "top", "json_type", "error")


def svs_stats(stats: Any) -> dict[str, Any]:
    """An output's statistics as shown to an agent: the numbers, without the drift sketch
    (quantiles), per column for a table."""
    if not isinstance(stats, dict):
        return {}
    out = {k: stats[k] for k in _STAT_KEYS if k in stats}
    columns = stats.get("column_stats")
    if isinstance(columns, dict):
        out["columns"] = {name: {k: c[k] for k in _STAT_KEYS if k in c}
                          for name, c in columns.items() if isinstance(c, dict)}
    return out


PACKAGES_PAGE = 200
"""Package lines per page of ``inspect_run(include=["environment"])`` when none is given."""
PACKAGES_PAGE_MAX = 500

MIN_POINTS = 5
"""The fewest points a thinned curve may keep: first, last, lowest, highest, first non-finite."""
RAW_PAGE = 200
"""Raw points per page of ``get_metric_history`` when no ``limit`` is given."""


REVIEW_FINDINGS_SHOWN = 5
"""Findings of the pre-run review ``inspect_run`` lists (the rest are counted)."""


def review_summary(review: ReviewCompleted) -> dict[str, Any]:
    """A run's pre-run review as answers show it: decision, reviewers, fix and the first
    findings (``omitted`` counts the others); ``resumed_from`` only for a review done again
    after its first reviewer was gone."""
    shown = {"decision": review.decision, "reviewers": review.reviewers, "fix": review.fix,
             "findings": review.findings[:REVIEW_FINDINGS_SHOWN],
             "omitted": review.omitted + max(0, len(review.findings) - REVIEW_FINDINGS_SHOWN)}
    if review.resumed_from is not None:
        shown["resumed_from"] = review.resumed_from
    return shown


def downsample(values: Sequence[float | None], max_points: int) -> list[int]:
    """Indices (ascending) of at most ``max_points`` of ``values`` that keep the curve's shape.

    Kept always: the first and the last point, the lowest and the highest finite value (their
    first occurrence) and the first non-finite one (None or NaN/inf counts as non-finite); the
    rest of the budget goes to evenly spaced points. ``max_points`` must be at least
    ``MIN_POINTS``; a series no longer than it is kept whole.
    """
    n = len(values)
    if n <= max_points:
        return list(range(n))
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}, got {max_points}")
    keep = {0, n - 1}
    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if finite:
        keep.add(min(finite)[1])
        keep.add(max(finite, key=lambda vi: (vi[0], -vi[1]))[1])
    odd = next((i for i, v in enumerate(values) if v is None or not math.isfinite(v)), None)
    if odd is not None:
        keep.add(odd)
    spare = max_points - len(keep)
    # Evenly spaced over the whole series; ones that fall on a kept index are simply merged.
    if spare > 0:
        keep.update(round(k * (n - 1) / (spare + 1)) for k in range(1, spare + 1))
    return sorted(keep)


_LIFE_FILES = (rundir.HEARTBEAT, rundir.METRICS, rundir.RUNTIME_LOG, rundir.OUTPUTS,
               rundir.CHECKPOINTS)
LIVE_METRICS_BYTES = 64 * 1024
"""How much of the end of a running stage's metrics.jsonl ``live_metrics`` reads."""
LIVE_METRICS_NAMES = 20


def live_heartbeat(run_dir: Path) -> dict[str, Any]:
    """The freshest signs of life in a running stage's run directory: the heartbeat file's
    message, and when the stage last wrote any of its side files (``at``, ISO time, and
    ``seconds_since``, by the wall clock both times are read with)."""
    side = run_dir / rundir.SIDE_DIR
    message = None
    try:
        beat = json.loads((side / rundir.HEARTBEAT).read_bytes())
        if isinstance(beat, dict) and isinstance(beat.get("message"), str):
            message = beat["message"]
    except (OSError, ValueError):
        pass
    newest = None
    for name in _LIFE_FILES:
        try:
            mtime = (side / name).stat().st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    if newest is None:
        return {"message": message, "at": None, "seconds_since": None}
    return {"message": message,
            "at": datetime.fromtimestamp(newest, UTC).isoformat(timespec="milliseconds"),
            "seconds_since": round(max(time.time() - newest, 0.0), 3)}


def live_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest point of each metric a running stage wrote lately ``{name: {value, step}}``,
    from the end of its metrics.jsonl (the log records them every few seconds only). At most
    ``LIVE_METRICS_NAMES`` names; a non-finite value is null with ``non_finite`` beside it."""
    path = run_dir / rundir.SIDE_DIR / rundir.METRICS
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(size - LIVE_METRICS_BYTES, 0))
            data = handle.read()
    except OSError:
        return {}
    lines = data.split(b"\n")[:-1]  # the last piece has no newline yet, or is empty
    if len(data) >= LIVE_METRICS_BYTES:
        lines = lines[1:]  # the first piece may be cut
    latest: dict[str, dict[str, Any]] = {}
    for line in reversed(lines):
        try:
            point = json.loads(line)
            name = point["name"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(name, str) or name in latest:
            continue
        value, kind = point.get("value"), point.get("non_finite")
        if isinstance(value, bool) or not isinstance(value, int | float | None):
            continue  # not a point the SDK writes
        if isinstance(value, float) and not math.isfinite(value):
            kind = non_finite_kind(value)  # a NaN token written by hand
        latest[name] = ({"value": None, "non_finite": kind, "step": point.get("step")}
                        if isinstance(kind, str) else {"value": value, "step": point.get("step")})
        if len(latest) >= LIVE_METRICS_NAMES:
            break
    return dict(sorted(latest.items()))


def _complete_lines(data: bytes, settled: bool) -> list[str]:
    """The lines of a log; while the run may still write, a last line without its newline is
    left for the next read (it is still being written)."""
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if lines and not settled and not text.endswith("\n"):
        lines.pop()
    return lines


def _point_json(point: dict[str, Any]) -> dict[str, Any]:
    """A point as JSON can carry it: a non-finite value is null with its kind beside it."""
    value = point.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        return {**point, "value": None, "non_finite": non_finite_kind(value)}
    return point


def _unknown_metric(name: str, known: list[str]) -> NotFound:
    close = difflib.get_close_matches(name, known, n=1)
    shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
    return NotFound(f"the run logged no metric {name!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else ""),
                    code="unknown_metric", hint=f"its metrics: {shown or 'none'}")


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

    def logs(self, run_id: str, *, tail: int = 200, since: int | None = None,
             runtime_since: int | None = None) -> dict[str, Any]:
        """A stage run's captured stdout/stderr lines, and its runtime_log lines.

        Without ``since``: the last ``tail`` lines of each. With ``since`` (the ``next`` of an
        earlier call): up to ``tail`` output lines after that cursor, and the runtime_log lines
        after ``runtime_since`` (the earlier ``runtime_next``; none without it), to follow a
        running stage. While a run goes, both are read from its run directory (a line still
        being written waits for the next call); once it ended, the output from the stored log
        blob. ``ended`` is true only once the run is settled AND both cursors reached the end:
        a follower that stops at ``ended`` has every line. Never changes anything.
        """
        run = self.runs.load_run(run_id)
        state = run.current
        # Settled first, then read: every line the stage wrote is in what is read below.
        settled = lifecycle.settled(state)
        truncated = False
        data = b""
        if run.exit is not None and run.exit.logs:
            data = self.blobs.get_bytes(str(run.exit.logs["sha256"]))
            truncated = bool(run.exit.logs.get("truncated"))
        elif run.run_dir:
            data = self.live_log(Path(run.run_dir))
        lines = _complete_lines(data, settled)
        runtime: list[str] = []
        if run.run_dir:
            try:
                raw = (Path(run.run_dir) / rundir.SIDE_DIR / rundir.RUNTIME_LOG).read_bytes()
            except OSError:
                raw = b""
            runtime = _complete_lines(raw, settled)
        first = max(len(lines) - tail, 0) if since is None else min(max(since, 0), len(lines))
        shown = lines[first:first + tail]
        if since is None:
            runtime_first = max(len(runtime) - tail, 0)
        elif runtime_since is None:
            runtime_first = len(runtime)  # an older follower: output lines only, as before
        else:
            runtime_first = min(max(runtime_since, 0), len(runtime))
        runtime_shown = runtime[runtime_first:runtime_first + tail]
        nxt, runtime_next = first + len(shown), runtime_first + len(runtime_shown)
        return {"run_id": run_id, "state": state.value,
                "ended": settled and nxt == len(lines) and runtime_next == len(runtime),
                "lines": shown, "next": nxt, "total_lines": len(lines),
                "truncated": truncated, "runtime_log": runtime_shown,
                "runtime_next": runtime_next}

    # --- queries: runs -------------------------------------------------------------------------

    def _workspace_hint(self, *names: str | None) -> str:
        """``"did you mean 'x'? "`` for the first of ``names`` that names no workspace, else
        ``""``: the suggestion every unknown_workspace refusal carries."""
        try:
            known = [w["name"] for w in self.views.workspaces()]
        except Exception:  # a suggestion is a courtesy: it never turns into another error
            return ""
        for name in names:
            base = (name or "").partition("@")[0]
            if base and base not in known and base not in self.config.slot_names():
                return did_you_mean(base, [*known, *self.config.slot_names()])
        return ""

    def _unknown_workspace(self, name: str, hint: str = "list workspaces with status()"
                           ) -> NotFound:
        """The refusal for a workspace that does not exist, with did-you-mean."""
        return NotFound(f"workspace {name!r} does not exist", code="unknown_workspace",
                        hint=self._workspace_hint(name) + hint)

    def _run_workspace(self, workspace: str) -> str:
        """A workspace name (a slot stands for the workspace mounted in it); NotFound if none."""
        if workspace in self.config.slot_names():
            occupant = self.views.slots([workspace])[0]["workspace"]
            if occupant is None:
                raise NotFound(f"slot {workspace} is empty", code="slot_empty",
                               hint="name the workspace, or mount one in the slot")
            return str(occupant)
        if self.views.workspace(workspace) is None:
            raise self._unknown_workspace(workspace)
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
        """A page of a workspace's runs: ``{records, total, has_more}`` (see ``Views.history``).

        Sorted by metric, only runs with a value are listed; ``without_value`` then counts the
        matching runs left out (stages that never logged the metric, runs still without one).
        """
        self.views.catch_up()
        name = self._run_workspace(workspace)
        filters: dict[str, Any] = {
            "stage": stage, "tagged": tagged, "metric": metric, "min_value": min_value,
            "experiment_group": experiment_group, "finalized_only": finalized_only}
        records, total = self.views.history(name, **filters, sort_by=sort_by, desc=desc,
                                            limit=limit, offset=offset)
        out = {"workspace": name, "records": records, "total": total,
               "has_more": max(offset, 0) + len(records) < total}
        if sort_by == "metric":
            out["without_value"] = self.views.history(name, **filters, has_value=False,
                                                      limit=0)[1]
        return out

    def inspect_record(self, ref: str, workspace: str | None = None) -> dict[str, Any]:
        """One run's full record (results, comparison, tags, metrics); ``ref`` is a run id or
        ``@tag`` (with ``workspace``)."""
        self.views.catch_up()
        record = self.views.run_record(self._run_id(ref, workspace))
        assert record is not None
        return record

    def list_unfinalized_runs(self, workspace: str) -> dict[str, Any]:
        """The runs holding the workspace's finalization gate, each with its finalize_run call,
        grouped by pipeline run: ``pipelines`` lists each pipeline run with its stage runs here
        and, for a pipeline run of several stages whose deciding stage ended, the one
        finalize_run call that records the experiment's verdict and closes the rest."""
        self.views.catch_up()
        name = self._run_workspace(workspace)
        runs = self.views.unfinalized_runs(name)
        groups: dict[str, dict[str, Any]] = {}
        for r in runs:
            # The post-run review's suggestion, when there is one: the agent's call decides.
            # Read from the run itself: the gate holds a handful of runs, and a view of its own
            # would cost every project a table for what only this answer shows.
            found = self.runs.load_run(r["run_id"]).suggestion
            if found is not None:
                r["suggested"] = {"outcome": found.outcome, "evidence": found.evidence}
            prun = str(r["pipeline_run_id"])
            if prun not in groups:
                verdict = self.views.pipeline_verdict(prun)
                groups[prun] = {"pipeline_run_id": prun, "hypothesis": r["hypothesis"],
                                "run_ids": [],
                                "finalize_call": verdict and verdict["finalize_call"],
                                "deciding_run_id": verdict and verdict["deciding_run_id"]}
            groups[prun]["run_ids"].append(r["run_id"])
        return {"workspace": name, "runs": runs, "count": len(runs),
                "pipelines": list(groups.values()), "gate_rule": lifecycle.gate_rule()}

    def get_experiment_context(self, workspace: str) -> dict[str, Any]:
        """``{current_best, awaiting_finalization, recent_trend, regression_alerts}``."""
        self.views.catch_up()
        return self.views.experiment_context(self._run_workspace(workspace))

    def inspect_run(self, run_id: str, include: Sequence[str] | None = None, *,
                    log_lines: int = 20, packages_offset: int = 0,
                    packages_limit: int = PACKAGES_PAGE) -> dict[str, Any]:
        """A run as it stands: state and results, always its ``dashboard`` (progress, metric
        trends, log tail), and the sections in ``include`` (default: provenance and metrics):
        ``provenance`` (version, config, inputs requested and launched, outputs, downstream
        runs, the ``environment`` it was launched with, and ``upstream``: the whole upstream
        closure, see ``Views.lineage_provenance``), ``metrics`` (summaries and where the series
        is), ``events`` (its own log), ``environment`` (the environment facts with a page of
        the installed distributions, ``packages_limit`` lines from ``packages_offset``),
        ``svs`` (each output's statistics and the run's findings, see ``get_run_svs_findings``)."""
        sections = {"dashboard", *(("provenance", "metrics") if include is None else include)}
        unknown = sorted(sections - set(INCLUDES))
        if unknown:
            raise InvalidInput(f"unknown include {unknown}", code="invalid_include",
                               hint="include any of: " + ", ".join(INCLUDES))
        if packages_offset < 0 or not 1 <= packages_limit <= PACKAGES_PAGE_MAX:
            raise InvalidInput(
                f"packages_offset {packages_offset} / packages_limit {packages_limit} out of "
                "range", code="invalid_page",
                hint=f"packages_offset >= 0 and 1 <= packages_limit <= {PACKAGES_PAGE_MAX}")
        self.views.catch_up()
        record = self.views.run_record(self._run_id(run_id))
        execution = self.views.run_execution(run_id)
        assert record is not None and execution is not None
        out: dict[str, Any] = {k: record[k] for k in (
            "run_id", "pipeline_run_id", "workspace", "stage", "version", "state",
            "infra_outcome", "ml_outcome", "results_status", "reason", "hypothesis", "tags",
            "alerts")}
        resumed = self.views.resumed_from(run_id)
        if resumed is not None:
            out["resumed_from"] = resumed
        out["results"] = {k: record[k] for k in ("results_spec", "results", "results_auto",
                                                 "comparison", "value", "value_source",
                                                 "counts_for_best")}
        review = self.runs.load_run(run_id).review
        if review is not None:  # the pre-run review's decision (a blocked run's why and fix)
            out["review"] = review_summary(review)
        if "dashboard" in sections:
            live_dir = (Path(execution["run_dir"])
                        if execution["ended_at"] is None and execution["run_dir"] else None)
            out["dashboard"] = {
                "state": record["state"],
                "progress": self._progress(record["stage"], execution, live_dir),
                "metrics": record["metrics"],
                "live_metrics": live_metrics(live_dir) if live_dir else None,
                "worker": execution["worker"],
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
        if "environment" in sections:
            environment = self.views.run_provenance(run_id)["environment"]  # type: ignore[index]
            out["environment"] = (None if environment is None else self._environment(
                environment, packages_offset, packages_limit))
        if "svs" in sections:
            outputs = (self.views.run_provenance(run_id) or {}).get("outputs") or {}
            out["svs"] = {"outputs": {name: svs_stats(o.get("stats"))
                                      for name, o in sorted(outputs.items())
                                      if isinstance(o, dict)},
                          **self.get_run_svs_findings(run_id, limit=SVS_FINDINGS_PAGE)}
        if "events" in sections:
            out["events"] = [{"type": r.event.TYPE, "at": r.event.at.isoformat(),
                              "actor": r.event.actor, "reason": r.event.reason}
                             for r in map(decode, self.store.load(stream_id("run", run_id)))]
        return out

    def _environment(self, environment: dict[str, Any], offset: int,
                     limit: int) -> dict[str, Any]:
        """The environment facts with a page of its ``name==version`` package lines."""
        packages = environment.get("packages")
        if not isinstance(packages, dict):  # the interpreter could not be probed
            return dict(environment)
        lines = [line for line in
                 self.blobs.get_bytes(str(packages["sha256"])).decode().splitlines() if line]
        page = lines[offset:offset + limit]
        end = offset + len(page)
        return {**environment, "packages": {
            **packages, "offset": offset, "items": page,
            "next_offset": end if end < len(lines) else None}}

    def _progress(self, stage: str, execution: dict[str, Any],
                  live_dir: Path | None) -> dict[str, Any]:
        """Timing and the latest heartbeat; for a run in flight, from its run directory when
        that is fresher than the log (the executor records heartbeats throttled)."""
        now = self.service.clock.now()

        def seconds(since: str | None, until: str | None = None) -> float | None:
            if since is None:
                return None
            end = datetime.fromisoformat(until) if until else now
            return round((end - datetime.fromisoformat(since)).total_seconds(), 3)

        last_seen, message = execution["last_seen_at"], execution["heartbeat_message"]
        since_seen = seconds(last_seen) if execution["ended_at"] is None else None
        if live_dir is not None:
            live = live_heartbeat(live_dir)
            if live["message"] is not None:
                message = live["message"]
            age = live["seconds_since"]
            if age is not None and (since_seen is None or age < since_seen):
                since_seen, last_seen = age, live["at"]
        return {"stage": stage, "created_at": execution["created_at"],
                "launched_at": execution["launched_at"], "ended_at": execution["ended_at"],
                "elapsed_seconds": seconds(execution["launched_at"], execution["ended_at"]),
                "last_seen_at": last_seen, "seconds_since_seen": since_seen,
                "message": message}

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

    def get_run_svs_findings(self, run_id: str, *, limit: int = SVS_FINDINGS_PAGE,
                             offset: int = 0) -> dict[str, Any]:
        """A run's findings (output contracts, statistics, reviews, monitor), ``limit`` from
        ``offset`` in log order, with the counts per severity and how many were left out."""
        if not 1 <= limit <= SVS_FINDINGS_MAX or offset < 0:
            raise InvalidInput(f"limit {limit} / offset {offset} out of range",
                               code="invalid_page",
                               hint=f"offset >= 0 and 1 <= limit <= {SVS_FINDINGS_MAX}")
        self.views.catch_up()
        run_id = self._run_id(run_id)
        counts = self.views.finding_counts(run_id)
        found = self.views.run_findings(run_id, limit=limit, offset=offset)
        for finding in found:
            finding.pop("workspace", None)
        return {"run_id": run_id, "counts": counts, "findings": found,
                "omitted": max(counts["total"] - offset - len(found), 0)}

    def get_metric_history(self, run_id: str, name: str, *, max_points: int = 50,
                           offset: int | None = None,
                           limit: int | None = None) -> dict[str, Any]:
        """One metric's points, read from the run's latest Parquet series.

        By default the curve is thinned to at most ``max_points`` points (:func:`downsample`:
        evenly spaced, plus the first, the last, the lowest, the highest and the first
        non-finite point); ``downsampled`` says so and ``count`` is how many points exist.
        With ``offset`` or ``limit`` the raw points are paged instead (``limit`` defaults to
        ``RAW_PAGE``; ``next_offset`` is None after the last page). A non-finite value is
        ``null`` with ``non_finite`` beside it ("nan", "inf" or "-inf"), since JSON has no
        NaN. ``unknown_metric`` when the run's series has no metric of that name.
        """
        self.views.catch_up()
        execution = self.views.run_execution(self._run_id(run_id))
        assert execution is not None
        series = execution["metric_series"]
        points = self._metric_points(series, name) if series else []
        out: dict[str, Any] = {"run_id": run_id, "name": name, "count": len(points),
                               "series": series}
        if offset is not None or limit is not None:
            first = max(offset or 0, 0)
            size = RAW_PAGE if limit is None else max(limit, 1)
            page = points[first:first + size]
            out.update(points=[_point_json(p) for p in page], offset=first,
                       next_offset=first + len(page) if first + len(page) < len(points)
                       else None, downsampled=False)
            return out
        kept = downsample([p["value"] for p in points], max(max_points, MIN_POINTS))
        out.update(points=[_point_json(points[i]) for i in kept],
                   downsampled=len(kept) < len(points))
        return out

    def _metric_points(self, series: str, name: str) -> list[dict[str, Any]]:
        """Every point of ``name`` in the Parquet series ``series``, in logging order."""
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(self.blobs.get_bytes(series)))
        columns = table.column_names
        points: list[dict[str, Any]] = []
        if "name" in columns:  # long format: one row per point
            names = table.column("name").to_pylist()
            if name not in names:
                raise _unknown_metric(name, sorted(set(names)))
            rows = table.to_pylist()
            points = [{k: v for k, v in row.items() if k != "name"}
                      for row, n in zip(rows, names, strict=True) if n == name]
        elif name in columns:  # wide format: one column per metric
            for row in table.to_pylist():
                if row.get(name) is not None:
                    points.append({k: row[k] for k in ("step", "ts") if k in row}
                                  | {"value": row[name]})
        else:
            raise _unknown_metric(name, [c for c in columns if c not in ("step", "ts")])
        return points

    def dashboard(self, consumer: str | None = None, *, section: str | None = None,
                  offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """Active runs, pending finalization by workspace, recent outcomes, failures, the best
        results, and what is new since ``consumer`` last called ``mark_seen``, within about
        6,000 characters; ``more`` names the call that pages each list that was cut. With
        ``section`` (one of ``active, pending, outcomes, failed, best, started, ended,
        finalized``): ``limit`` rows of that list from ``offset``, in full.

        Reading changes nothing; pass the returned ``cursor_position`` to ``mark_seen``.
        ``consumer`` defaults to ``"default"``."""
        consumer = check_name(consumer or "default", what="consumer")
        sections = ("active", "pending", "outcomes", "failed", "best", "started", "ended",
                    "finalized")
        if section is not None and section not in sections:
            raise InvalidInput(f"unknown dashboard section {section!r}",
                               code="invalid_section", hint="use one of " + ", ".join(sections))
        if offset < 0 or not 1 <= limit <= 200:
            raise InvalidInput(f"offset {offset} / limit {limit} out of range",
                               code="invalid_page", hint="offset >= 0 and 1 <= limit <= 200")
        self.views.catch_up()
        return self.views.dashboard(consumer, section=section, offset=offset, limit=limit)

