"""Run commands on the domain: start, the finalization gate, executor facts, finalize, cancel.

The log is the memory store and the run index is a small fake of the RunIndex port; executor
facts are recorded through the same RunService commands a real executor calls.
"""

from __future__ import annotations

from typing import Any

import pytest
from unit_support import FakeIndex

from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.runs.handlers import InputPaths, RunService
from quipu.core.runs.lifecycle import State
from quipu.core.workspaces.aggregate import Workspace

ACTOR = "agent-1"

SPEC = {"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.9,
        "goal_value": 0.98, "dataset_split": "test", "tolerance": 0.01,
        "context": "test accuracy of the digits classifier"}
PIPELINE = """
stages:
  - name: prep
    defaults: {scale: 1.0}
    outputs:
      features: {type: npy, schema: {shape: [null, 64], dtype: float32}}
  - name: train
    defaults: {lr: 0.1, epochs: 3}
    inputs:
      features: {type: npy, from_stage: prep, schema: {shape: [null, 64], dtype: float32}}
    outputs:
      model: {type: file, schema: null}
"""


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex()


@pytest.fixture
def runs(project: Any, index: FakeIndex) -> RunService:
    counter = iter(range(1, 10_000))
    service = RunService(project.service, index, new_id=lambda: f"{next(counter):04d}")
    project.create("digits")
    project.mount("digits")
    project.write("w1", "pipeline.yaml", PIPELINE)
    project.write("w1", "configs/train.yaml", "lr: 0.05\n")
    project.write("w1", "modules/prep.py", "print('prep')\n")
    project.write("w1", "modules/train.py", "print('train')\n")
    return service


def start(runs: RunService, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("reason", "see whether the baseline pipeline works at all")
    kwargs.setdefault("results_spec", SPEC)
    return runs.run("w1", actor=ACTOR, **kwargs)


def finish(runs: RunService, run_id: str, state: State = State.SUCCEEDED) -> None:
    assert runs.record_claim(run_id, "worker-1")
    runs.record_launch(run_id, worker="worker-1", host="h", pid=123, run_dir="/r", inputs={})
    runs.record_exit(run_id, worker="worker-1", state=state,
                     exit_code=0 if state is State.SUCCEEDED else 1)


def ids(result: dict[str, Any]) -> list[str]:
    return [q["stage_run_id"] for q in result["queued"]]


# --- starting a run ----------------------------------------------------------------------------


class TestRun:
    def test_a_run_saves_the_slot_and_binds_every_stage_to_that_version(self, runs, project):
        result = start(runs)
        assert result["version"] == "v1" and result["stages_queued"] == ["prep", "train"]
        prep, train = (runs.load_run(r) for r in ids(result))
        assert prep.request.version == train.request.version == 1
        assert prep.current is State.QUEUED and train.request.depends_on == [prep.name]

    def test_config_precedence_is_defaults_then_config_file_then_override(self, runs):
        runs.paths = InputPaths(roots=("/data",))
        result = start(runs, stages=["train"], config_override={"epochs": 9},
                       inputs_override={"features": "/data/features.npy"})
        train = runs.load_run(ids(result)[0])
        assert train.request.config == {"lr": 0.05, "epochs": 9}
        assert train.request.inputs["features"]["kind"] == "path"
        assert train.request.inputs["features"]["via"] == "override"

    def test_an_input_override_outside_the_data_roots_is_refused_and_nothing_is_written(
            self, runs, project):
        runs.paths = InputPaths(roots=("/data",))
        head = project.store.head()
        with pytest.raises(InvalidInput) as caught:
            start(runs, stages=["train"], inputs_override={"features": "/etc/passwd"})
        assert caught.value.code == "path_outside_roots"
        assert "/data" in caught.value.message and "allow_any_path" in caught.value.hint
        assert project.store.head() == head
        # A path that only looks inside a root is judged after normalisation.
        with pytest.raises(InvalidInput):
            start(runs, stages=["train"], inputs_override={"features": "/data/../etc/passwd"})

    def test_a_project_that_allows_any_path_takes_one(self, runs):
        runs.paths = InputPaths(allow_any=True)
        result = start(runs, stages=["train"], inputs_override={"features": "/etc/hosts"})
        train = runs.load_run(ids(result)[0])
        assert train.request.inputs["features"]["path"] == "/etc/hosts"

    def test_a_flat_override_for_several_stages_is_an_error_not_silently_dropped(self, runs,
                                                                                  project):
        head = project.store.head()
        with pytest.raises(InvalidInput) as err:
            start(runs, config_override={"lr": 0.5})
        assert err.value.code == "override_needs_stage_keys"
        assert project.store.head() == head

    def test_an_input_comes_from_the_newest_good_run_when_its_stage_is_not_run(self, runs, index):
        index.outputs[("digits", "prep", "features")] = "stage-earlier"
        train = runs.load_run(ids(start(runs, stages=["train"]))[0])
        assert train.request.inputs["features"]["run_id"] == "stage-earlier"
        assert train.request.inputs["features"]["via"] == "newest succeeded run"
        assert train.request.depends_on == []

    def test_an_input_nobody_produced_is_refused_with_a_hint(self, runs, project):
        head = project.store.head()
        with pytest.raises(NotFound) as err:
            start(runs, stages=["train"])
        assert err.value.code == "input_unresolved" and "prep" in err.value.hint
        assert project.store.head() == head

    def test_results_spec_is_required(self, runs):
        with pytest.raises(InvalidInput) as err:
            start(runs, results_spec=None)
        assert err.value.code == "results_spec_missing"

    def test_an_invalid_results_spec_reports_every_problem(self, runs):
        with pytest.raises(InvalidInput) as err:
            start(runs, results_spec={"primary_metric": "acc", "direction": "up"})
        assert err.value.code == "invalid_results_spec"
        assert "direction" in err.value.message and "context" in err.value.message

    def test_a_dry_run_reports_stages_inputs_and_problems_and_writes_nothing(self, runs, project):
        head = project.store.head()
        preview = start(runs, results_spec=None, dry_run=True)
        assert preview["valid"] and preview["stages_to_run"] == ["prep", "train"]
        assert preview["inputs"]["train"]["features"]["kind"] == "upstream"
        assert preview["warnings"]  # the model output has no schema
        assert project.store.head() == head

    def test_a_structured_reason_keeps_the_hypothesis(self, runs):
        result = start(runs, reason={"description": "baseline pipeline first try",
                                     "hypothesis": "logistic regression reaches 90%"})
        run = runs.load_run(ids(result)[0])
        assert run.request.detail["hypothesis"] == "logistic regression reaches 90%"

    def test_a_pipeline_with_a_cycle_is_refused_before_anything_is_written(self, runs, project):
        project.write("w1", "pipeline.yaml", PIPELINE.replace(
            "    defaults: {scale: 1.0}\n",
            "    defaults: {scale: 1.0}\n    inputs:\n      m: {type: file, from_stage: train, "
            "signal: model, schema: null}\n"))
        head = project.store.head()
        with pytest.raises(InvalidInput) as err:
            start(runs)
        assert "cycle" in err.value.message.lower()
        assert project.store.head() == head


# --- the gate ----------------------------------------------------------------------------------


class TestFinalizationGate:
    def test_run_is_refused_while_a_finished_run_awaits_finalization(self, runs, project):
        prep, train = ids(start(runs))
        finish(runs, prep)
        finish(runs, train)
        with pytest.raises(Conflict) as err:
            start(runs)
        assert err.value.code == "finalization_required"
        assert prep in err.value.message and "finalize_run" in err.value.hint

    def test_a_failed_upstream_cancels_its_downstream_and_only_the_failure_holds_the_gate(
            self, runs, project):
        prep, train = ids(start(runs))
        finish(runs, prep, State.FAILED)
        assert runs.load_run(train).current is State.CANCELED
        assert set(project.service.load(Workspace, "digits").awaiting) == {prep}

    def test_a_canceled_run_does_not_block_the_next_run(self, runs):
        prep, train = ids(start(runs))
        runs.cancel(prep, "wrong data split, start over", actor=ACTOR)
        assert runs.load_run(train).current is State.CANCELED
        start(runs)  # not refused

    def test_finalizing_every_ended_run_opens_the_gate_again(self, runs):
        prep, train = ids(start(runs))
        finish(runs, prep)
        finish(runs, train)
        runs.finalize(prep, {"ml_outcome": "unknown", "notes": "preprocessing has no metric"},
                      actor=ACTOR)
        runs.finalize(train, {"ml_outcome": "miss", "notes": "no accuracy metric was logged"},
                      actor=ACTOR)
        start(runs)

    def test_a_lost_run_holds_the_gate_and_adoption_releases_it(self, runs, project):
        prep, _train = ids(start(runs))
        runs.record_claim(prep, "w")
        runs.record_launch(prep, worker="w", host="h", pid=9, run_dir="/r", inputs={})
        runs.record_lost(prep, actor="supervisor", why="no heartbeat for 600 s")
        assert prep in project.service.load(Workspace, "digits").awaiting
        runs.record_adopted(prep, worker="w2", pid=9)
        assert runs.load_run(prep).current is State.RUNNING
        assert prep not in project.service.load(Workspace, "digits").awaiting


# --- executor facts ----------------------------------------------------------------------------


class TestExecutorFacts:
    def test_exactly_one_executor_wins_a_claim(self, runs):
        prep, _ = ids(start(runs))
        assert runs.record_claim(prep, "a") is True
        assert runs.record_claim(prep, "b") is False
        assert runs.record_claim(prep, "a") is True  # re-delivered: still ours, no new event

    def test_a_late_exit_after_the_run_was_lost_is_ignored(self, runs, project):
        prep, _ = ids(start(runs))
        runs.record_claim(prep, "w")
        runs.record_launch(prep, worker="w", host="h", pid=9, run_dir="/r", inputs={})
        runs.record_lost(prep, actor="supervisor", why="no heartbeat")
        head = project.store.head()
        runs.record_exit(prep, worker="w", state=State.SUCCEEDED, exit_code=0)
        assert runs.load_run(prep).current is State.LOST and project.store.head() == head

    def test_recording_the_same_metrics_twice_appends_once(self, runs, project):
        prep, _ = ids(start(runs))
        summary = {"loss": {"min": 0.1, "max": 1.0, "last": 0.1, "count": 3}}
        runs.record_metrics(prep, actor="ingest", series=None, points=3, summaries=summary,
                            complete=False)
        head = project.store.head()
        runs.record_metrics(prep, actor="ingest", series=None, points=3, summaries=summary,
                            complete=False)
        assert project.store.head() == head


# --- finalize ----------------------------------------------------------------------------------


class TestFinalize:
    def _with_accuracy(self, runs: RunService, value: float) -> str:
        _prep, train = ids(start(runs))
        finish(runs, _prep)
        runs.record_claim(train, "w")
        runs.record_launch(train, worker="w", host="h", pid=5, run_dir="/r", inputs={})
        runs.record_metrics(train, actor="ingest", series=None, points=1,
                            summaries={"accuracy": {"last": value, "count": 1}}, complete=True)
        runs.record_exit(train, worker="w", state=State.SUCCEEDED, exit_code=0)
        runs.finalize(_prep, {"ml_outcome": "unknown", "notes": "preprocessing only, no metric"},
                      actor=ACTOR)
        return train

    def results(self, value: float, outcome: str = "partial") -> dict[str, Any]:
        return {"primary_metric": "accuracy", "direction": "maximize", "value": value,
                "dataset_split": "test", "ml_outcome": outcome,
                "notes": "above the minimum, below the goal"}

    def test_finalize_records_auto_results_and_compares_with_previous_and_best(self, runs,
                                                                               index):
        train = self._with_accuracy(runs, 0.93)
        index.previous, index.best_run = ("stage-prev", 0.91), ("stage-best", 0.95)
        out = runs.finalize(train, self.results(0.93), actor=ACTOR)
        assert out["results_auto"]["value"] == 0.93
        assert out["comparison"]["vs_previous"]["improved"] is True
        assert out["comparison"]["regression_alert"] is True  # 0.02 below best > tolerance

    def test_a_stage_that_logged_the_metric_needs_full_results(self, runs):
        train = self._with_accuracy(runs, 0.93)
        with pytest.raises(InvalidInput) as err:
            runs.finalize(train, {"ml_outcome": "partial", "notes": "it worked fairly well"},
                          actor=ACTOR)
        assert err.value.code == "invalid_results"

    def test_finalizing_a_running_run_is_refused(self, runs):
        prep, _ = ids(start(runs))
        runs.record_claim(prep, "w")
        runs.record_launch(prep, worker="w", host="h", pid=5, run_dir="/r", inputs={})
        with pytest.raises(Conflict) as err:
            runs.finalize(prep, {"ml_outcome": "unknown", "notes": "too early to say anything"},
                          actor=ACTOR)
        assert err.value.code == "run_not_ended"

    def test_finalizing_twice_is_refused(self, runs):
        train = self._with_accuracy(runs, 0.95)
        runs.finalize(train, self.results(0.95), actor=ACTOR)
        with pytest.raises(Conflict) as err:
            runs.finalize(train, self.results(0.95), actor=ACTOR)
        assert err.value.code == "already_finalized"

    def test_results_must_name_the_spec_metric(self, runs):
        train = self._with_accuracy(runs, 0.95)
        bad = {**self.results(0.95), "primary_metric": "f1"}
        with pytest.raises(InvalidInput):
            runs.finalize(train, bad, actor=ACTOR)

    def test_an_abandoned_ended_run_is_finalized_as_unknown_by_its_deadline(self, runs,
                                                                           project):
        prep, _ = ids(start(runs))
        finish(runs, prep, State.FAILED)
        runs.record_deadline(prep, actor="supervisor")
        run = runs.load_run(prep)
        assert run.current is State.FINALIZED and run.finalized.ml_outcome == "unknown"
        assert prep not in project.service.load(Workspace, "digits").awaiting


class TestCancel:
    def test_cancel_reports_the_previous_state(self, runs):
        prep, _ = ids(start(runs))
        out = runs.cancel(prep, "the data split was wrong", actor=ACTOR)
        assert (out["previous_state"], out["state"]) == ("queued", "canceled")

    def test_an_ended_run_cannot_be_canceled(self, runs):
        prep, _ = ids(start(runs))
        finish(runs, prep)
        with pytest.raises(Conflict) as err:
            runs.cancel(prep, "too late to cancel this one", actor=ACTOR)
        assert err.value.code == "run_ended"
