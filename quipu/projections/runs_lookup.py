"""Queries on the runs view: the ``core.ports.RunIndex`` lookups and the read tools
(``list_history``, ``inspect_record``, ``list_unfinalized_runs``, ``get_experiment_context``).

Each takes the views connection and returns plain JSON-serialisable values.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from quipu.core.runs import lifecycle
from quipu.core.runs.lifecycle import State
from quipu.core.runs.results import (
    ResultsSpec,
    auto_results,
    deciding_run,
    non_finite_reason,
    pipeline_order,
    suggest_outcome,
)
from quipu.projections._base import chunks, placeholders, rows_as_dicts
from quipu.projections.runs_view import Row, counts_for_best, loads_row, value_source

__all__ = ["auto_results_of", "awaiting", "best", "best_by_workspace", "current_best",
           "downstream", "experiment_context", "finalize_hint", "history", "latest_output",
           "previous_finalized", "record",
           "results_status", "run_row", "summaries", "tagged_run", "tags_of", "unfinalized"]


_BAD = ("(EXISTS (SELECT 1 FROM run_tags b WHERE b.run_id = r.run_id AND b.tag = 'bad-results')"
        " OR (r.ml_outcome = 'miss' AND EXISTS (SELECT 1 FROM run_tags b "
        "WHERE b.run_id = r.run_id AND b.tag = 'bad')))")
"""A run whose outputs must not be reused: tagged ``bad-results``, or finalized as a miss and
tagged ``bad``."""



def latest_output(conn: sqlite3.Connection, workspace: str, stage: str,
                  signal: str) -> str | None:
    """The newest run of ``stage`` that succeeded, produced ``signal`` and is not bad."""
    row = conn.execute(
        "SELECT r.run_id FROM runs r WHERE r.workspace = ? AND r.stage = ? "
        "AND r.infra_outcome = 'succeeded' "
        "AND EXISTS (SELECT 1 FROM json_each(r.outputs) j WHERE j.key = ?) "
        f"AND NOT {_BAD} ORDER BY r.created_position DESC LIMIT 1",
        (workspace, stage, signal)).fetchone()
    return None if row is None else str(row[0])


def previous_finalized(conn: sqlite3.Connection, workspace: str, stage: str, metric: str,
                       exclude: str) -> tuple[str, float] | None:
    """(run_id, value) of the most recently finalized run of the stage whose value counts
    (``runs_view.counts_for_best``: an agent-reported value of a failed run never does)."""
    row = conn.execute(
        "SELECT v.run_id, v.value FROM valued_runs v WHERE v.workspace = ? AND v.stage = ? "
        "AND v.primary_metric = ? AND v.run_id != ? ORDER BY v.finalized_position DESC LIMIT 1",
        (workspace, stage, metric, exclude)).fetchone()
    return None if row is None else (str(row[0]), float(row[1]))


def best(conn: sqlite3.Connection, workspace: str, stage: str, metric: str,
         exclude: str, *, direction: str) -> tuple[str, float] | None:
    """(run_id, value) of the reference a new result of the stage is compared with: the
    finalized run most recently tagged ``best*``, else the best finalized value so far (by
    ``direction``; ties go to the run finalized last). Only values that count are candidates
    (``valued_runs``: runs that ran to their end, in live workspaces)."""
    row = conn.execute(
        "SELECT v.run_id, v.value FROM valued_runs v WHERE v.workspace = ? "
        "AND v.best_tag_position IS NOT NULL AND v.stage = ? AND v.primary_metric = ? "
        "AND v.run_id != ? ORDER BY v.best_tag_position DESC LIMIT 1",
        (workspace, stage, metric, exclude)).fetchone()
    if row is None:
        order = "ASC" if direction == "minimize" else "DESC"
        row = conn.execute(
            "SELECT v.run_id, v.value FROM valued_runs v WHERE v.workspace = ? AND v.stage = ? "
            f"AND v.primary_metric = ? AND v.run_id != ? ORDER BY v.value {order}, "
            "v.finalized_position DESC LIMIT 1", (workspace, stage, metric, exclude)).fetchone()
    return None if row is None else (str(row[0]), float(row[1]))


def tags_of(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each run's tags, by name."""
    out: dict[str, list[str]] = {r: [] for r in run_ids}
    for batch in chunks(list(run_ids)):
        for run_id, tag in conn.execute(
                f"SELECT run_id, tag FROM run_tags WHERE run_id IN ({placeholders(len(batch))})"
                " ORDER BY run_id, tag", batch):
            out[run_id].append(tag)
    return out


def tagged_run(conn: sqlite3.Connection, workspace: str, tag: str) -> str | None:
    """The run of ``workspace`` most recently given ``tag``."""
    row = conn.execute("SELECT run_id FROM run_tags WHERE workspace = ? AND tag = ? "
                       "ORDER BY position DESC LIMIT 1", (workspace, tag)).fetchone()
    return None if row is None else str(row[0])


def results_status(row: Row) -> str:
    """``finalized`` (the agent's verdict), ``auto`` (a logged primary value), ``non_finite``
    (the primary metric's latest point is NaN or infinite) or ``missing``."""
    if row["state"] == State.FINALIZED.value:
        return "finalized"
    if row["value"] is not None:
        return "auto"
    return "non_finite" if row.get("non_finite") else "missing"


def _summary(row: Row, tags: list[str]) -> dict[str, Any]:
    return {
        "record_id": row["run_id"], "run_id": row["run_id"],
        "pipeline_run_id": row["pipeline_run_id"], "workspace": row["workspace"],
        "stage": row["stage"], "version": f"v{row['version']}", "reason": row["description"],
        "hypothesis": row["hypothesis"], "experiment_group": row["experiment_group"],
        "primary_metric": row["primary_metric"], "direction": row["direction"],
        "value": row["value"], "value_source": value_source(row),
        "counts_for_best": row["value"] is not None and row["state"] == "finalized"
        and counts_for_best(row),
        "state": row["state"], "infra_outcome": row["infra_outcome"],
        "ml_outcome": row["ml_outcome"], "results_status": results_status(row),
        "created_at": row["created_at"], "ended_at": row["ended_at"],
        "finalized_at": row["finalized_at"], "error": row["error"], "tags": tags,
    }


def summaries(conn: sqlite3.Connection, run_id: str) -> dict[str, dict[str, Any]]:
    """The latest metric summaries of a run, by metric name (``non_finite`` only on a metric
    that logged NaN or infinite points)."""
    cur = conn.execute("SELECT name, min, max, last, count, trend, last_step, non_finite FROM "
                       "metric_summaries WHERE run_id = ? ORDER BY name", (run_id,))
    out = {}
    for r in rows_as_dicts(cur):
        facts = r.pop("non_finite")
        if facts:
            r["non_finite"] = json.loads(facts)
        out[r.pop("name")] = r
    return out


def metric_alerts(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per metric that logged NaN or infinite points (``non_finite_reason``)."""
    return [non_finite_reason(name, s["non_finite"]) for name, s in metrics.items()
            if isinstance(s.get("non_finite"), dict)]


def auto_results_of(row: Row, metrics: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """What the logged metrics say before the agent finalizes
    (``core.runs.results.auto_results``)."""
    if row["state"] == State.FINALIZED.value:
        return dict(row["results_auto"] or {})
    try:
        spec = ResultsSpec.model_validate(row["results_spec"])
    except ValueError:
        return None
    return auto_results(spec, {name: s.get("last") for name, s in metrics.items()},
                        {name: s["non_finite"] for name, s in metrics.items()
                         if isinstance(s.get("non_finite"), dict)})


def history(conn: sqlite3.Connection, workspace: str, *, stage: str | None = None,
            tagged: str | None = None, metric: str | None = None,
            min_value: float | None = None, experiment_group: str | None = None,
            sort_by: str = "created", desc: bool = True, finalized_only: bool = False,
            has_value: bool | None = None, limit: int = 20,
            offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of a workspace's runs and how many match (see ``Views.history``)."""
    where, params = ["r.workspace = ?"], [workspace]
    if has_value is None and sort_by == "metric":
        # A ranking by value has no place for a run without one (a stage that never logged
        # the metric); the caller reports how many were left out.
        has_value = True
    if has_value is not None:
        where.append("r.value IS NOT NULL" if has_value else "r.value IS NULL")
    for column, value in (("r.stage", stage), ("r.primary_metric", metric),
                          ("r.experiment_group", experiment_group)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if tagged is not None:
        where.append("EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id AND t.tag = ?)")
        params.append(tagged)
    if min_value is not None:
        where.append("r.value >= ?")
        params.append(min_value)  # type: ignore[arg-type]
    if finalized_only:
        where.append("r.state = 'finalized'")
    clause = " AND ".join(where)
    order = "DESC" if desc else "ASC"
    sort = (f"r.value {order}, r.created_position DESC" if sort_by == "metric"
            else f"r.created_position {order}")
    if len(where) == 1:
        # Every run of the workspace: the fold keeps that count, so it costs one lookup at any
        # history length (a filtered count still visits the matching runs).
        kept = conn.execute("SELECT runs FROM workspace_runs WHERE workspace = ?",
                            (workspace,)).fetchone()
        total = int(kept[0]) if kept else 0
    else:
        total = int(conn.execute(f"SELECT COUNT(*) FROM runs r WHERE {clause}",
                                 params).fetchone()[0])
    rows = rows_as_dicts(conn.execute(
        f"SELECT * FROM runs r WHERE {clause} ORDER BY {sort} LIMIT ? OFFSET ?",
        (*params, max(limit, 0), max(offset, 0))))
    tags = tags_of(conn, [r["run_id"] for r in rows])
    return [_summary(r, tags[r["run_id"]]) for r in rows], total


def run_row(conn: sqlite3.Connection, run_id: str) -> Row | None:
    """A run's row with JSON parsed, or None."""
    rows = rows_as_dicts(conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)))
    return loads_row(rows[0]) if rows else None


def record(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """Everything recorded about one run, or None."""
    row = run_row(conn, run_id)
    if row is None:
        return None
    metrics = summaries(conn, run_id)
    out = _summary(row, tags_of(conn, [run_id])[run_id])
    out.update({
        "description": row["description"], "detail": row["detail"],
        "results_spec": row["results_spec"], "results": row["results"],
        "results_auto": auto_results_of(row, metrics), "comparison": row["comparison"],
        "metrics": metrics, "alerts": metric_alerts(metrics),
        "config_hash": row["config_hash"], "created_by": row["created_by"],
        "launched_at": row["launched_at"], "last_seen_at": row["last_seen_at"],
        "error": row["error"], "problems": row["problems"], "exit_code": row["exit_code"],
        "in_gate": conn.execute("SELECT 1 FROM unfinalized WHERE run_id = ?",
                                (run_id,)).fetchone() is not None,
    })
    return out


def downstream(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """The runs that read an output of ``run_id``, oldest first."""
    cur = conn.execute(
        "SELECT l.run_id, l.input, l.signal, r.stage, r.state, r.infra_outcome, r.ml_outcome "
        "FROM run_links l JOIN runs r ON r.run_id = l.run_id WHERE l.from_run = ? "
        "ORDER BY r.created_position, l.input", (run_id,))
    return rows_as_dicts(cur)


def finalize_hint(row: Row, auto: dict[str, Any] | None) -> dict[str, Any]:
    """The ``results`` argument a ``finalize_run`` of this run needs, filled where known.

    A run that succeeded (or was stopped) and logged its primary metric needs full results
    (``core.runs.handlers.RunService`` compares the value); any other run needs a verdict and notes.
    """
    notes = "<what this result means and what to try next (15+ characters)>"
    # A primary metric whose latest point is NaN or infinite has no value to judge (the
    # handler asks for a verdict and notes only); one that went non-finite on the way is
    # never suggested as a success, and the notes say why.
    value = auto.get("value") if auto else None
    facts = ((auto.get("non_finite_points") or {}).get(row["primary_metric"])
             if auto else None)
    if facts:
        notes = (f"<what this result means and what to try next (15+ characters); note: "
                 f"{non_finite_reason(row['primary_metric'], facts)}>")
    if value is not None and lifecycle.has_value(row["state"], logged=True):
        spec = ResultsSpec.model_validate(row["results_spec"])
        return {"primary_metric": spec.primary_metric, "direction": spec.direction,
                "value": value, "dataset_split": spec.dataset_split,
                "ml_outcome": suggest_outcome(spec, value, went_non_finite=bool(facts)),
                "notes": notes}
    return {"ml_outcome": "miss" if row["infra_outcome"] != "succeeded" or facts else "unknown",
            "notes": notes}


def unfinalized(conn: sqlite3.Connection, workspace: str) -> list[dict[str, Any]]:
    """The runs holding the workspace's gate, oldest first, with the call to make."""
    ids = [r for (r,) in conn.execute("SELECT run_id FROM unfinalized WHERE workspace = ? "
                                      "ORDER BY position", (workspace,))]
    return [e for e in (_awaiting_entry(conn, run_id, workspace) for run_id in ids) if e]


def awaiting(conn: sqlite3.Connection, *, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` runs holding a finalization gate (by workspace, then oldest first),
    as ``unfinalized`` gives them, and how many there are in all."""
    # Only gate entries with a run row are listed (as ``unfinalized`` does); the gate holds
    # what waits on the agent now, not history, so counting it is cheap.
    known = "FROM unfinalized u JOIN runs r ON r.run_id = u.run_id"
    total = int(conn.execute(f"SELECT COUNT(*) {known}").fetchone()[0])
    out = []
    for run_id, workspace in conn.execute(
            f"SELECT u.run_id, u.workspace {known} ORDER BY u.workspace, u.position LIMIT ?",
            (max(limit, 0),)).fetchall():
        entry = _awaiting_entry(conn, run_id, workspace)
        if entry is not None:
            out.append(entry)
    return out, total


def _awaiting_entry(conn: sqlite3.Connection, run_id: str,
                    workspace: str) -> dict[str, Any] | None:
    row = run_row(conn, run_id)
    if row is None:
        return None
    metrics = summaries(conn, run_id)
    auto = auto_results_of(row, metrics)
    args = finalize_hint(row, auto)
    return {
        "run_id": run_id, "pipeline_run_id": row["pipeline_run_id"], "workspace": workspace,
        "stage": row["stage"], "state": row["state"], "infra_outcome": row["infra_outcome"],
        "reason": row["description"], "hypothesis": row["hypothesis"],
        "ended_at": row["ended_at"], "error": row["error"], "problems": row["problems"],
        "alerts": metric_alerts(metrics),
        "results_auto": auto, "finalize_args": args,
        "finalize_call": f"finalize_run({json.dumps(run_id)}, {json.dumps(args)})",
    }


def pipeline_stage_runs(conn: sqlite3.Connection,
                        pipeline_run_id: str) -> dict[str, str] | None:
    """A pipeline run's stage runs (stage -> run id), or None if it is unknown."""
    found = conn.execute("SELECT runs FROM pipeline_runs WHERE pipeline_run_id = ?",
                         (pipeline_run_id,)).fetchone()
    return None if found is None else dict(json.loads(found[0] or "{}"))


def pipeline_verdict(conn: sqlite3.Connection, pipeline_run_id: str) -> dict[str, Any] | None:
    """The one ``finalize_run`` call that records a pipeline run's verdict and closes its other
    ended stages: on the stage run that decides its results spec
    (``core.runs.results.deciding_run``), once that run ended and is not finalized. None for a
    pipeline run of one stage (its stage call says it all) or when there is no such call yet."""
    ids = list((pipeline_stage_runs(conn, pipeline_run_id) or {}).values())
    if len(ids) < 2:
        return None
    rows = {r["run_id"]: loads_row(r) for r in rows_as_dicts(conn.execute(
        f"SELECT * FROM runs WHERE run_id IN ({placeholders(len(ids))})", ids))}
    if len(rows) < 2:
        return None
    logged = {i: conn.execute("SELECT 1 FROM metric_summaries WHERE run_id = ? AND name = ?",
                              (i, r["primary_metric"])).fetchone() is not None
              for i, r in rows.items()}
    stages = {i: (r["stage"], r["depends_on"] or []) for i, r in rows.items()}
    deciding = rows[deciding_run(stages, logged)]
    if not lifecycle.is_ended(deciding["state"]) and deciding["state"] != State.BLOCKED.value:
        return None
    args = finalize_hint(deciding, auto_results_of(deciding, summaries(conn,
                                                                       deciding["run_id"])))
    return {"pipeline_run_id": pipeline_run_id, "deciding_run_id": deciding["run_id"],
            "deciding_stage": deciding["stage"], "hypothesis": deciding["hypothesis"],
            "stages": [{"stage": rows[i]["stage"], "run_id": i, "state": rows[i]["state"]}
                       for i in pipeline_order(stages)],
            "finalize_call": f"finalize_run({json.dumps(pipeline_run_id)}, {json.dumps(args)})"}


def experiment_outcomes(conn: sqlite3.Connection, sql: str, *,
                        limit: int) -> list[dict[str, Any]]:
    """The newest finalized outcomes, one per pipeline run (an experiment): ``sql`` lists
    finalized runs newest first (stages closed by a pipeline verdict left out) with a ``?`` for
    a limit; of an experiment's stages the one with a value is shown, else the newest."""
    picked: dict[str, dict[str, Any]] = {}
    for r in rows_as_dicts(conn.execute(sql, (max(limit, 0) * 4,))):
        key = r.get("pipeline_run_id") or r["run_id"]
        if key not in picked:
            if len(picked) >= limit:
                continue
            picked[key] = r
        elif picked[key]["value"] is None and r["value"] is not None:
            picked[key] = r
    return list(picked.values())


def current_best(conn: sqlite3.Connection, workspace: str) -> dict[str, Any] | None:
    """The workspace's reference result: the finalized run most recently tagged ``best*``,
    else the best value (by its direction) of the stage and metric finalized most recently.

    The fold keeps the answer (``runs_view.best_of``, in ``best_runs``): reading it is one
    lookup at any length of history."""
    rows = rows_as_dicts(conn.execute(
        f"SELECT {_BEST_COLUMNS}, b.chosen_by FROM best_runs b JOIN runs r "
        "ON r.run_id = b.run_id WHERE b.workspace = ?", (workspace,)))
    return _with_tags(conn, rows[0]) if rows else None


def best_by_workspace(conn: sqlite3.Connection, *,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """``current_best`` of every workspace that has one (the first ``limit``), by name, each
    with its ``workspace``."""
    rows = rows_as_dicts(conn.execute(
        f"SELECT b.workspace, {_BEST_COLUMNS}, b.chosen_by FROM best_runs b JOIN runs r "
        "ON r.run_id = b.run_id ORDER BY b.workspace LIMIT ?",
        (-1 if limit is None else max(limit, 0),)))
    return [_with_tags(conn, r) for r in rows]


def best_results(conn: sqlite3.Connection, *, limit: int,
                 offset: int = 0) -> dict[str, Any]:
    """Every live workspace's ``current_best``, ranked: grouped by primary metric (the metric
    most workspaces use first), best value first within each (by the direction of its runs),
    a page of ``limit`` rows from ``offset``, how many there are, and the project-wide best
    per primary metric.

    ``best_runs`` holds one row per workspace with a best (deleted workspaces have none), so
    this reads what is current, not the history."""
    rows = rows_as_dicts(conn.execute(
        f"SELECT b.workspace, {_BEST_COLUMNS}, b.chosen_by FROM best_runs b JOIN runs r "
        "ON r.run_id = b.run_id ORDER BY b.workspace"))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["primary_metric"]), []).append(r)
    ranked: list[dict[str, Any]] = []
    by_metric: dict[str, dict[str, Any]] = {}
    for metric in sorted(groups, key=lambda m: (-len(groups[m]), m)):
        group = groups[metric]
        directions = [g["direction"] for g in group]
        direction = max(set(directions), key=lambda d: (directions.count(d), str(d)))
        sign = 1.0 if direction == "minimize" else -1.0
        group.sort(key=lambda g: (sign * float(g["value"]), g["workspace"]))
        top = group[0]
        by_metric[metric] = {"direction": direction, "value": top["value"],
                             "workspace": top["workspace"], "run_id": top["run_id"],
                             "stage": top["stage"], "workspaces": len(group)}
        ranked += group
    page = [_with_tags(conn, r) for r in ranked[max(offset, 0):max(offset, 0) + max(limit, 0)]]
    return {"rows": page, "total": len(ranked), "by_metric": by_metric}


_BEST_COLUMNS = ("r.run_id, r.stage, r.primary_metric, r.direction, r.value, r.hypothesis, "
                 "r.ml_outcome, r.finalized_at")


def _with_tags(conn: sqlite3.Connection, row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "tags": tags_of(conn, [row["run_id"]])[row["run_id"]]}


def experiment_context(conn: sqlite3.Connection, workspace: str, *,
                       trend: int = 10) -> dict[str, Any]:
    """Best result, runs awaiting finalization, the recent trend and regression alerts."""
    # valued_runs holds exactly the finalized runs with a value, indexed by workspace and
    # finalization: the trend is read newest first and stopped at its length.
    rows = [loads_row(r) for r in rows_as_dicts(conn.execute(
        "SELECT r.run_id, r.stage, r.primary_metric, r.direction, r.value, r.ml_outcome, "
        "r.finalized_at, r.comparison, r.hypothesis FROM valued_runs v JOIN runs r "
        "ON r.run_id = v.run_id WHERE v.workspace = ? ORDER BY v.finalized_position DESC "
        "LIMIT ?", (workspace, trend)))]
    rows.reverse()  # oldest first: it reads as a trend
    alerts = []
    for r in rows:
        comparison = r["comparison"] or {}
        vs_best = comparison.get("vs_best") or {}
        if comparison.get("regression_alert"):
            alerts.append({"run_id": r["run_id"], "stage": r["stage"], "value": r["value"],
                           "best_run": vs_best.get("run_id"), "best_value": vs_best.get("value"),
                           "delta": vs_best.get("delta")})
    return {
        "workspace": workspace,
        "current_best": current_best(conn, workspace),
        "awaiting_finalization": unfinalized(conn, workspace),
        "recent_trend": [{k: r[k] for k in ("run_id", "stage", "primary_metric", "value",
                                            "ml_outcome", "finalized_at")} for r in rows],
        "regression_alerts": alerts,
    }
