"""The runs view folded after every command == folded at once == folded in tiny pages, for
random sequences of run commands (refusals included)."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_runs_projection import ACTOR, NO_VALUE, PIPELINE, SPEC, WORKER, dump, results
from unit_support import make_project

from quipu.core.errors import QuipuError
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.projections import Views
from quipu.projections.dashboard_view import BUDGET, MAX_LISTED, new_since
from quipu.projections.runs_view import ACTIVE_STATES, TROUBLE_OUTCOMES

ACTIONS = ("start", "launch", "heartbeat", "metrics", "exit", "lost", "adopt", "cancel",
           "finalize", "tag", "spec")
EXITS = (State.SUCCEEDED, State.FAILED, State.CRASHED, State.STOPPED)

steps = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 7), st.integers(0, 3),
                           st.floats(0.5, 0.95)), min_size=1, max_size=40)


def act(runs: RunService, ids: list[str], action: str, pick: int, variant: int,
        value: float) -> None:
    if action == "start":
        out = runs.run("ws", reason={"description": "a random run of the pipeline",
                                     "hypothesis": f"variant {variant} helps"},
                       results_spec=SPEC, actor=ACTOR,
                       stages=[["prep"], ["prep", "train"], ["train"], None][variant],
                       experiment_group=f"g{variant % 2}")
        ids += [q["stage_run_id"] for q in out["queued"]]
        return
    if not ids:
        return
    run_id = ids[pick % len(ids)]
    if action == "launch":
        if runs.record_claim(run_id, WORKER):
            runs.record_launch(run_id, worker=WORKER, host="h", pid=variant, run_dir="/r",
                               inputs={"features": {"sha256": "f" * 64, "size": variant}})
    elif action == "heartbeat":
        runs.record_heartbeat(run_id, worker=WORKER, message=f"step {variant}")
    elif action == "metrics":
        runs.record_metrics(run_id, actor="ingester", series=None, points=variant + 1,
                            complete=variant == 3,
                            summaries={"val_acc": {"min": 0.1, "max": value, "last": value,
                                                   "count": variant + 1, "trend": "up",
                                                   "last_step": variant}})
    elif action == "exit":
        runs.record_exit(run_id, worker=WORKER, state=EXITS[variant], exit_code=variant,
                         outputs={"features": {"sha256": "a" * 64, "size": 1},
                                  "model": {"sha256": "b" * 64, "size": 1}})
    elif action == "lost":
        runs.record_lost(run_id, actor="supervisor", why="silence")
    elif action == "adopt":
        runs.record_adopted(run_id, worker=WORKER, pid=variant)
    elif action == "cancel":
        runs.cancel(run_id, "no longer needed for this test", actor=ACTOR)
    elif action == "finalize":
        direction = ("maximize", "minimize")[variant // 2]
        runs.finalize(run_id, {**results(round(value, 3)), "direction": direction}
                      if variant % 2 else NO_VALUE, actor=ACTOR)
    elif action == "tag":
        runs.tag(run_id, ("best", "bad", "bad-results", "keep")[variant],
                 "mark this run for the comparison", actor=ACTOR)
    elif action == "spec":
        runs.save_results_spec(run_id, {**SPEC, "primary_metric": ("val_acc", "loss")[variant % 2],
                                        "direction": ("maximize", "minimize")[variant // 2]},
                               actor=ACTOR)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_incremental_equals_rebuilt_for_random_run_commands(plan: list[tuple[Any, ...]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="quipu-runs-property-"))
    project = make_project(tmp)
    try:
        project.service.init_project("demo", "find a better model", actor=ACTOR)
        project.create("ws")
        project.mount("ws")
        project.write("w1", "pipeline.yaml", PIPELINE)
        project.write("w1", "modules/prep.py", "print('prep')\n")
        project.write("w1", "modules/train.py", "print('train')\n")
        with Views(tmp / "live.db", project.store) as live:
            counter = itertools.count(1)
            runs = RunService(project.service, live, new_id=lambda: f"{next(counter):04d}")
            ids: list[str] = []
            for step in [("start", 0, 1, 0.5), *plan]:  # begin with both stages requested
                try:
                    act(runs, ids, *step)
                    event(f"{step[0]}: done")
                except QuipuError as exc:  # refused: must leave no trace in the views either
                    event(f"{step[0]}: refused ({exc.code})")
                live.catch_up()
            incremental = dump(live)
            assert_kept_lists_match_a_scan(live)
            text = live.state_md(lambda s, m: False)
            with Views(tmp / "small.db", project.store, page_size=2) as small:
                small.catch_up()
                assert dump(small) == incremental
                assert small.state_md(lambda s, m: False) == text
            live.rebuild()
            assert dump(live) == incremental
    finally:
        project.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


SPECS = {
    "max": SPEC,
    "min": {**SPEC, "direction": "minimize", "min_value": 0.9, "goal_value": 0.8},
    "loss": {**SPEC, "primary_metric": "loss", "direction": "minimize", "min_value": 0.9,
             "goal_value": 0.8},
}

cycles = st.lists(st.tuples(st.sampled_from(("max", "min", "loss", "tag-best", "tag-best-2",
                                             "tag-keep", "unfinished")),
                            st.sampled_from((0.5, 0.6, 0.7)), st.integers(0, 30)),
                  min_size=1, max_size=25)


def _cycle(runs: RunService, ids: list[str], kind: str, value: float, pick: int) -> None:
    """One pipeline run finalized with a value (by one of SPECS), a tag, or a run left
    unfinished in flight."""
    if kind.startswith("tag"):
        if ids:
            tag = {"tag-best": "best", "tag-best-2": "best-v2", "tag-keep": "keep"}[kind]
            runs.tag(ids[pick % len(ids)], tag, "mark this run for the comparison", actor=ACTOR)
        return
    spec = SPECS.get(kind, SPEC)
    out = runs.run("ws", reason={"description": "one more point of the sweep",
                                 "hypothesis": f"{kind} at {value}"},
                   results_spec=spec, actor=ACTOR, stages=["prep"] if kind == "unfinished"
                   else None)
    started = {q["stage"]: q["stage_run_id"] for q in out["queued"]}
    ids += started.values()
    for stage, run_id in started.items():
        assert runs.record_claim(run_id, WORKER)
        runs.record_launch(run_id, worker=WORKER, host="h", pid=1, run_dir="/r",
                           inputs={"features": {"sha256": "f" * 64, "size": 1}})
        if kind == "unfinished":
            return
        runs.record_exit(run_id, worker=WORKER, state=State.SUCCEEDED, exit_code=0,
                         outputs={"features": {"sha256": "a" * 64, "size": 1},
                                  "model": {"sha256": "b" * 64, "size": 1}})
        if stage == "prep":
            runs.finalize(run_id, NO_VALUE, actor=ACTOR)
        else:
            runs.finalize(run_id, {**results(value), "primary_metric": spec["primary_metric"],
                                   "direction": spec["direction"]}, actor=ACTOR)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles)
def test_kept_bests_and_lists_match_a_scan_of_every_run(plan: list[tuple[Any, ...]]) -> None:
    """Bests by value (either direction, ties included) and by ``best*`` tag, as kept by the
    fold, equal the scan they replaced, folded at once, incrementally or in tiny pages."""
    tmp = Path(tempfile.mkdtemp(prefix="quipu-best-property-"))
    project = make_project(tmp)
    try:
        project.service.init_project("demo", "find a better model", actor=ACTOR)
        project.create("ws")
        project.mount("ws")
        project.write("w1", "pipeline.yaml", PIPELINE)
        project.write("w1", "modules/prep.py", "print('prep')\n")
        project.write("w1", "modules/train.py", "print('train')\n")
        with Views(tmp / "live.db", project.store) as live:
            counter = itertools.count(1)
            runs = RunService(project.service, live, new_id=lambda: f"{next(counter):04d}")
            ids: list[str] = []
            for step in plan:
                try:
                    _cycle(runs, ids, *step)
                except QuipuError as exc:  # e.g. the gate of an unfinished run
                    event(f"{step[0]}: refused ({exc.code})")
                live.catch_up()
                assert_kept_lists_match_a_scan(live)
            best = {b["workspace"]: b for b in live.dashboard(section="best")["rows"]}.get("ws")
            event(f"best chosen by {best and best['chosen_by']}")
            incremental = dump(live)
            with Views(tmp / "small.db", project.store, page_size=3) as small:
                small.catch_up()
                assert dump(small) == incremental
            live.rebuild()
            assert dump(live) == incremental
    finally:
        project.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --- what the fold keeps == what a scan of every run finds ---------------------------------------
# The reference below is the definition the kept lists (runs_view's active_runs, troubled_runs,
# valued_runs, best_runs) replaced: plain queries over the whole runs table.

_COUNTS = "AND r.infra_outcome IN ('succeeded', 'stopped') AND r.retired = 0 "
"""Values that count: of runs that ran to their end (an agent-reported value of a failed run
never does), in workspaces that were not deleted."""

_REF_BEST_TAG = ("(SELECT MAX(t.position) FROM run_tags t WHERE t.run_id = r.run_id "
                 "AND substr(t.tag, 1, 4) = 'best')")


def reference_current_best(conn: sqlite3.Connection, workspace: str) -> tuple[str, str] | None:
    base = (f"SELECT r.run_id, r.stage, r.primary_metric, r.direction, {_REF_BEST_TAG} AS tagged"
            " FROM runs r WHERE r.workspace = ? AND r.state = 'finalized' "
            f"AND r.value IS NOT NULL {_COUNTS}")
    row = conn.execute(base + "AND tagged IS NOT NULL ORDER BY tagged DESC LIMIT 1",
                       (workspace,)).fetchone()
    if row is not None:
        return row[0], "tagged best"
    latest = conn.execute(base + "ORDER BY r.finalized_position DESC LIMIT 1",
                          (workspace,)).fetchone()
    if latest is None:
        return None
    order = "ASC" if latest[3] == "minimize" else "DESC"
    row = conn.execute(base + f"AND r.stage = ? AND r.primary_metric IS ? ORDER BY r.value "
                       f"{order}, r.finalized_position DESC LIMIT 1",
                       (workspace, latest[1], latest[2])).fetchone()
    return row[0], "best value"


def reference_best(conn: sqlite3.Connection, workspace: str, stage: str,
                   metric: str, direction: str) -> tuple[str, float] | None:
    base = (f"SELECT r.run_id, r.value, {_REF_BEST_TAG} AS tagged FROM runs r "
            "WHERE r.workspace = ? AND r.stage = ? AND r.state = 'finalized' "
            f"AND r.primary_metric = ? AND r.value IS NOT NULL {_COUNTS}")
    row = conn.execute(base + "AND tagged IS NOT NULL ORDER BY tagged DESC LIMIT 1",
                       (workspace, stage, metric)).fetchone()
    if row is None:
        order = "ASC" if direction == "minimize" else "DESC"
        row = conn.execute(base + f"ORDER BY r.value {order}, r.finalized_position DESC LIMIT 1",
                           (workspace, stage, metric)).fetchone()
    return None if row is None else (row[0], row[1])


def assert_kept_lists_match_a_scan(views: Views) -> None:
    conn = views.conn
    active = ",".join(f"'{s}'" for s in ACTIVE_STATES)
    trouble = ",".join(f"'{s}'" for s in TROUBLE_OUTCOMES)
    scans = {
        "active": f"SELECT run_id FROM runs WHERE state IN ({active}) ORDER BY created_position",
        "failed": f"SELECT run_id FROM runs WHERE infra_outcome IN ({trouble}) "
                  "AND retired = 0 ORDER BY ended_position DESC",
        "outcomes": "SELECT run_id, pipeline_run_id, value FROM runs WHERE state = 'finalized' "
                    "AND closed_by IS NULL AND retired = 0 ORDER BY finalized_position DESC",
    }
    board = views.dashboard()
    assert len(json.dumps(board)) <= BUDGET
    for name, sql in scans.items():
        if name == "outcomes":
            # One row per experiment (pipeline run): its stage with a value, else its newest.
            per: dict[str, tuple[str, Any]] = {}
            for run_id, prun, value in conn.execute(sql):
                if prun not in per or (per[prun][1] is None and value is not None):
                    per[prun] = (run_id, value)
            expected = [run_id for run_id, _ in per.values()]
        else:
            expected = [r for (r,) in conn.execute(sql)]
        page = views.dashboard(section=name, limit=200)
        assert [r["run_id"] for r in page["rows"]] == expected[:200], name
        key = {"active": "active", "failed": "failed_recent", "outcomes": "recent_outcomes"}[name]
        shown = board[key]["runs"] if name == "active" else board[key]
        assert [r["run_id"] for r in shown] == expected[:len(shown)], name
        if len(shown) < len(expected):
            assert board["more"][name] == f"dashboard(section={name!r}, offset={len(shown)})"
    assert board["active"]["count"] == len(list(conn.execute(scans["active"])))
    head = views.position()
    for cursor in sorted({0, 1, head // 3, head // 2, head - 2, head}):
        since = new_since(conn, cursor)
        for key, column in (("started", "created_position"), ("ended", "ended_position"),
                            ("finalized", "finalized_position")):
            expected = [r for (r,) in conn.execute(
                f"SELECT run_id FROM runs WHERE {column} > ? ORDER BY {column} DESC", (cursor,))]
            assert since[key]["count"] == len(expected), (key, cursor)
            assert [r["run_id"] for r in since[key]["runs"]] == expected[:MAX_LISTED]
    workspaces = [w for (w,) in conn.execute(
        "SELECT DISTINCT workspace FROM runs r WHERE state = 'finalized' AND value IS NOT NULL "
        f"{_COUNTS} ORDER BY workspace")]
    bests = {b["workspace"]: b for b in views.dashboard(section="best", limit=200)["rows"]}
    assert sorted(bests) == workspaces
    assert list(board["best_by_workspace"]) == list(bests)[:len(board["best_by_workspace"])]
    for ws in workspaces:
        best = bests[ws]
        assert (best["run_id"], best["chosen_by"]) == reference_current_best(conn, ws)
        for stage, metric, direction in itertools.product(
                ("prep", "train"), ("val_acc", "loss"), ("maximize", "minimize")):
            assert (views.best(ws, stage, metric, "", direction=direction)
                    == reference_best(conn, ws, stage, metric, direction))
