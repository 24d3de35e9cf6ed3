"""The lineage view's closures equal a brute-force closure over the events themselves, for random
histories of forks, versions, registered sources (local and remote), pipeline runs consuming
earlier outputs and sources, and outputs promoted to sources, however the events are split into
pages."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlite_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.messages import Event
from quipu.core.reviews.events import FindingsRecorded, OutcomeSuggested, StopRequested
from quipu.core.runs.events import (
    CheckpointSaved,
    RunClaimed,
    RunExited,
    RunFinalized,
    RunLaunched,
    RunQueued,
    RunRequested,
)
from quipu.core.sources.events import (
    ArtifactPromoted,
    SourceConsumed,
    SourceRegistered,
    SourceRetired,
)
from quipu.core.workspaces.events import PipelineRunStarted, VersionSaved, WorkspaceCreated
from quipu.projections._base import Folded
from quipu.projections.lineage_view import (
    PROVENANCE_FANIN,
    LineageView,
    provenance,
    resolve,
    walk,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
META: dict[str, Any] = {"actor": "agent-1", "reason": "a generated history", "at": AT}


def sha(n: int) -> str:
    return f"{n:064x}"


class History:
    """Builds a consistent random event history and remembers its edges the plain way."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.edges: set[tuple[str, str]] = set()  # (upstream, downstream)
        self.versions: list[tuple[str, int]] = []
        self.workspaces: dict[str, int] = {}
        self.outputs: list[str] = []
        self.runs: list[str] = []
        self.sources: dict[str, str | None] = {}  # name -> sha256 (None: a remote source)
        self.producers: dict[str, str] = {}  # output sha -> run id
        self.checkpoints: dict[str, list[str]] = {}  # run id -> the checkpoints it saved
        self.findings: dict[str, dict[str, int]] = {}  # run id -> severity -> count
        self.n = 0

    def add(self, e: Event) -> None:
        self.events.append(e)

    def workspace(self, fork: int | None) -> None:
        name = f"ws{len(self.workspaces)}"
        parent = self.versions[fork % len(self.versions)] if fork is not None and \
            self.versions else None
        self.add(WorkspaceCreated(**META, workspace=name, goal="a goal",
                                  forked_from=parent[0] if parent else None,
                                  from_version=parent[1] if parent else None))
        self.workspaces[name] = 0
        if parent:
            self.edges.add((f"version:{parent[0]}@v{parent[1]}", f"workspace:{name}"))

    def version(self, pick: int) -> None:
        if not self.workspaces:
            return
        ws = sorted(self.workspaces)[pick % len(self.workspaces)]
        self.workspaces[ws] += 1
        number = self.workspaces[ws]
        self.add(VersionSaved(**META, workspace=ws, number=number, manifest=sha(10_000 + number),
                              parent=number - 1 or None, file_count=1, total_bytes=1,
                              message="save"))
        self.versions.append((ws, number))
        self.edges.add((f"workspace:{ws}", f"version:{ws}@v{number}"))

    def source(self, remote: bool, reuse: int | None) -> None:
        """Register a source: remote (no content), or a file whose content is new or is the
        same bytes as an earlier output (one content node, reached two ways)."""
        name = f"src{len(self.sources)}"
        content = (None if remote else self.outputs[reuse % len(self.outputs)]
                   if reuse is not None and self.outputs else sha(900_000 + len(self.sources)))
        self.add(SourceRegistered(**META, source=name, uri=f"data/{name}.npy",
                                  path=None if remote else f"/p/data/{name}.npy",
                                  sha256=content, size_bytes=8, format="npy",
                                  description="a registered source", metadata={},
                                  verified=not remote))
        self.sources[name] = content
        if content is not None:
            self.edges.add((f"source:{name}", f"output:{content}"))

    def promote(self, pick: int, retire: bool) -> None:
        """Promote an earlier run's output to a new source (then maybe retire it)."""
        if not self.producers:
            return
        content = sorted(self.producers)[pick % len(self.producers)]
        name = f"src{len(self.sources)}"
        self.add(ArtifactPromoted(**META, source=name, run_id=self.producers[content],
                                  output="out", workspace="ws0", stage="s0", version=1,
                                  manifest=sha(1), inputs={}, sha256=content, size_bytes=1,
                                  format="npy", description="a promoted output", metadata={}))
        self.sources[name] = content  # a run consuming it is given its producer's output
        self.edges.add((f"output:{content}", f"source:{name}"))
        if retire:
            self.add(SourceRetired(**META, source=name))

    def pipeline(self, pick: int, stages: int, inputs: list[int], launch: bool,
                 sources: Sequence[int] = (), resume: int | None = None) -> None:
        """Start stages on a version; each launched one consumes earlier outputs and sources,
        writes an output and saves a checkpoint (some two with the same content, at two
        steps); with ``resume``, the first stage resumes from an earlier run's checkpoints."""
        if not self.versions:
            return
        ws, number = self.versions[pick % len(self.versions)]
        self.n += 1
        prun = f"prun-{self.n}"
        run_ids = {f"s{i}": f"stage-{self.n}-{i}" for i in range(stages)}
        self.add(PipelineRunStarted(**META, workspace=ws, pipeline_run_id=prun, version=number,
                                    stages=list(run_ids), runs=run_ids, detail={}))
        version = f"version:{ws}@v{number}"
        self.edges.add((version, f"pipeline_run:{prun}"))
        for stage, run_id in run_ids.items():
            given = {f"in{j}": self.outputs[k % len(self.outputs)]
                     for j, k in enumerate(inputs) if self.outputs}
            resumed = None
            run = f"run:{run_id}"
            if resume is not None and self.checkpoints and stage == "s0":
                source = sorted(self.checkpoints)[resume % len(self.checkpoints)]
                resumed = {"run_id": source, "stage": "s0", "checkpoints": [
                    {"name": "ck", "step": step, "sha256": h, "size": 1, "manifest": sha(3),
                     "files": 1} for step, h in enumerate(self.checkpoints[source])]}
                self.edges.add((f"run:{source}", run))
                self.edges |= {(f"checkpoint:{h}", run) for h in self.checkpoints[source]}
            self.add(RunRequested(**META, run_id=run_id, pipeline_run_id=prun, workspace=ws,
                                  stage=stage, version=number, manifest=sha(1), entrypoint="m",
                                  config={}, config_hash=sha(2), inputs={}, outputs={},
                                  depends_on=[], results_spec={}, detail={}, siblings=run_ids,
                                  resume_from=resumed))
            self.runs.append(run_id)
            self.edges |= {(version, run), (f"pipeline_run:{prun}", run)}
            names = sorted(self.sources)
            read = sorted({names[k % len(names)] for k in sources}) if names else []
            for j, name in enumerate(read):
                self.add(SourceConsumed(**META, source=name, run_id=run_id, workspace=ws,
                                        sha256=self.sources[name]))
                self.edges.add((f"source:{name}", run))
                content = self.sources[name]
                if content is not None:
                    given[f"src{j}"] = content
            if not launch:
                continue
            self.add(RunQueued(**META, run_id=run_id, review="skipped"))
            self.add(RunClaimed(**META, run_id=run_id, worker="w"))
            self.add(RunLaunched(**META, run_id=run_id, worker="w", host="h", pid=1,
                                 run_dir="/r", inputs={n: {"sha256": h, "size": 1}
                                                       for n, h in given.items()}))
            self.edges |= {(f"output:{h}", run) for h in given.values()}
            made = sha(len(self.outputs) + 1)
            self.add(RunExited(**META, run_id=run_id, state="succeeded", exit_code=0,
                               outputs={"out": {"sha256": made, "size": 1}}))
            self.outputs.append(made)
            self.producers[made] = run_id
            self.edges.add((run, f"output:{made}"))
            # every third run saves the content an earlier run saved: one node, two savers
            saved = sha(700_000 + (self.n - 1 if self.n % 3 == 0 else self.n))
            for step in (0, 1):
                self.add(CheckpointSaved(**META, run_id=run_id, name="ck", step=step,
                                         sha256=saved, size=1, manifest=sha(3), files=1,
                                         path=f".quipu/checkpoints/ck/step_{step}"))
            self.checkpoints[run_id] = [saved, saved]
            self.edges.add((run, f"checkpoint:{saved}"))
            self.add(RunFinalized(**META, run_id=run_id, workspace=ws, stage=stage,
                                  ml_outcome="success", results=None, results_auto={},
                                  comparison=None))

    def findings_on(self, pick: int, severities: list[str], omitted: int, suggest: bool,
                    stop: bool) -> None:
        """Findings about an earlier run (FindingsRecorded; maybe a suggested outcome, one
        ``info`` more; maybe a stop request, no finding), counted the plain way."""
        if not self.runs:
            return
        run_id = self.runs[pick % len(self.runs)]
        counts = self.findings.setdefault(run_id, {})
        self.add(FindingsRecorded(**META, run_id=run_id, phase="statistics", source="stats",
                                  findings=[{"signal": "s", "severity": sev, "message": "m"}
                                            for sev in severities], omitted=omitted))
        for sev in severities:
            counts[sev] = counts.get(sev, 0) + 1
        if omitted:
            counts["omitted"] = counts.get("omitted", 0) + omitted
        if suggest:
            self.add(OutcomeSuggested(**META, run_id=run_id, outcome="miss", evidence=["e"],
                                      reviewers=["post_run"]))
            counts["info"] = counts.get("info", 0) + 1
        if stop:
            self.add(StopRequested(**META, run_id=run_id, requested_by="agent"))

    def closure(self, root: str, upstream: bool, depth: int) -> dict[str, int]:
        seen = {root: 0}
        frontier = [root]
        for hop in range(1, depth + 1):
            nxt = []
            for a, b in sorted(self.edges):
                near, far = (b, a) if upstream else (a, b)
                if near in frontier and far not in seen:
                    seen[far] = hop
                    nxt.append(far)
            frontier = nxt
        return seen


steps = st.lists(st.one_of(
    st.tuples(st.just("workspace"), st.none() | st.integers(0, 20)),
    st.tuples(st.just("version"), st.integers(0, 20)),
    st.tuples(st.just("pipeline"), st.integers(0, 20), st.integers(1, 3),
              st.lists(st.integers(0, 50), max_size=3), st.booleans(),
              st.lists(st.integers(0, 50), max_size=2), st.none() | st.integers(0, 50)),
    st.tuples(st.just("source"), st.booleans(), st.none() | st.integers(0, 50)),
    st.tuples(st.just("promote"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("findings_on"), st.integers(0, 50),
              st.lists(st.sampled_from(["error", "warning", "info"]), max_size=4),
              st.integers(0, 2), st.booleans(), st.booleans()),
), min_size=1, max_size=30)


def build(plan: list[tuple[Any, ...]]) -> History:
    h = History()
    h.workspace(None)
    h.version(0)
    for step in plan:
        getattr(h, step[0])(*step[1:])
    return h


def fold(events: list[Event], pages: list[int]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    view = LineageView()
    view.create(sqlite_utils.Database(conn))
    # The tag tables resolve() reads belong to other views; an empty pair is enough here.
    conn.execute("CREATE TABLE version_tags (workspace TEXT, tag TEXT, number INTEGER)")
    conn.execute("CREATE TABLE run_tags (run_id TEXT, tag TEXT, workspace TEXT, position INT)")
    conn.execute("CREATE TABLE versions (workspace TEXT, number INTEGER)")
    folded = [Folded(i + 1, e, AT.isoformat()) for i, e in enumerate(events)
              if e.TYPE in LineageView.types]
    start = 0
    for size in [*pages, len(folded)]:
        if start >= len(folded):
            break
        view.apply(conn, folded[start:start + max(size, 1)])
        start += max(size, 1)
    return conn


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, pages=st.lists(st.integers(1, 7), max_size=10), pick=st.integers(0, 1000),
       depth=st.integers(1, 12))
def test_closures_equal_a_brute_force_walk_of_the_events(plan, pages, pick, depth):
    h = build(plan)
    conn = fold(h.events, pages)
    nodes = sorted({n for e in h.edges for n in e})
    root = nodes[pick % len(nodes)]
    for direction, upstream in (("upstream", True), ("downstream", False)):
        expected = h.closure(root, upstream, depth)
        got = walk(conn, root, direction=direction, depth=depth, limit=500)
        assert {n["id"]: n["hops"] for n in got["nodes"]} == expected
        assert got["counts"]["nodes"] == len(expected)
        assert not got["truncated"]
        # every edge shown is a real edge between shown nodes, drawn upstream -> downstream
        assert all((s, d) in h.edges for s, _, d, *_ in got["edges"])
    both = walk(conn, root, direction="both", depth=depth, limit=500)
    assert {n["id"] for n in both["nodes"]} == (set(h.closure(root, True, depth))
                                                | set(h.closure(root, False, depth)))


@settings(max_examples=30, deadline=None)
@given(plan=steps, pages=st.lists(st.integers(1, 7), max_size=10))
def test_folding_in_pages_equals_folding_at_once(plan, pages):
    h = build(plan)
    dump = "SELECT * FROM lineage_nodes ORDER BY node"
    edges = "SELECT src, dst, kind, name FROM lineage_edges ORDER BY 1, 2, 3, 4"
    a, b = fold(h.events, pages), fold(h.events, [])
    assert a.execute(dump).fetchall() == b.execute(dump).fetchall()
    assert a.execute(edges).fetchall() == b.execute(edges).fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, pages=st.lists(st.integers(1, 7), max_size=10))
def test_a_run_s_finding_counts_equal_the_findings_recorded_about_it(plan, pages):
    """In the view however it is paged, in a walk's node, and in the exports' fold."""
    from quipu.exports._history import fold_events
    from quipu.projections.lineage_view import findings_of, node

    h = build(plan)
    conn = fold(h.events, pages)
    history = fold_events(list(enumerate(h.events, 1)))
    for run_id in h.runs:
        expected = {k: n for k, n in h.findings.get(run_id, {}).items() if n}
        attrs = node(conn, f"run:{run_id}") or {}
        assert findings_of(attrs) == expected
        assert (history.runs[run_id].svs().get("findings") or {}) == expected
        shown = walk(conn, f"run:{run_id}", depth=1)["nodes"][0]
        assert shown.get("findings", {}) == expected
    if h.runs:  # the provenance closure lists each upstream run's counts too
        for entry in provenance(conn, h.runs[-1])["runs"]:
            want = {k: n for k, n in h.findings.get(entry["run_id"], {}).items() if n}
            assert entry.get("findings", {}) == want


@pytest.fixture
def graph() -> Iterator[tuple[History, sqlite3.Connection]]:
    h = build([("workspace", 0), ("version", 1), ("pipeline", 0, 2, [], True),
               ("pipeline", 1, 1, [0, 1], True), ("pipeline", 1, 1, [2], True)])
    conn = fold(h.events, [])
    yield h, conn
    conn.close()


class TestRefs:
    def test_every_kind_of_ref_resolves(self, graph):
        h, conn = graph
        assert resolve(conn, "ws0") == "workspace:ws0"
        assert resolve(conn, "ws1@v1") == "version:ws1@v1"
        assert resolve(conn, h.runs[0]) == f"run:{h.runs[0]}"
        assert resolve(conn, "prun-1") == "pipeline_run:prun-1"
        assert resolve(conn, f"sha256:{h.outputs[0]}") == f"output:{h.outputs[0]}"
        assert resolve(conn, h.outputs[0].upper()) == f"output:{h.outputs[0]}"

    def test_a_ref_that_matches_nothing_says_what_it_might_have_meant(self, graph):
        _, conn = graph
        with pytest.raises(NotFound) as err:
            resolve(conn, "ws00")
        assert err.value.code == "unknown_ref" and "'ws0'" in err.value.hint

    def test_a_hash_prefix_shared_by_several_outputs_is_ambiguous(self, graph):
        _, conn = graph
        with pytest.raises(InvalidInput) as err:
            resolve(conn, "0000")
        assert err.value.code == "ambiguous_ref"

    def test_a_walk_shows_at_most_its_limit_and_says_so(self, graph):
        _, conn = graph
        out = walk(conn, "workspace:ws0", direction="downstream", depth=10, limit=3)
        assert len(out["nodes"]) == 3 and out["truncated"]
        assert out["counts"]["nodes"] > 3 and "nearest" in out["hint"]

    def test_kinds_restrict_the_walk(self, graph):
        h, conn = graph
        out = walk(conn, f"output:{h.outputs[0]}", direction="downstream", depth=1,
                   kinds=["run"])
        assert {n["id"].split(":")[0] for n in out["nodes"][1:]} == {"run"}
        with pytest.raises(InvalidInput) as err:
            walk(conn, "workspace:ws0", kinds=["runs"])
        assert err.value.code == "invalid_kinds" and "'run'" in err.value.hint

    def test_provenance_reaches_back_to_the_producers_and_their_versions(self, graph):
        h, conn = graph
        last = h.runs[-1]
        prov = provenance(conn, last)
        runs = {r["run_id"] for r in prov["runs"]}
        assert h.runs[2] in runs and h.runs[0] in runs  # producer, and its own producer
        assert all(v["manifest"] for v in prov["versions"])
        assert any(i["produced_by"] == h.runs[2] for i in prov["inputs"])


def test_an_answer_at_the_default_limit_stays_within_its_budget():
    """Hundreds of runs on one output: the default answer shows 60 nodes in < 30,000 chars."""
    import json

    h = build([("pipeline", 0, 1, [], True)]
              + [("pipeline", 0, 3, [0, 0, 0], True) for _ in range(100)])
    conn = fold(h.events, [])
    for ref, direction in ((f"output:{h.outputs[0]}", "downstream"), ("workspace:ws0", "both"),
                           (f"run:{h.runs[-1]}", "both")):
        out = walk(conn, ref, direction=direction, depth=100)
        assert len(out["nodes"]) <= 60
        assert len(json.dumps(out)) < 30_000, (ref, len(json.dumps(out)))
    assert walk(conn, f"output:{h.outputs[0]}", direction="downstream",
                depth=100)["counts"]["nodes"] > 300


@pytest.fixture
def sourced() -> Iterator[tuple[History, sqlite3.Connection]]:
    """src0 (a file) read by prun-1's run; its output promoted to src1, which prun-2's run
    reads; src2 a remote source; a workspace named like a source."""
    h = build([("source", False, None), ("pipeline", 0, 1, [], True, [0]),
               ("promote", 0, False), ("pipeline", 0, 1, [], True, [1]),
               ("source", True, None)])
    h.add(WorkspaceCreated(**META, workspace="src2", goal="named like a source",
                           forked_from=None, from_version=None))
    conn = fold(h.events, [])
    yield h, conn
    conn.close()


class TestSources:
    def test_which_runs_used_this_data_is_one_walk(self, sourced):
        h, conn = sourced
        out = walk(conn, resolve(conn, "src0"), direction="downstream", depth=1, kinds=["run"])
        assert [n["id"] for n in out["nodes"]] == ["source:src0", f"run:{h.runs[0]}"]
        assert out["edges"] == [["source:src0", "consumed", f"run:{h.runs[0]}"]]
        assert "source src0 (npy, 8 bytes, active)" in out["nodes"][0]["label"]

    def test_which_data_did_this_result_come_from_reaches_both_sources(self, sourced):
        h, conn = sourced
        out = walk(conn, f"run:{h.runs[1]}", direction="upstream", depth=10)
        ids = {n["id"] for n in out["nodes"]}
        assert {"source:src1", "source:src0", f"run:{h.runs[0]}"} <= ids
        kinds = {e[1] for e in out["edges"]}
        assert {"consumed", "promoted-from", "content", "produced"} <= kinds
        prov = provenance(conn, h.runs[1])
        assert {s["name"] for s in prov["sources"]} == {"src0", "src1"}
        promoted = next(s for s in prov["sources"] if s["name"] == "src1")
        assert promoted["promoted_from"] == f"{h.runs[0]}.out"
        assert promoted["used_by"] == [h.runs[1]]

    def test_a_name_both_a_workspace_and_a_source_is_ambiguous(self, sourced):
        _, conn = sourced
        with pytest.raises(InvalidInput) as err:
            resolve(conn, "src2")
        assert err.value.code == "ambiguous_ref" and "source:src2" in err.value.message
        assert resolve(conn, "source:src2") == "source:src2"
        with pytest.raises(NotFound) as missing:
            resolve(conn, "scr0")
        assert "'src0'" in missing.value.hint


@pytest.mark.parametrize("producers", [5, PROVENANCE_FANIN, 400])
def test_provenance_follows_a_bounded_number_of_producers_of_one_content(producers):
    """Identical content made by many runs is one node with an edge from each producer: the
    provenance closure follows at most PROVENANCE_FANIN of them and says it was truncated,
    so inspect_run's cost does not grow with how often that content was made."""
    conn = fold([], [])
    edges = [("workspace:ws", "version:ws@v1", "version", ""),
             ("output:" + sha(7), "run:stage-consumer", "consumed", "features")]
    nodes = [("run:stage-consumer", "run", {"stage": "train", "workspace": "ws", "version": 1}),
             ("output:" + sha(7), "output", {"name": "features", "size": 80}),
             ("version:ws@v1", "version", {"manifest": sha(1)}),
             ("workspace:ws", "workspace", {})]
    for i in range(producers):
        run = f"run:stage-p{i:04d}"
        nodes.append((run, "run", {"stage": "prep", "workspace": "ws", "version": 1}))
        edges += [(run, "output:" + sha(7), "produced", "features"),
                  ("version:ws@v1", run, "ran-on", "")]
    conn.executemany("INSERT INTO lineage_nodes VALUES (?, ?, ?, 1)",
                     [(n, k, json.dumps(a)) for n, k, a in nodes])
    conn.executemany("INSERT INTO lineage_edges VALUES (?, ?, ?, ?, 1)", edges)
    prov = provenance(conn, "stage-consumer")
    assert prov["counts"]["runs"] == min(producers, PROVENANCE_FANIN)
    assert prov["truncated"] is (producers > PROVENANCE_FANIN)
    assert prov["counts"]["versions"] == 1 and prov["counts"]["workspaces"] == 1
    # get_lineage still walks every producer
    walked = walk(conn, "run:stage-consumer", direction="upstream", depth=2, limit=500)
    assert walked["counts"]["nodes"] == 2 + producers
