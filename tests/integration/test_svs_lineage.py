"""SVS findings in the lineage graph and the exports, over real runs on a real engine (the
static pre-run review, the monitor with auto_stop, the executor, the pattern follower: all
started by ``start_workers`` as ``quipu serve`` does): a run the review blocks, a run the
monitor stops, a run that fails, a run that is canceled, and a run in another workspace.

The same lab checks the failure-pattern loop's candidates from the blocked and the stopped run,
the OpenLineage FAIL and ABORT events, and ``quipu export prov --workspace``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import prov.model as pm
import pytest
import yaml
from cli_runner import quipu
from openlineage.client.serde import Serde
from test_executor_helpers import ONE_STAGE, SPEC, make_project, write_slot
from test_exports import rebuilt, relations, without_empty_facets, without_nulls
from waiting import wait_until

from quipu.app.bootstrap import Quipu, open_project
from quipu.core.runs.lifecycle import State

pytestmark = pytest.mark.timeout(600)

WHY = "see the findings of runs that went wrong in the lineage"
BLOCKED = "from quipu import sdk\nsdk.runtime_log(undefined_message)\n"
GOES_NAN = dedent("""\
    import time
    from quipu import sdk
    for step in range(3):
        sdk.log_metric("loss", 1.0 / (step + 1), step=step)
    sdk.log_metric("loss", float("nan"), step=3)
    while not sdk.should_stop():
        time.sleep(0.05)
    """)
FAILS = "raise ValueError('bad shape 17')\n"
WAITS = dedent("""\
    import time
    while True:
        time.sleep(0.05)
    """)
WORKS = "from quipu import sdk\nsdk.save_output('result', {'ok': True})\n"
VERDICT = {"ml_outcome": "miss", "notes": "it went wrong, as the lineage tests need"}


class Lab:
    """The project and the id of each run, by what happened to it."""

    def __init__(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": BLOCKED})
        root = q.root
        config = yaml.safe_load((root / "quipu.yaml").read_text())
        config["svs"] = {"reviewer": "static",
                         "monitor": {"auto_stop": True, "tick_seconds": 0.1}}
        (root / "quipu.yaml").write_text(yaml.safe_dump(config))
        q.close()
        self.q: Quipu = open_project(root, actor="agent:test")
        self.q.start_workers()
        self.runs: dict[str, str] = {}
        self.runs["blocked"] = self.start()
        self.wait(self.runs["blocked"], State.BLOCKED)
        self.write(GOES_NAN)
        self.runs["stopped"] = self.start()
        self.wait(self.runs["stopped"], State.STOPPED)
        self.suggested(self.runs["stopped"])
        self.q.finalize_run(self.runs["stopped"], VERDICT)
        self.write(FAILS)
        self.runs["failed"] = self.start()
        self.wait(self.runs["failed"], State.FAILED)
        self.suggested(self.runs["failed"])
        self.q.finalize_run(self.runs["failed"], VERDICT)
        self.write(WAITS)
        self.runs["canceled"] = self.start()
        self.wait(self.runs["canceled"], State.RUNNING)
        self.q.cancel(self.runs["canceled"], "it never ends on its own; cancel it")
        self.wait(self.runs["canceled"], State.CANCELED)
        # Another workspace with a run of its own: a workspace export leaves it out.
        self.q.create_workspace("other", "a second line of work", WHY)
        self.q.mount("other", "w2", WHY)
        slot = self.q.root / "workspaces" / "w2"
        (slot / "pipeline.yaml").write_text(dedent(ONE_STAGE))
        (slot / "modules").mkdir(exist_ok=True)
        (slot / "modules" / "solo.py").write_text(WORKS)
        self.runs["other"] = self.q.run("other", reason=WHY, results_spec=SPEC)[
            "queued"][0]["stage_run_id"]
        self.wait(self.runs["other"], State.SUCCEEDED)
        self.suggested(self.runs["other"])

    def suggested(self, run_id: str) -> None:
        """Wait for the post-run review's suggestion, the last finding a run gets, so every
        count the tests read is final."""
        def done() -> bool:
            self.q.views.catch_up()
            return any(f["signal"] == "outcome_suggested"
                       for f in self.q.views.run_findings(run_id))
        wait_until(done, what=f"the post-run review of {run_id}", timeout=120)

    def write(self, code: str) -> None:
        write_slot(self.q, ONE_STAGE, {"solo": code})

    def start(self) -> str:
        return str(self.q.run("ws", reason=WHY, results_spec=SPEC)["queued"][0]["stage_run_id"])

    def wait(self, run_id: str, target: State) -> None:
        wait_until(lambda: self.q.runs.load_run(run_id).current is target,
                   what=f"run {run_id} is {target.value}", timeout=120)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("svs-lineage"))
    yield made
    made.q.close()


def counts(q: Quipu, run_id: str) -> dict[str, int]:
    """A run's finding counts per severity as ``get_run_svs_findings`` gives them."""
    got = q.views.finding_counts(run_id)
    return {k: n for k, n in got.items() if n and k != "total"}


def node_of(graph: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in graph["nodes"] if n["id"] == node_id)


class TestLineage:
    def test_a_blocked_run_shows_its_findings_and_why_it_was_blocked(self, lab: Lab) -> None:
        run_id = lab.runs["blocked"]
        graph = lab.q.get_lineage(run_id, depth=1)
        shown = node_of(graph, f"run:{run_id}")
        assert shown["findings"] == counts(lab.q, run_id)
        assert shown["findings"]["error"] >= 1
        assert f"{run_id} on ws@v1: blocked: " in shown["label"]
        assert "undefined_message" in shown["label"]
        assert f"{shown['findings']['error']} error" in shown["label"]

    def test_a_stopped_run_shows_who_stopped_it_and_why(self, lab: Lab) -> None:
        run_id = lab.runs["stopped"]
        shown = node_of(lab.q.get_lineage(run_id, depth=1), f"run:{run_id}")
        assert shown["findings"] == counts(lab.q, run_id)
        # finalized since; the label still says who asked it to stop and why
        assert ": finalized (miss), stop requested by monitor: loss went nan" in shown["label"]
        assert shown["label"].endswith("; findings 1 error, 1 info")

    def test_a_run_that_went_well_carries_no_error_counts(self, lab: Lab) -> None:
        other = lab.runs["other"]
        shown = node_of(lab.q.get_lineage(other, depth=1), f"run:{other}")
        assert shown.get("findings", {}) == counts(lab.q, other)
        assert "findings" not in shown or "error" not in shown["findings"]

    def test_the_answer_stays_small(self, lab: Lab) -> None:
        graph = lab.q.get_lineage("ws", direction="downstream", depth=3)
        assert len(json.dumps(graph)) < 8_000, len(json.dumps(graph))


def export_prov(lab: Lab, tmp_path: Path, *args: str) -> pm.ProvDocument:
    out = tmp_path / "prov.json"
    quipu("export", "prov", *args, "-o", str(out), cwd=lab.q.root)
    return pm.ProvDocument.deserialize(content=out.read_text(), format="json")


def attributes(doc: pm.ProvDocument, identifier: str) -> dict[str, Any]:
    [record] = [r for r in doc.get_records(pm.ProvActivity) if str(r.identifier) == identifier]
    return {str(k): v for k, v in record.attributes}


class TestProv:
    def test_run_activities_carry_their_findings_read_back_with_the_prov_package(
            self, lab: Lab, tmp_path: Path) -> None:
        doc = export_prov(lab, tmp_path, "--all")
        blocked = attributes(doc, f"quipu:run/{lab.runs['blocked']}")
        found = counts(lab.q, lab.runs["blocked"])
        assert blocked["quipu:findingsError"] == found["error"]
        assert "undefined_message" in str(blocked["quipu:blocked"])
        assert str(blocked["quipu:state"]) == "blocked"
        stopped = attributes(doc, f"quipu:run/{lab.runs['stopped']}")
        assert str(stopped["quipu:stopRequestedBy"]) == "monitor"
        assert "nan" in str(stopped["quipu:stopReason"]).lower()
        assert stopped["quipu:findingsError"] == counts(lab.q, lab.runs["stopped"])["error"]
        failed = attributes(doc, f"quipu:run/{lab.runs['failed']}")
        assert "quipu:blocked" not in failed and "quipu:stopReason" not in failed

    def test_a_workspace_export_holds_that_workspace_s_records_only(
            self, lab: Lab, tmp_path: Path) -> None:
        doc = export_prov(lab, tmp_path, "--workspace", "other")
        activities = {str(r.identifier) for r in doc.get_records(pm.ProvActivity)}
        assert activities == {f"quipu:run/{lab.runs['other']}"}
        entities = {str(r.identifier) for r in doc.get_records(pm.ProvEntity)}
        assert "quipu:workspace/other" in entities and "quipu:workspace/ws" not in entities
        assert {e for e in entities if e.startswith("quipu:version/")} == {
            f"quipu:version/other/v{n}" for n in versions(lab, "other")}
        result = lab.q.runs.load_run(lab.runs["other"])
        assert result.exit is not None
        made = f"quipu:content/{result.exit.outputs['result']['sha256']}"
        assert (made, f"quipu:run/{lab.runs['other']}", "quipu:result") in relations(
            doc, pm.ProvGeneration)
        everything = export_prov(lab, tmp_path, "--workspace", "ws")
        assert {str(r.identifier) for r in everything.get_records(pm.ProvActivity)} == {
            f"quipu:run/{lab.runs[k]}" for k in ("blocked", "stopped", "failed", "canceled")}


def versions(lab: Lab, workspace: str) -> list[int]:
    return [v["number"] for v in lab.q.manage_versions(workspace, "list")["versions"]]


def exported(lab: Lab, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "ol.ndjson"
    quipu("export", "openlineage", "-o", str(out), cwd=lab.q.root)
    return [json.loads(line) for line in out.read_text().splitlines()]


def validated(event: dict[str, Any]) -> None:
    """The event equals itself rebuilt from the openlineage-python models."""
    model = without_empty_facets(Serde.to_dict(rebuilt(event)))
    for name, facet in event["run"]["facets"].items():
        if name.startswith("quipu_"):
            model["run"]["facets"][name]["_schemaURL"] = facet["_schemaURL"]
    for side in ("inputs", "outputs"):
        for got, sent in zip(model[side], event[side], strict=True):
            for name, facet in sent["facets"].items():
                got["facets"][name]["_schemaURL"] = facet["_schemaURL"]
    assert model == without_nulls(event)


def of_run(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["run"]["facets"]["quipu_version"]["runId"] == run_id]


class TestOpenLineage:
    def test_a_failed_run_sends_fail_and_a_canceled_run_abort(self, lab, tmp_path) -> None:
        events = exported(lab, tmp_path)
        failed = of_run(events, lab.runs["failed"])
        assert [e["eventType"] for e in failed] == ["START", "RUNNING", "FAIL", "OTHER"]
        canceled = of_run(events, lab.runs["canceled"])
        assert [e["eventType"] for e in canceled] == ["START", "RUNNING", "ABORT"]
        stopped = of_run(events, lab.runs["stopped"])
        assert [e["eventType"] for e in stopped] == ["START", "RUNNING", "ABORT", "OTHER"]
        for event in (*failed, *canceled, *stopped):
            validated(event)
        # a failed run's FAIL says when it ended, after its RUNNING
        assert failed[1]["eventTime"] <= failed[2]["eventTime"]

    def test_the_findings_facet_counts_what_was_found_by_the_time_of_each_event(
            self, lab, tmp_path) -> None:
        events = exported(lab, tmp_path)
        blocked = of_run(events, lab.runs["blocked"])
        # blocked: it never ran, the review aborted it; the ABORT says why
        assert [e["eventType"] for e in blocked] == ["START", "ABORT"]
        assert "quipu_findings" not in blocked[0]["run"]["facets"]
        refused = blocked[1]["run"]["facets"]["quipu_findings"]
        assert refused["counts"] == counts(lab.q, lab.runs["blocked"])
        assert "undefined_message" in refused["blocked"]
        validated(blocked[1])
        stopped = of_run(events, lab.runs["stopped"])
        assert "quipu_findings" not in stopped[0]["run"]["facets"]  # nothing found at START
        final = stopped[-1]["run"]["facets"]["quipu_findings"]
        assert final["counts"] == counts(lab.q, lab.runs["stopped"])
        assert final["suggestedOutcome"]
        assert final["stopRequestedBy"] == "monitor" and "nan" in final["stopReason"].lower()
        abort = stopped[2]["run"]["facets"]["quipu_findings"]
        assert abort["counts"]["error"] >= 1  # the NaN finding came before the stop
        for event in stopped:
            validated(event)


def patterns(q: Quipu) -> list[dict[str, Any]]:
    q.views.catch_up()
    return list(q.manage_patterns("list", limit=50)["patterns"])


class TestPatternCandidates:
    """The pattern follower started with the engine turns a run the review really blocked and
    a run the monitor really stopped into candidates (nothing appended by hand)."""

    def test_a_blocked_run_s_review_finding_becomes_a_candidate(self, lab: Lab) -> None:
        run_id = lab.runs["blocked"]
        wait_until(lambda: any(p["signal"] == "undefined_name" for p in patterns(lab.q)),
                   what="a candidate from the blocked run", timeout=60)
        [mine] = [p for p in patterns(lab.q) if p["signal"] == "undefined_name"]
        got = lab.q.manage_patterns("get", pattern_id=mine["pattern_id"])["pattern"]
        assert got["status"] == "candidate" and got["stage"] == "solo"
        assert got["first_run"] == run_id and got["outcomes"] == {"blocked": 1}
        assert "undefined_message" in got["symptom"]

    def test_a_stopped_run_s_monitor_finding_becomes_a_candidate(self, lab: Lab) -> None:
        run_id = lab.runs["stopped"]
        wait_until(lambda: any(p["signal"] == "nan_metric" for p in patterns(lab.q)),
                   what="a candidate from the stopped run", timeout=60)
        [mine] = [p for p in patterns(lab.q) if p["signal"] == "nan_metric"]
        got = lab.q.manage_patterns("get", pattern_id=mine["pattern_id"])["pattern"]
        assert got["status"] == "candidate" and got["stage"] == "solo"
        assert got["first_run"] == run_id and got["outcomes"] == {"stopped": 1}
        assert got["severity"] == "error"
