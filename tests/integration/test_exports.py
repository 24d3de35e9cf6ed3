"""PROV-JSON and OpenLineage exports of a real log (real runs, one reading a registered source,
an output promoted to a source), read back with the ``prov`` package and validated with the
``openlineage-python`` models; ``--until`` gives the past."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import prov.model as pm
import pytest
from cli_runner import quipu
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import parent_run
from openlineage.client.generated.base import DatasetFacet, RunFacet
from openlineage.client.serde import Serde
from test_lineage import REASON, Lab

from quipu.app.bootstrap import open_log
from quipu.core.errors import NotFound


class SourcedLab(Lab):
    """The lineage lab, plus a third pipeline run whose report reads a registered source."""

    third: dict[str, str]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourcedLab]:
    made = SourcedLab(tmp_path_factory.mktemp("exports"))
    made.q.create_workspace("fork", "try the same on a copy", "fork to export the fork edge",
                           from_workspace="ws", from_version="v1")
    # A registered source read by a third report run, and the first double output promoted.
    (made.q.root / "data").mkdir()
    digits = made.q.root / "data" / "digits.npy"
    np.save(digits, np.arange(5, dtype=np.int64))
    made.q.register_source("digits", "data/digits.npy", "five integers to report on", REASON,
                           tensor("five integers to report on", digits.stat().st_size))
    made.third = made.cycle(stages=["report"], inputs_override={"doubled": "digits"})
    run = made.q.runs.load_run(made.first["double"])
    assert run.exit is not None
    size = int(run.exit.outputs["doubled"]["size"])
    made.q.promote_artifact(made.first["double"], "doubled", "doubled-set", REASON,
                            tensor("the doubled integers, promoted", size))
    yield made
    made.q.close()


def tensor(description: str, size: int) -> dict[str, Any]:
    return {"schema_version": 1, "description": description,
            "source": {"format": "npy", "size_bytes": size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": [5], "dtype": "int64",
                                        "feature_names": {"kind": "sequence"}}}}}


def export_prov(lab: Lab, tmp_path: Path, *args: str) -> pm.ProvDocument:
    out = tmp_path / "prov.json"
    quipu("export", "prov", *args, "-o", str(out), cwd=lab.q.root)
    return pm.ProvDocument.deserialize(content=out.read_text(), format="json")


def relations(doc: pm.ProvDocument, cls: type[pm.ProvRecord]) -> set[tuple[str, ...]]:
    """Each relation of a type as the strings of its first two arguments (and its role)."""
    out = set()
    for r in doc.get_records(cls):
        role = [str(v) for k, v in r.attributes if str(k) == "prov:role"]
        out.add((str(r.args[0]), str(r.args[1]), *role))
    return out


def run_id(name: str) -> str:
    return f"quipu:run/{name}"


class TestProv:
    def test_the_prov_package_reads_back_every_relation(self, lab, tmp_path):
        doc = export_prov(lab, tmp_path, "--all")
        first, second = lab.first, lab.second
        doubled = f"quipu:content/{lab.output(first['double'], 'doubled')}"
        summary = f"quipu:content/{lab.output(second['report'], 'summary')}"
        activities = {str(r.identifier) for r in doc.get_records(pm.ProvActivity)}
        assert activities == {run_id(r) for r in (*first.values(), *second.values(),
                                                  *lab.third.values())}
        entities = {str(r.identifier) for r in doc.get_records(pm.ProvEntity)}
        assert {doubled, summary, "quipu:version/ws/v1", "quipu:workspace/fork"} <= entities
        agents = {str(r.identifier) for r in doc.get_records(pm.ProvAgent)}
        assert "quipu:agent/test%3A1" in agents  # the worker that executed the runs
        used = relations(doc, pm.ProvUsage)
        assert (run_id(second["report"]), doubled, "quipu:doubled") in used
        assert (run_id(second["report"]), "quipu:version/ws/v1", "quipu:code") in used
        assert (doubled, run_id(first["double"]), "quipu:doubled") in relations(
            doc, pm.ProvGeneration)
        derived = relations(doc, pm.ProvDerivation)
        assert (summary, doubled) in derived
        assert ("quipu:workspace/fork", "quipu:version/ws/v1") in derived
        assert (run_id(second["report"]), run_id(first["double"])) in relations(
            doc, pm.ProvCommunication)
        # Sources: entities, used by the run that read one, a promoted one derived from the
        # output it was promoted from, a registered one specialised by its file's content.
        digits, promoted = "quipu:source/digits", "quipu:source/doubled-set"
        assert {digits, promoted} <= entities
        assert (run_id(lab.third["report"]), digits, "quipu:doubled") in used
        assert (promoted, doubled) in derived
        content = f"quipu:content/{lab.q.manage_sources('get', name='digits')['sha256']}"
        assert (content, digits) in relations(doc, pm.ProvSpecialization)
        associated = relations(doc, pm.ProvAssociation)
        assert any(a == run_id(second["report"]) and role == "quipu:requester"
                   for a, _, role in associated)

    def test_a_run_export_holds_its_upstream_closure_only(self, lab, tmp_path):
        doc = export_prov(lab, tmp_path, "--run", lab.second["report"])
        activities = {str(r.identifier) for r in doc.get_records(pm.ProvActivity)}
        assert activities == {run_id(lab.second["report"]), run_id(lab.first["double"]),
                              run_id(lab.first["make"])}
        third = export_prov(lab, tmp_path, "--run", lab.third["report"])
        assert "quipu:source/digits" in {str(r.identifier)
                                         for r in third.get_records(pm.ProvEntity)}

    def test_until_gives_the_graph_as_it_was(self, lab, tmp_path):
        with open_log(lab.q.root) as log:
            requested = [r.position for r in log.store.read(limit=10_000, types=["RunRequested"])]
        before_second = requested[3] - 1  # three stages of the first pipeline run, then report
        doc = export_prov(lab, tmp_path, "--until", str(before_second))
        activities = {str(r.identifier) for r in doc.get_records(pm.ProvActivity)}
        assert activities == {run_id(r) for r in lab.first.values()}

    def test_an_unknown_run_is_refused_with_a_suggestion(self, lab):
        with open_log(lab.q.root) as log, pytest.raises(NotFound) as err:
            log.export_prov(run=lab.second["report"][:-1])
        assert err.value.code == "unknown_run" and lab.second["report"] in err.value.hint
        proc = quipu("export", "prov", "--run", "x", "--workspace", "ws", cwd=lab.q.root,
                     check=False)
        assert proc.returncode == 2 and "export_scope" in proc.stderr


def test_the_cli_walks_from_a_source(lab):
    """``quipu lineage`` takes a source like any other ref (this lab is the one with sources)."""
    proc = quipu("lineage", "source:digits", "--direction", "downstream", "--kind", "run",
                 "--depth", "1", "--format", "json", cwd=lab.q.root)
    graph = json.loads(proc.stdout)
    assert {n["id"] for n in graph["nodes"]} == {"source:digits", f"run:{lab.third['report']}"}
    dot = quipu("lineage", "doubled-set", "--format", "dot", cwd=lab.q.root).stdout
    assert "promoted-from" in dot and "source doubled-set" in dot


def rebuilt(event: dict[str, Any]) -> RunEvent:
    """The event built again from the openlineage-python models (their validators run)."""
    facets: dict[str, Any] = {}
    for name, facet in event["run"]["facets"].items():
        fields = {k: v for k, v in facet.items() if not k.startswith("_")}
        if name == "parent":
            facets[name] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=fields["run"]["runId"]),
                job=parent_run.Job(**fields["job"]), producer=facet["_producer"])
        else:
            facets[name] = RunFacet(producer=facet["_producer"]).with_additional_properties(
                **fields)
    return RunEvent(
        eventType=RunState(event["eventType"]), eventTime=event["eventTime"],
        producer=event["producer"], run=Run(runId=event["run"]["runId"], facets=facets),
        job=Job(**event["job"]),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"],
                             facets=dataset_facets(d)) for d in event["inputs"]],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"],
                               facets=dataset_facets(d)) for d in event["outputs"]])


def dataset_facets(dataset: dict[str, Any]) -> dict[str, Any]:
    return {name: DatasetFacet(producer=facet["_producer"]).with_additional_properties(
        **{k: v for k, v in facet.items() if not k.startswith("_")})
        for name, facet in dataset.get("facets", {}).items()}


def without_empty_facets(value: Any) -> Any:
    """The models' dict without the empty ``facets: {}`` they add where the export has none."""
    if isinstance(value, dict):
        return {k: without_empty_facets(v) for k, v in value.items()
                if not (k in ("facets", "inputFacets", "outputFacets") and v == {})}
    if isinstance(value, list):
        return [without_empty_facets(v) for v in value]
    return value


def without_nulls(value: Any) -> Any:
    """What the models' serialiser keeps: every null value dropped."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


class TestOpenLineage:
    def test_every_event_is_a_valid_run_event_and_the_transitions_are_all_there(self, lab,
                                                                              tmp_path):
        out = tmp_path / "ol.ndjson"
        quipu("export", "openlineage", "-o", str(out), cwd=lab.q.root)
        events = [json.loads(line) for line in out.read_text().splitlines()]
        for event in events:
            model = without_empty_facets(Serde.to_dict(rebuilt(event)))
            # a custom facet rebuilt as a generic RunFacet carries RunFacet's schema URL
            for name, facet in event["run"]["facets"].items():
                assert facet["_producer"] and facet["_schemaURL"].startswith("https://")
                if name.startswith("quipu_"):
                    model["run"]["facets"][name]["_schemaURL"] = facet["_schemaURL"]
            for side in ("inputs", "outputs"):
                for got, sent in zip(model[side], event[side], strict=True):
                    for name, facet in sent["facets"].items():
                        got["facets"][name]["_schemaURL"] = facet["_schemaURL"]
            assert model == without_nulls(event)
        by_run: dict[str, list[str]] = {}
        for event in events:
            by_run.setdefault(event["run"]["facets"]["quipu_version"]["runId"], []).append(
                event["eventType"])
        assert set(by_run) == {*lab.first.values(), *lab.second.values(),
                               *lab.third.values()}
        assert all(kinds == ["START", "RUNNING", "COMPLETE", "OTHER"]
                   for kinds in by_run.values())
        report = [e for e in events
                  if e["run"]["facets"]["quipu_version"]["runId"] == lab.second["report"]]
        doubled = lab.output(lab.first["double"], "doubled")
        assert f"sha256:{doubled}" in {d["name"] for d in report[1]["inputs"]}
        summary = lab.output(lab.second["report"], "summary")
        assert [d["name"] for d in report[2]["outputs"]] == [f"sha256:{summary}"]
        assert report[3]["run"]["facets"]["quipu_results"]["mlOutcome"] == "unknown"
        assert report[0]["run"]["facets"]["quipu_version"]["version"] == 1
        # The run that read a source lists it as an input dataset from its START on.
        third = [e for e in events
                 if e["run"]["facets"]["quipu_version"]["runId"] == lab.third["report"]]
        digits = lab.q.manage_sources("get", name="digits")["sha256"]
        for event in third:
            (source,) = [d for d in event["inputs"] if d["name"] == "source:digits"]
            assert source["facets"]["quipu_source"]["sha256"] == digits
            assert source["facets"]["quipu_source"]["input"] == "doubled"
            assert f"sha256:{digits}" not in {d["name"] for d in event["inputs"]}

    def test_until_drops_what_came_later(self, lab):
        with open_log(lab.q.root) as log:
            everything = log.export_openlineage()
            first = log.export_openlineage(until=log.store.read(
                limit=10_000, types=["RunLaunched"])[0].position)
        assert first == everything[:len(first)]
        assert [e["eventType"] for e in first][-1] == "RUNNING"
