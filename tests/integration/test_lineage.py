"""The lineage graph through the facade and the CLI, over real runs: real stage processes, a
real SQLite log and views, content hashes the stages really wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import quipu
from test_executor_helpers import THREE_STAGES, drive, ended, executor, make_project, start

from quipu.app.bootstrap import Quipu
from quipu.core.errors import InvalidInput, NotFound

MAKE = """\
    import numpy as np
    from quipu import sdk
    sdk.save_output("numbers", np.arange(5, dtype=np.int64))
    """
DOUBLE = """\
    from quipu import sdk
    numbers = sdk.load_input("numbers")
    sdk.save_output("doubled", numbers * 2)
    table = sdk.get_output_path("table")
    (table / "a.txt").write_text("alpha")
    sdk.save_output("table", table)
    """
REPORT = """\
    from quipu import sdk
    doubled = sdk.load_input("doubled")
    sdk.save_output("summary", {"total": int(doubled.sum())})
    """
VERDICT = {"ml_outcome": "unknown", "notes": "only the lineage of the run matters here"}
REASON = "record lineage for the lineage tests"


class Lab:
    """A project with two pipeline runs: all three stages, then report alone (it reads the
    first pipeline run's double output)."""

    def __init__(self, tmp_path: Path) -> None:
        self.q: Quipu = make_project(tmp_path, THREE_STAGES,
                                     {"make": MAKE, "double": DOUBLE, "report": REPORT})
        self.first = self.cycle()
        self.second = self.cycle(stages=["report"])

    def cycle(self, **kw: Any) -> dict[str, str]:
        ids = start(self.q, **kw)
        drive(executor(self.q), ended(self.q, *ids.values()))
        for run_id in ids.values():
            self.q.finalize_run(run_id, VERDICT)
        return ids

    def output(self, run_id: str, name: str) -> str:
        run = self.q.runs.load_run(run_id)
        assert run.exit is not None
        return str(run.exit.outputs[name]["sha256"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("lineage"))
    yield made
    made.q.close()


def ids(graph: dict[str, Any]) -> set[str]:
    return {n["id"] for n in graph["nodes"]}


class TestGetLineage:
    def test_upstream_of_a_run_reaches_its_producers_their_version_and_workspace(self, lab):
        report = lab.second["report"]
        graph = lab.q.get_lineage(report, depth=20)
        doubled = lab.output(lab.first["double"], "doubled")
        numbers = lab.output(lab.first["make"], "numbers")
        assert {f"run:{report}", f"output:{doubled}", f"run:{lab.first['double']}",
                f"output:{numbers}", f"run:{lab.first['make']}", "version:ws@v1",
                "workspace:ws"} <= ids(graph)
        assert [f"output:{doubled}", "consumed", f"run:{report}", "doubled"] in graph["edges"]
        assert [f"run:{lab.first['double']}", "produced", f"output:{doubled}",
                "doubled"] in graph["edges"]
        # the other runs of the first pipeline run used the same data but are not upstream
        assert f"run:{lab.first['report']}" not in ids(graph)
        assert not graph["truncated"] and not graph["more_beyond_depth"]
        hops = {n["id"]: n["hops"] for n in graph["nodes"]}
        assert hops[f"run:{report}"] == 0 and hops[f"output:{doubled}"] == 1

    def test_which_runs_used_this_data_is_one_call_from_a_hash_prefix(self, lab):
        doubled = lab.output(lab.first["double"], "doubled")
        graph = lab.q.get_lineage(doubled[:10], direction="downstream", depth=1,
                                  kinds=["run"])
        assert graph["root"] == f"output:{doubled}"
        assert ids(graph) - {graph["root"]} == {f"run:{lab.first['report']}",
                                                 f"run:{lab.second['report']}"}
        labels = " ".join(n["label"] for n in graph["nodes"])
        assert "report run" in labels and "finalized (unknown)" in labels

    def test_versions_workspaces_and_tags_are_refs(self, lab):
        lab.q.manage_versions("ws", "tag", version="v1", tag="golden", reason=REASON)
        lab.q.tag_record(lab.second["report"], "best-report", REASON)
        assert lab.q.get_lineage("ws@v1", direction="downstream")["root"] == "version:ws@v1"
        assert lab.q.get_lineage("@golden")["root"] == "version:ws@v1"
        # tag_record tags the run and the version it ran; the run is the more specific.
        assert lab.q.get_lineage("ws@best-report")["root"] == f"run:{lab.second['report']}"
        down = lab.q.get_lineage("ws", direction="downstream", depth=2)
        assert f"pipeline_run:{lab.q.views.run_record(lab.first['make'])['pipeline_run_id']}" \
            in ids(down)

    def test_a_fork_points_back_at_the_version_it_came_from(self, lab):
        lab.q.create_workspace("fork", "try the same on a copy", REASON, from_workspace="ws",
                               from_version="v1")
        up = lab.q.get_lineage("fork", depth=3)
        assert ["version:ws@v1", "forked-from", "workspace:fork"] in up["edges"]
        assert "forked from ws@v1" in up["nodes"][0]["label"]

    def test_a_ref_that_matches_nothing_is_refused_with_a_suggestion_and_writes_nothing(
            self, lab):
        head = lab.q.store.head()
        with pytest.raises(NotFound) as err:
            lab.q.get_lineage("wss")
        assert err.value.code == "unknown_ref" and "'ws'" in err.value.hint
        with pytest.raises(NotFound):
            lab.q.get_lineage(lab.second["report"] + "x")
        with pytest.raises(InvalidInput) as bad:
            lab.q.get_lineage("ws", direction="sideways")
        assert bad.value.code == "invalid_direction"
        assert lab.q.store.head() == head

    def test_the_answer_stays_small_however_much_is_reached(self, lab):
        graph = lab.q.get_lineage("ws", direction="downstream", depth=100, limit=5)
        assert len(graph["nodes"]) == 5 and graph["truncated"]
        assert graph["counts"]["nodes"] > 5
        assert len(json.dumps(graph)) < 4_000
        full = lab.q.get_lineage("ws", direction="both", depth=100)
        assert len(json.dumps(full)) < 40_000


class TestInspectRunProvenance:
    def test_the_upstream_closure_names_versions_configs_and_producers(self, lab):
        report = lab.second["report"]
        up = lab.q.inspect_run(report, include=["provenance"])["provenance"]["upstream"]
        assert [v["version"] for v in up["versions"]] == ["ws@v1"]
        assert up["versions"][0]["manifest"] == lab.q.runs.load_run(report).request.manifest
        runs = {r["run_id"]: r for r in up["runs"]}
        assert set(runs) == {lab.first["double"], lab.first["make"]}
        assert runs[lab.first["make"]]["config_hash"]
        produced = {i["produced_by"] for i in up["inputs"]}
        assert produced == {lab.first["double"], lab.first["make"]}
        assert not up["truncated"] and up["counts"]["runs"] == 2


class TestCli:
    def test_lineage_prints_text_json_dot_and_mermaid(self, lab):
        report = lab.second["report"]
        root = lab.q.root
        text = quipu("lineage", report, "--depth", "20", cwd=root).stdout
        assert text.splitlines()[0] == f"upstream of run:{report} (20 hops)"
        assert "report run" in text and "-[consumed doubled]->" in text
        data = json.loads(quipu("lineage", report, "--format", "json", cwd=root).stdout)
        assert data["root"] == f"run:{report}"
        dot = quipu("lineage", report, "--format", "dot", cwd=root).stdout
        assert dot.startswith("digraph lineage {") and '"consumed"' in dot
        mermaid = quipu("lineage", report, "--format", "mermaid", cwd=root).stdout
        assert mermaid.startswith("flowchart LR") and "-->|consumed|" in mermaid

    def test_an_unknown_ref_exits_2_with_the_code_and_a_hint(self, lab):
        proc = quipu("lineage", "wss", cwd=lab.q.root, check=False)
        assert proc.returncode == 2
        assert "unknown_ref" in proc.stderr and "did you mean 'ws'" in proc.stderr
