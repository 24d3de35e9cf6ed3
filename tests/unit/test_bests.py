"""Comparisons and bests that tell the truth: the best finalized run is the reference when no
``best*`` tag decides, a value the agent gives for a run that did not succeed never counts, and
a deleted workspace leaves the bests and the outcomes."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_runs_projection import ACTOR, NO_VALUE, PIPELINE, SPEC, Lab, lab, results
from unit_support import make_project

from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.projections import Views

__all__ = ["lab"]  # the fixture, imported for pytest

TRAIN_ONLY = """stages:
  - name: train
    outputs:
      model: {type: file, schema: null}
"""


def _train(lab: Lab, value: float, *, state: State = State.SUCCEEDED,
           given: float | None = None, outcome: str = "partial") -> tuple[str, dict[str, Any]]:
    """One train-only run that ends in ``state`` having logged ``value``, finalized with
    ``given`` (default: the logged value)."""
    lab.project.write("w1", "pipeline.yaml", TRAIN_ONLY)
    ids = lab.start()
    lab.execute(ids["train"], state=state, metrics={"val_acc": value})
    out = lab.runs.finalize(ids["train"], results(value if given is None else given, outcome),
                            actor=ACTOR)
    return ids["train"], out


def test_without_a_best_tag_a_drop_beyond_the_tolerance_is_compared_with_the_best_so_far(lab):
    """val_acc 1.0 then 0.44 with tolerance 0.01: vs_best names the 1.0 run and alerts."""
    first, _ = _train(lab, 1.0, outcome="success")

    second, out = _train(lab, 0.44, outcome="miss")

    assert out["comparison"]["vs_best"] == {"run_id": first, "value": 1.0,
                                            "delta": 0.44 - 1.0, "improved": False}
    assert out["comparison"]["regression_alert"] is True
    alerts = lab.fresh().experiment_context("ws")["regression_alerts"]
    assert [(a["run_id"], a["best_run"]) for a in alerts] == [(second, first)]


def test_the_best_so_far_follows_the_direction_of_the_spec(lab):
    minimize = {**SPEC, "primary_metric": "loss", "direction": "minimize", "min_value": 0.5,
                "goal_value": 0.1}
    lab.project.write("w1", "pipeline.yaml", TRAIN_ONLY)
    ran = []
    for value in (0.3, 0.2, 0.4):
        ids = lab.runs.run("ws", reason={"description": "try a lower learning rate now",
                                         "hypothesis": "lower lr lowers the loss"},
                           results_spec=minimize, actor=ACTOR)
        run_id = ids["queued"][0]["stage_run_id"]
        lab.execute(run_id, metrics={"loss": value})
        ran.append(lab.runs.finalize(run_id, {
            **results(value), "primary_metric": "loss", "direction": "minimize"}, actor=ACTOR))

    assert ran[2]["comparison"]["vs_best"]["value"] == 0.2
    assert ran[2]["comparison"]["regression_alert"] is True
    assert ran[1]["comparison"]["vs_best"]["improved"] is True


def test_a_value_given_for_a_crashed_run_is_recorded_but_never_best_nor_compared(lab):
    good, _ = _train(lab, 0.85)

    crashed, out = _train(lab, 0.95, state=State.CRASHED, given=0.0, outcome="miss")
    _, after = _train(lab, 0.84)

    assert out["comparison"] is None
    views = lab.fresh()
    record = views.run_record(crashed)
    assert record is not None
    assert (record["value"], record["value_source"], record["counts_for_best"]) == (
        0.0, "agent", False)
    assert views.run_record(good)["value_source"] == "results"
    assert views.experiment_context("ws")["current_best"]["run_id"] == good
    assert after["comparison"]["vs_previous"]["run_id"] == good  # the crash fed nothing
    assert after["comparison"]["vs_best"]["run_id"] == good
    listed = {r["run_id"]: r for r in views.history("ws")[0]}
    assert listed[crashed]["value_source"] == "agent"
    assert listed[crashed]["counts_for_best"] is False


def test_a_deleted_workspace_leaves_best_results_and_recent_outcomes(lab):
    done = lab.cycle(0.87)
    lab.project.hibernate("w1")
    lab.project.create("other")
    lab.project.mount("other")
    lab.project.write("w1", "pipeline.yaml", PIPELINE)
    lab.project.write("w1", "modules/prep.py", "print('prep')\n")
    lab.project.write("w1", "modules/train.py", "print('train')\n")
    before = lab.fresh().state_md(lambda s, m: False)
    assert f"ws: {done['train']}" in before or f"{done['train']} (train)" in before

    lab.project.service.delete_workspace("ws", "this direction is abandoned for good",
                                         actor=ACTOR)

    views = lab.fresh()
    text = views.state_md(lambda s, m: False)
    assert done["train"] not in text
    board = views.dashboard()
    assert "ws" not in str(board["best_by_workspace"])
    assert all(o["workspace"] != "ws" for o in board["recent_outcomes"])
    small = Path(tempfile.mkdtemp()) / "rebuilt.db"
    with Views(small, lab.project.store, page_size=2) as rebuilt:
        rebuilt.catch_up()
        assert rebuilt.state_md(lambda s, m: False) == text


# --- property: the kept best == brute force over the finalized runs ------------------------------

_END = (State.SUCCEEDED, State.STOPPED, State.FAILED, State.CRASHED)
runs_plans = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(_END),
                                st.floats(0.0, 1.0).map(lambda v: round(v, 2)),
                                st.booleans()), min_size=1, max_size=14)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs_plans, st.sets(st.integers(0, 2), max_size=2))
def test_each_workspace_best_is_the_best_counting_value_of_its_live_runs(
        plan: list[tuple[int, State, float, bool]], deleted: set[int]) -> None:
    """Random finalized runs in three workspaces (some failed or crashed and finalized with a
    value the agent gave), some workspaces deleted: the kept best of each live workspace is the
    brute-force best over the runs that succeeded or stopped; deleted ones have none."""
    tmp = Path(tempfile.mkdtemp(prefix="quipu-bests-"))
    project = make_project(tmp)
    try:
        project.service.init_project("demo", "find a better model", actor=ACTOR)
        for n in range(3):
            project.create(f"ws{n}")
        with Views(tmp / "views.db", project.store) as views:
            counter = itertools.count(1)
            runs = RunService(project.service, views, new_id=lambda: f"{next(counter):04d}")
            lab = Lab(project, views, runs)
            counted: dict[str, list[tuple[float, str]]] = {}
            mounted = None
            for ws, state, value, agent_value in plan:
                name = f"ws{ws}"
                if mounted != name:
                    if mounted is not None:
                        project.hibernate("w1")
                    project.mount(name)
                    project.write("w1", "pipeline.yaml", TRAIN_ONLY)
                    project.write("w1", "modules/train.py", "print('train')\n")
                    mounted = name
                ids = runs.run(name, reason={"description": "a random run of the pipeline",
                                             "hypothesis": "it may help or not"},
                               results_spec=SPEC, actor=ACTOR)
                run_id = ids["queued"][0]["stage_run_id"]
                lab.execute(run_id, state=state, metrics={"val_acc": value})
                given_value = 0.0 if agent_value and state in (State.FAILED, State.CRASHED) \
                    else value
                if state in (State.FAILED, State.CRASHED) and not agent_value:
                    runs.finalize(run_id, NO_VALUE, actor=ACTOR)
                else:
                    runs.finalize(run_id, results(given_value), actor=ACTOR)
                if state in (State.SUCCEEDED, State.STOPPED):
                    counted.setdefault(name, []).append((value, run_id))
            if mounted is not None:
                project.hibernate("w1")
            for n in deleted:
                project.service.delete_workspace(f"ws{n}", "retire this workspace now",
                                                 actor=ACTOR)
            views.catch_up()
            bests = {b["workspace"]: b for b in views.dashboard(section="best")["rows"]}
            for n in range(3):
                name = f"ws{n}"
                if n in deleted or name not in counted:
                    assert name not in bests
                    continue
                top = max(v for v, _ in counted[name])
                # ties go to the run finalized last
                expected = [r for v, r in counted[name] if v == top][-1]
                assert bests[name]["run_id"] == expected
                assert bests[name]["value"] == top
    finally:
        project.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_best_results_rank_fifty_workspaces_by_value_and_say_how_many_more(lab):
    """50 workspaces, each with a best: STATE.md shows the 10 best values first (not the first
    10 names), says how many more, and names the project-wide best."""
    lab.project.hibernate("w1")
    values = {f"ws{n:02d}": round(0.5 + ((n * 37) % 50) / 100, 2) for n in range(50)}
    for name, value in values.items():
        lab.project.create(name)
        lab.project.mount(name)
        lab.project.write("w1", "pipeline.yaml", TRAIN_ONLY)
        lab.project.write("w1", "modules/train.py", "print('train')\n")
        lab.runs.run(name, reason={"description": "one run per workspace to rank them",
                                   "hypothesis": f"{name} is the best"},
                     results_spec=SPEC, actor=ACTOR)
        run_id = lab.fresh().history(name)[0][0]["run_id"]
        lab.execute(run_id, metrics={"val_acc": value})
        lab.runs.finalize(run_id, results(value), actor=ACTOR)
        lab.project.hibernate("w1")

    text = lab.fresh().state_md(lambda s, m: False)

    section = text.split("## Best results\n")[1].split("\n\n")[0].splitlines()
    top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    assert section[0].startswith(f"- project best val_acc (maximize): {top[0][1]:.6g} — "
                                 f"{top[0][0]}: ")
    listed = [line.split(":")[0].removeprefix("- ") for line in section[1:11]]
    assert listed == [name for name, _ in top[:10]]
    assert section[11].startswith("- …and 40 more: dashboard(section='best', offset=10)")
