"""Lineage walks at 10,000 runs: the lineage view's indexed walk against networkx in memory.

    python -m bench.lineage            # 10,000 runs (a minute or so)
    python -m bench.lineage --quick    # 1,000 runs, a smoke run
    python -m bench.lineage --json     # figures as JSON on stdout

A generated history (workspaces with versions and forks; pipeline runs whose stages consume
earlier outputs; a chain of runs each consuming the previous one's output; one registered
source consumed by 5,000 runs, each also given its file's content at launch) is folded by the
lineage projection's own fold (``LineageView.apply``, pages of 2,000 events, indexes built at
the end as a rebuild does) into a SQLite file. Then, in the same
run, each figure is timed both ways:

- quipu: ``lineage_view.walk`` on that file (what ``get_lineage`` runs after resolving its ref:
  the indexed frontier walk, the counts, the labels of the nodes shown);
- baseline: networkx on a ``DiGraph`` of the same edges held in memory
  (``single_source_shortest_path_length`` with the same depth cutoff), nothing else.

Figures: the upstream closure of the last run of a 20-hop-deep chain, and the downstream
fan-out (depth 5) of the source 5,000 runs consumed; p95 over repeated calls, target 50 ms.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx
import sqlite_utils

from bench._util import percentile, report_p95, scratch_dir
from quipu.core.messages import Event
from quipu.core.runs.events import RunExited, RunFinalized, RunLaunched, RunRequested
from quipu.core.sources.events import SourceConsumed, SourceRegistered
from quipu.core.workspaces.events import PipelineRunStarted, VersionSaved, WorkspaceCreated
from quipu.projections._base import Folded, create_indexes
from quipu.projections.lineage_view import LineageView, walk

AT = datetime(2026, 1, 1, tzinfo=UTC)
META: dict[str, Any] = {"actor": "agent:bench", "reason": "a generated history", "at": AT}
CHAIN = 10
"""Runs in the chain: run -> output -> run ... makes 2 hops per run, so 20 hops deep."""


def log(message: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)


def sha(n: int) -> str:
    return f"{n:064x}"


class Generator:
    """A history of ``runs`` stage runs, as events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.n = 0
        self.outputs = 0

    def workspace(self, name: str, fork: tuple[str, int] | None = None) -> None:
        self.events.append(WorkspaceCreated(**META, workspace=name, goal="a generated goal",
                                            forked_from=fork[0] if fork else None,
                                            from_version=fork[1] if fork else None))

    def version(self, ws: str, number: int) -> None:
        self.events.append(VersionSaved(**META, workspace=ws, number=number,
                                        manifest=sha(10**9 + number), parent=number - 1 or None,
                                        file_count=12, total_bytes=4096, message="a save"))

    def source(self, name: str, content: str) -> None:
        """A registered npy file holding ``content``."""
        self.events.append(SourceRegistered(
            **META, source=name, uri=f"data/{name}.npy", path=f"/p/data/{name}.npy",
            sha256=content, size_bytes=10, format="npy", description="a generated source",
            metadata={}, verified=True))

    def run(self, ws: str, version: int, inputs: dict[str, str],
            source: str | None = None) -> tuple[str, str]:
        """One pipeline run of one stage that consumes ``inputs`` (read from ``source`` if
        given) and writes one output."""
        self.n += 1
        run_id, prun = f"stage-{self.n:08d}", f"prun-{self.n:08d}"
        self.outputs += 1
        made = sha(self.outputs)
        self.events += [
            PipelineRunStarted(**META, workspace=ws, pipeline_run_id=prun, version=version,
                               stages=["train"], runs={"train": run_id},
                               detail={"description": "a generated run"}),
            RunRequested(**META, run_id=run_id, pipeline_run_id=prun, workspace=ws,
                         stage="train", version=version, manifest=sha(10**9 + version),
                         entrypoint="modules/train.py", config={"lr": 0.1},
                         config_hash=sha(7), inputs={}, outputs={}, depends_on=[],
                         results_spec={}, detail={}, siblings={"train": run_id}),
            *([SourceConsumed(**META, source=source, run_id=run_id, workspace=ws,
                              sha256=next(iter(inputs.values())))] if source else []),
            RunLaunched(**META, run_id=run_id, worker="w", host="h", pid=1, run_dir="/r",
                        inputs={k: {"sha256": v, "size": 10} for k, v in inputs.items()}),
            RunExited(**META, run_id=run_id, state="succeeded", exit_code=0,
                      outputs={"model": {"sha256": made, "size": 10, "kind": "file"}}),
            RunFinalized(**META, run_id=run_id, workspace=ws, stage="train",
                         ml_outcome="success", results=None, results_auto={},
                         comparison=None),
        ]
        return run_id, made


def generate(runs: int, fan_out: int) -> tuple[list[Event], str, str]:
    """The events, the chain's last run, and the source ``fan_out`` runs consumed."""
    g = Generator()
    g.workspace("base")
    for v in range(1, 11):
        g.version("base", v)
    for w in range(1, 6):
        g.workspace(f"fork{w}", ("base", w))
        for v in range(1, 6):
            g.version(f"fork{w}", v)
    shared = sha(10**12)
    g.source("shared", shared)
    for i in range(fan_out):
        g.run(f"fork{1 + i % 5}", 1 + i % 5, {"data": shared}, source="shared")
    last, previous = "", sha(1)
    for _ in range(CHAIN):
        last, previous = g.run("base", 10, {"data": previous})
    while g.n < runs:  # the rest: runs reading one of the recent outputs
        g.run("base", 1 + g.n % 10, {"data": sha(max(1, g.outputs - g.n % 50))})
    return g.events, last, "source:shared"


def fold(events: list[Event], path: Path) -> sqlite3.Connection:
    """Fold the events as a rebuild of the lineage view does: pages, then indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    view = LineageView()
    view.create(sqlite_utils.Database(conn))
    folded = [Folded(i + 1, e, AT.isoformat()) for i, e in enumerate(events)]
    for start in range(0, len(folded), 2000):
        conn.execute("BEGIN")
        view.apply(conn, folded[start:start + 2000])
        conn.execute("COMMIT")
    create_indexes(sqlite_utils.Database(conn), view)
    return conn


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """p95 in ms of ``repeat`` calls, and the last answer."""
    samples, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return percentile(samples, 95), out


def main(argv: list[str] | None = None) -> int:
    """Generate, fold, time both ways, print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.lineage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 runs, a smoke run")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    args = parser.parse_args(argv)
    runs, fan_out, repeat = (1_000, 500, 10) if args.quick else (10_000, 5_000, 50)
    started = time.perf_counter()
    log(f"generating {runs:,} runs ({fan_out:,} consume one output) ...")
    events, last, shared = generate(runs, fan_out)
    with scratch_dir("lineage-") as tmp:
        t0 = time.perf_counter()
        conn = fold(events, tmp / "views.db")
        fold_seconds = time.perf_counter() - t0
        edges = conn.execute("SELECT src, dst FROM lineage_edges").fetchall()
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_edges_from(edges)
        reverse = graph.reverse(copy=False)
        root, source = f"run:{last}", shared
        up_ms, up = timed(lambda: walk(conn, root, direction="upstream", depth=100), repeat)
        up_nx, up_base = timed(lambda: nx.single_source_shortest_path_length(
            reverse, root, cutoff=100), repeat)
        down_ms, down = timed(lambda: walk(conn, source, direction="downstream", depth=5),
                              repeat)
        down_nx, down_base = timed(lambda: nx.single_source_shortest_path_length(
            graph, source, cutoff=5), repeat)
        nodes = conn.execute("SELECT COUNT(*) FROM lineage_nodes").fetchone()[0]
        conn.close()
    assert up["counts"]["nodes"] == len(up_base), (up["counts"], len(up_base))
    assert down["counts"]["nodes"] == len(down_base), (down["counts"], len(down_base))
    hops = max(n["hops"] for n in up["nodes"])
    figures = [
        {"name": f"upstream closure of a run {hops} hops deep ({up['counts']['nodes']} nodes)",
         "value": up_ms, "baseline": up_nx},
        {"name": f"downstream fan-out of a source used by {fan_out:,} runs, depth 5 "
                 f"({down['counts']['nodes']:,} nodes)", "value": down_ms,
         "baseline": down_nx},
    ]
    for f in figures:
        f.update(unit="ms", baseline_name="networkx in memory (same graph, same cutoff)",
                 target="p95 < 50 ms", passed=f["value"] < 50, ratio=f["value"] / f["baseline"])
    report_p95("bench.lineage", figures, args, time.perf_counter() - started,
               header=f"; {runs:,} runs, {len(events):,} events, {nodes:,} nodes, "
                      f"{len(edges):,} edges, folded in {fold_seconds:.1f} s",
               baseline_label="networkx",
               extra={"runs": runs, "events": len(events), "nodes": nodes, "edges": len(edges),
                      "fold_seconds": round(fold_seconds, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
