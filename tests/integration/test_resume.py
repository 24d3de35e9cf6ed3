"""A run resumes from another run's checkpoints: ``run(..., resume_from=RUN_ID)`` fixes the
source run's checkpoints in the request, the executor restores them, the stage loads one and
continues, and the record (lineage, inspect_run, the exports) shows the edge. Real SQLite log,
real blob store, real stage processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prov.model as pm
import pytest
from test_executor_helpers import SPEC, drive, ended, executor, make_project, start
from test_exports import rebuilt

from quipu.app.bootstrap import Quipu
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.log import decode
from quipu.core.runs.events import CheckpointSaved, RunRequested
from quipu.core.runs.lifecycle import State
from quipu.core.workspaces.versions import Manifest
from quipu.exports import openlineage_events, prov_document, read_history

TWO_STAGES = """\
    stages:
      - name: train
        outputs:
          result: {type: json, schema: null}
      - name: other
        outputs:
          result: {type: json, schema: null}
    """

# Starts fresh (step 0) unless it can load step 1 of "weights": then it continues from step 2,
# saving other content than the run it resumed from (values + 100), so the two runs'
# checkpoints are different nodes of the graph.
TRAIN = """\
    import json
    import os

    import numpy as np
    from quipu import sdk

    stage = json.loads(open(os.environ["QUIPU_STAGE_CONFIG"]).read())
    source = (stage.get("resume_from") or {}).get("run_id")
    try:
        weights = sdk.load_checkpoint("weights", step=1)
        start, offset = int(weights[0]) + 1, 100
    except sdk.CheckpointNotFound:
        start, offset = 0, 0
    answer = {"start": start, "source": source}
    if source:
        answer["given"] = [[c.name, c.step] for c in sdk.list_checkpoints(run_id=source)]
        answer["explicit"] = int(sdk.load_checkpoint("weights", step=0, run_id=source)[0])
        answer["state"] = sdk.load_checkpoint("state")
        try:
            sdk.load_checkpoint("weights", run_id="stage-000000000000")
        except sdk.CheckpointNotFound as exc:
            answer["other_run"] = str(exc)
    for step in range(start, start + 3):
        sdk.save_checkpoint("weights", np.full(4, step + offset, dtype=np.int64), step=step)
        sdk.log_metric("loss", 1.0 / (step + 1), step=step)
    if not source:
        sdk.save_checkpoint("state", {"epoch": 2})
    sdk.save_output("result", answer)
    """

OTHER = """\
    from quipu import sdk

    sdk.log_metric("loss", 0.5)
    sdk.save_output("result", {"other": True})
    """

VERDICT = {"primary_metric": "loss", "direction": "minimize", "value": 0.3,
           "dataset_split": "val", "ml_outcome": "partial",
           "notes": "the resume tests read this verdict"}
REASON = "continue training from the checkpoint another run saved"


def events(q: Quipu) -> list[Any]:
    return [r.event for r in map(decode, q.store.read())]


def cycle(q: Quipu, **kw: Any) -> dict[str, Any]:
    """Start, execute and finalize one pipeline run; return its answer."""
    started = q.run("ws", reason=REASON, results_spec=SPEC, **kw)
    ids = [item["stage_run_id"] for item in started["queued"]]
    drive(executor(q), ended(q, *ids))
    q.finalize_run(started["pipeline_run_id"], VERDICT)
    return started


def result_of(q: Quipu, run_id: str) -> dict[str, Any]:
    run = q.runs.load_run(run_id)
    assert run.exit is not None and run.exit.state == "succeeded", run.exit
    return dict(json.loads(q.blobs.get_bytes(run.exit.outputs["result"]["sha256"])))


class Lab:
    """Run A (train, saves weights at steps 0-2 and a 'state'), then run B resumed from A."""

    def __init__(self, tmp_path: Path) -> None:
        self.q = make_project(tmp_path, TWO_STAGES, {"train": TRAIN, "other": OTHER})
        self.a = cycle(self.q, stages=["train"])["queued"][0]["stage_run_id"]
        self.b_answer = cycle(self.q, stages=["train"], resume_from=self.a)
        self.b = self.b_answer["queued"][0]["stage_run_id"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("resume"))
    yield made
    made.q.close()


class TestAResumedRun:
    def test_the_stage_loads_the_source_runs_checkpoint_and_continues(self, lab: Lab) -> None:
        first, second = result_of(lab.q, lab.a), result_of(lab.q, lab.b)
        assert first == {"start": 0, "source": None}
        assert second["start"] == 2 and second["source"] == lab.a
        assert second["given"] == [["state", None], ["weights", 0], ["weights", 1],
                                   ["weights", 2]]
        assert second["explicit"] == 0 and second["state"] == {"epoch": 2}

    def test_another_run_id_is_refused_with_the_hint_to_resume_from_it(self, lab: Lab) -> None:
        said = result_of(lab.q, lab.b)["other_run"]
        assert "stage-000000000000" in said and "resume_from='stage-000000000000'" in said

    def test_the_request_fixes_the_source_runs_checkpoints(self, lab: Lab) -> None:
        saved = {(e.name, e.step): e for e in events(lab.q)
                 if isinstance(e, CheckpointSaved) and e.run_id == lab.a}
        request = next(e for e in events(lab.q)
                       if isinstance(e, RunRequested) and e.run_id == lab.b)
        assert request.resume_from is not None and request.resume_from["run_id"] == lab.a
        assert request.resume_from["stage"] == "train"
        assert [(c["name"], c["step"], c["sha256"], c["manifest"])
                for c in request.resume_from["checkpoints"]] == [
            (n, s, saved[(n, s)].sha256, saved[(n, s)].manifest)
            for n, s in [("state", None), ("weights", 0), ("weights", 1), ("weights", 2)]]
        assert lab.b_answer["resume_from"]["checkpoint_count"] == 4

    def test_restored_checkpoints_are_not_recorded_as_the_new_runs_own(self, lab: Lab) -> None:
        own = [(e.name, e.step) for e in events(lab.q)
               if isinstance(e, CheckpointSaved) and e.run_id == lab.b]
        assert own == [("weights", 2), ("weights", 3), ("weights", 4)]
        run_dir = Path(lab.q.runs.load_run(lab.b).run_dir or "")
        restored = run_dir / ".quipu" / "resume" / lab.a / "weights" / "step_1"
        assert restored.is_dir()
        stage_json = json.loads((run_dir / ".quipu" / "stage.json").read_text())
        assert stage_json["resume_from"]["run_id"] == lab.a

    def test_inspect_run_shows_where_it_resumed_from(self, lab: Lab) -> None:
        shown = lab.q.inspect_run(lab.b, include=["provenance"])
        assert shown["resumed_from"]["run_id"] == lab.a
        assert shown["resumed_from"]["checkpoint_count"] == 4
        upstream = shown["provenance"]["upstream"]
        assert lab.a in {r["run_id"] for r in upstream["runs"]}
        assert {(c["name"], c.get("step"), c["saved_by"]) for c in upstream["checkpoints"]} == {
            ("state", None, lab.a), ("weights", 0, lab.a), ("weights", 1, lab.a),
            ("weights", 2, lab.a)}
        assert all(c["given_to"] for c in upstream["checkpoints"])
        assert "resumed_from" not in lab.q.inspect_run(lab.a, include=["provenance"])

    def test_lineage_upstream_of_the_resumed_run_reaches_the_source_run(self, lab: Lab) -> None:
        graph = lab.q.get_lineage(lab.b, direction="upstream", depth=2, limit=200)
        edges = {tuple(e[:3]) for e in graph["edges"]}
        assert (f"run:{lab.a}", "resumed-from", f"run:{lab.b}") in edges
        given = {e[0] for e in graph["edges"] if e[1] == "consumed" and e[2] == f"run:{lab.b}"
                 and e[0].startswith("checkpoint:")}
        assert len(given) == 4
        labels = {n["id"]: n["label"] for n in graph["nodes"]}
        assert any(f"{lab.a}/weights/step 1" in labels[c] for c in given)
        down = lab.q.get_lineage(lab.a, direction="downstream", depth=1, limit=200)
        saved = [e for e in down["edges"] if e[1] == "saved"]
        assert len(saved) == 4 and (f"run:{lab.a}", "resumed-from", f"run:{lab.b}") in {
            tuple(e[:3]) for e in down["edges"]}

    def test_prov_has_the_checkpoints_and_the_resumed_from_relation(self, lab: Lab) -> None:
        exported = prov_document(read_history(lab.q.store))
        doc = pm.ProvDocument.deserialize(content=json.dumps(exported), format="json")
        a, b = f"quipu:run/{lab.a}", f"quipu:run/{lab.b}"
        informed = {(str(r.args[0]), str(r.args[1])) for r in doc.get_records(pm.ProvCommunication)}
        assert (b, a) in informed
        checkpoints = {str(r.identifier) for r in doc.get_records(pm.ProvEntity)
                       if str(r.identifier).startswith("quipu:checkpoint/")}
        assert len(checkpoints) == 7  # A's four, B's three
        generated = {(str(r.args[0]), str(r.args[1]))
                     for r in doc.get_records(pm.ProvGeneration)}
        used = {(str(r.args[0]), str(r.args[1])) for r in doc.get_records(pm.ProvUsage)}
        from_a = {c for c, run in generated if run == a and c in checkpoints}
        assert len(from_a) == 4 and {(b, c) for c in from_a} <= used

    def test_openlineage_inputs_of_the_resumed_run_are_its_checkpoints(self, lab: Lab) -> None:
        sent = [e for e in openlineage_events(read_history(lab.q.store))
                if e["run"]["facets"]["quipu_version"]["runId"] == lab.b]
        names = {d["name"] for d in sent[0]["inputs"]}
        assert sent[0]["eventType"] == "START" and len(names) == 4
        assert all(n.startswith("checkpoint:") for n in names)
        for event in sent:  # the openlineage-python models accept each event
            rebuilt(event)


class TestResumeFromIsRefused:
    def refused(self, q: Quipu, **kw: Any) -> Exception:
        head = q.store.head()
        with pytest.raises((InvalidInput, NotFound)) as caught:
            q.run("ws", reason=REASON, results_spec=SPEC, **kw)
        assert q.store.head() == head  # nothing written
        return caught.value

    def test_an_unknown_run_with_did_you_mean(self, lab: Lab) -> None:
        typo = lab.a[:-1] + ("0" if lab.a[-1] != "0" else "1")
        error = self.refused(lab.q, stages=["train"], resume_from=typo)
        assert error.code == "unknown_run"  # type: ignore[attr-defined]
        assert f"did you mean {lab.a!r}" in error.hint  # type: ignore[attr-defined]

    def test_a_run_that_saved_no_checkpoint(self, lab: Lab) -> None:
        other = cycle(lab.q, stages=["other"])["queued"][0]["stage_run_id"]
        error = self.refused(lab.q, stages=["other"], resume_from=other)
        assert error.code == "resume_without_checkpoints"  # type: ignore[attr-defined]
        assert other in str(error)

    def test_a_run_of_a_stage_not_being_run(self, lab: Lab) -> None:
        error = self.refused(lab.q, stages=["other"], resume_from=lab.a)
        assert error.code == "resume_stage_mismatch"  # type: ignore[attr-defined]
        assert "'train'" in str(error) and "other" in str(error)
        assert "stages=" in error.hint  # type: ignore[attr-defined]

    def test_the_dry_run_shows_what_would_be_restored_and_writes_nothing(self,
                                                                          lab: Lab) -> None:
        head = lab.q.store.head()
        preview = lab.q.run("ws", reason=REASON, results_spec=None, stages=["train"],
                            resume_from=lab.a, dry_run=True)
        assert lab.q.store.head() == head
        shown = preview["resume_from"]
        assert shown["run_id"] == lab.a and shown["stage"] == "train"
        assert shown["restored_to"] == f".quipu/resume/{lab.a}/"
        assert [(c["name"], c["step"]) for c in shown["checkpoints"]] == [
            ("state", None), ("weights", 0), ("weights", 1), ("weights", 2)]
        assert len(json.dumps(preview)) < 6000


def test_a_damaged_checkpoint_blob_fails_the_launch_naming_it(tmp_path: Path) -> None:
    q = make_project(tmp_path, TWO_STAGES, {"train": TRAIN, "other": OTHER})
    try:
        source = cycle(q, stages=["train"])["queued"][0]["stage_run_id"]
        point = next(e for e in events(q) if isinstance(e, CheckpointSaved)
                     and e.run_id == source and e.step == 1)
        manifest = Manifest.from_bytes(q.blobs.get_bytes(point.manifest))
        digest = manifest.files["data.npy"].sha256
        blob = q.root / ".quipu" / "blobs" / digest[:2] / digest[2:]
        blob.chmod(0o644)
        blob.write_bytes(b"not the checkpoint")
        resumed = start(q, stages=["train"], resume_from=source)["train"]
        drive(executor(q), ended(q, resumed))
        run = q.runs.load_run(resumed)
        assert run.current is State.FAILED and run.run_dir is None
        failure = q.inspect_run(resumed, include=[])["dashboard"]["error"]
        assert "checkpoint 'weights' step_1" in failure and source in failure
        assert failure.startswith("IntegrityFailure") and digest[:12] in failure
    finally:
        q.close()



STOPPABLE = """\
    import time
    from quipu import sdk

    sdk.save_checkpoint("weights", b"early", step=0)
    while not sdk.should_stop():
        time.sleep(0.05)
    """


def test_resuming_from_a_run_in_flight_fixes_what_it_recorded_so_far_and_warns(
        tmp_path: Path) -> None:
    """A run still going may be resumed from: the request fixes the checkpoints recorded so
    far, and the answer warns that more may come."""
    q = make_project(tmp_path, TWO_STAGES, {"train": STOPPABLE, "other": OTHER})
    try:
        source = start(q, stages=["train"])["train"]
        ex = executor(q)
        drive(ex, lambda: any(isinstance(e, CheckpointSaved) and e.run_id == source
                              for e in events(q)),
              what="the running stage's checkpoint is recorded")
        assert q.runs.load_run(source).current is State.RUNNING
        head = q.store.head()
        preview = q.run("ws", reason=REASON, results_spec=None, stages=["train"],
                        resume_from=source, dry_run=True)
        assert q.store.head() == head
        [warning] = [w for w in preview["warnings"] if w["code"] == "resume_from_in_flight"]
        assert source in warning["message"] and "1 checkpoint" in warning["message"]
        assert [(c["name"], c["step"]) for c in preview["resume_from"]["checkpoints"]] == [
            ("weights", 0)]
        q.cancel(source, "the in-flight resume test is done with this run")
        drive(ex, ended(q, source))
    finally:
        q.close()
