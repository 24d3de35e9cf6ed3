"""The runs view folded after every command == folded at once == folded in tiny pages, for
random sequences of run commands (refusals included)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from conftest import make_project
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_runs_projection import ACTOR, NO_VALUE, PIPELINE, SPEC, WORKER, dump, results

from quipu.core.errors import QuipuError
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.projections import Views

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
        runs.finalize(run_id, results(round(value, 3)) if variant % 2 else NO_VALUE,
                      actor=ACTOR)
    elif action == "tag":
        runs.tag(run_id, ("best", "bad", "bad-results", "keep")[variant],
                 "mark this run for the comparison", actor=ACTOR)
    elif action == "spec":
        runs.save_results_spec(run_id, {**SPEC, "primary_metric": ("val_acc", "loss")[variant % 2],
                                        "direction": "maximize"}, actor=ACTOR)


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
