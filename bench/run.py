"""Benchmark running stages and starting Quipu, against plain ``python``.

Each figure sits next to a baseline measured in the same run on the same machine:

* **launch**: from the moment ``Quipu.run()`` is called (and from the moment it returns) to the
  stage's first line, which writes ``time.time()`` before importing anything else. Baseline:
  ``subprocess.Popen([python, script])`` to the same first line (bare interpreter start-up).
* **pipeline**: the wall time of ``run(wait=True)`` of a trivial three-stage pipeline (a -> b ->
  c, passing a small array through the SDK), against running the same three scripts one after
  the other with ``python``, each in a run directory laid out as the executor lays it out.
* **start-up**: the wall time of ``quipu status`` in a subprocess, and the time from spawning
  ``quipu serve`` to its answer to the MCP ``initialize`` request (the MCP client over stdio),
  both on the project the runs above left behind. Baseline: ``python -c pass``.

::

    python -m bench.run                 # ~1-2 minutes
    python -m bench.run --quick         # a smoke run, 3 repetitions
    python -m bench.run --json > run.json

Speed is never asserted in tests; the results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._util import SCRATCH, machine, scratch_dir

__all__ = ["Figure", "main", "render"]

PROBE = textwrap.dedent('''\
    import time
    _STARTED = time.time()  # the very first thing the stage does
    import os
    from pathlib import Path

    Path(os.environ["QUIPU_RUN_DIR"], "outputs", "started").write_text(repr(_STARTED))
''')

STAGE_A = textwrap.dedent('''\
    import numpy as np

    from quipu import sdk

    sdk.save_output("x", np.arange(1000, dtype=np.int64))
    sdk.finish()
''')

STAGE_B = textwrap.dedent('''\
    from quipu import sdk

    sdk.save_output("y", sdk.load_input("x") * 2)
    sdk.finish()
''')

STAGE_C = textwrap.dedent('''\
    from quipu import sdk

    sdk.log_metric("total", float(sdk.load_input("y").sum()))
    sdk.finish()
''')

_ARRAY = "{type: npy, schema: {shape: [null], dtype: int64}}"
PIPELINE = textwrap.dedent(f'''\
    stages:
      - name: probe
        entrypoint: modules/probe.py
      - name: a
        outputs: {{x: {_ARRAY}}}
      - name: b
        inputs:
          x: {{type: npy, from_stage: a, schema: {{shape: [null], dtype: int64}}}}
        outputs: {{y: {_ARRAY}}}
      - name: c
        inputs:
          y: {{type: npy, from_stage: b, schema: {{shape: [null], dtype: int64}}}}
''')

SPEC = {"primary_metric": "total", "direction": "maximize", "min_value": 0, "goal_value": 1,
        "dataset_split": "other", "tolerance": 0,
        "context": "a trivial pipeline that only measures Quipu's own overhead"}


@dataclass
class Figure:
    """One measured figure next to its same-run baseline; ``ratio`` is quipu / baseline."""

    name: str
    value: float
    baseline: float
    unit: str
    baseline_name: str
    target: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """quipu / baseline (0 when the baseline is 0)."""
        return self.value / self.baseline if self.baseline else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form with the ratio."""
        return {"name": self.name, "value": self.value, "baseline": self.baseline,
                "unit": self.unit, "baseline_name": self.baseline_name,
                "ratio": round(self.ratio, 4), "target": self.target, "passed": self.passed,
                **self.extra}


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:,.0f} {unit}"


def render(figures: list[Figure]) -> str:
    """A plain-text table: figure, quipu, baseline, ratio, target, PASS/MISS."""
    rows = [("figure", "quipu", "baseline", "ratio", "target", "", "baseline is")]
    for f in figures:
        verdict = "" if f.passed is None else ("PASS" if f.passed else "MISS")
        rows.append((f.name, _fmt(f.value, f.unit), _fmt(f.baseline, f.unit),
                     f"{f.ratio:,.2f}x", f.target or "-", verdict, f.baseline_name))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in (1, 2, 3) else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(msg: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(msg, file=sys.stderr, flush=True)


# --- the project ---------------------------------------------------------------------------------


def _project(root: Path) -> Any:
    """A project with one workspace holding the probe and the a -> b -> c pipeline."""
    from quipu.app.bootstrap import init_project

    q = init_project(root, name="bench", goal="measure what running a stage costs",
                     actor="bench:run")
    q.create_workspace("bench", "time stages", "measure the executor's overhead")
    q.mount("bench", "w1", "write the benchmark stages")
    slot = q.slots.path("w1")
    (slot / "modules").mkdir()
    for name, text in (("probe", PROBE), ("a", STAGE_A), ("b", STAGE_B), ("c", STAGE_C)):
        (slot / "modules" / f"{name}.py").write_text(text)
    (slot / "pipeline.yaml").write_text(PIPELINE)
    q.save_version("w1", "the benchmark stages")
    q.start_workers()
    return q


def _finalize(q: Any, run_ids: list[str]) -> None:
    for run_id in run_ids:
        run = q.runs.load_run(run_id)
        if run.metrics is not None and "total" in run.metrics.summaries:
            q.finalize_run(run_id, {"primary_metric": "total", "direction": "maximize",
                                    "value": run.metrics.summaries["total"]["last"],
                                    "dataset_split": "other", "ml_outcome": "success",
                                    "notes": "benchmark run: only the timing matters"})
        else:
            q.finalize_run(run_id, {"ml_outcome": "unknown",
                                    "notes": "benchmark run: only the timing matters"})


def _check(q: Any, result: dict[str, Any]) -> list[str]:
    ids = [r["stage_run_id"] for r in result["queued"]]
    states = {r["stage_run_id"]: r["state"] for r in result.get("stage_runs", [])}
    bad = []
    for r in ids:
        if states.get(r) != "succeeded":
            ended = q.runs.load_run(r).exit
            bad.append(f"{r}: {states.get(r)} {ended.problems if ended else ''}")
    if bad:
        raise RuntimeError(f"benchmark runs did not succeed ({', '.join(bad)}); see "
                           f"{q.root}/.quipu/runs")
    return ids


# --- launch --------------------------------------------------------------------------------------


def bench_launch(q: Any, reps: int) -> list[Figure]:
    """run() call/return -> the stage's first line, against Popen -> the same first line."""
    from_call: list[float] = []
    from_return: list[float] = []
    direct: list[float] = []
    script = q.slots.path("w1") / "modules" / "probe.py"
    for i in range(reps + 1):  # the first repetition warms caches and is dropped
        called = time.time()
        result = q.run("bench", stages=["probe"], reason="time one stage launch", results_spec=SPEC)
        returned = time.time()
        result["stage_runs"] = q.wait_for([r["stage_run_id"] for r in result["queued"]],
                                          timeout=60, poll=0.05)
        ids = _check(q, result)
        run_dir = Path(q.runs.load_run(ids[0]).run_dir)
        started = float((run_dir / "outputs" / "started").read_text())
        _finalize(q, ids)

        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            (Path(tmp) / "outputs").mkdir()
            env = {**os.environ, "QUIPU_RUN_DIR": tmp}
            t0 = time.time()
            subprocess.run([sys.executable, str(script)], env=env, check=True)
            first = float((Path(tmp) / "outputs" / "started").read_text())
        if i == 0:
            continue
        from_call.append((started - called) * 1000)
        from_return.append((started - returned) * 1000)
        direct.append((first - t0) * 1000)
        log(f"  launch {i}/{reps}: run() call -> first line {from_call[-1]:.0f} ms, "
            f"return -> first line {from_return[-1]:.0f} ms, direct {direct[-1]:.0f} ms")
    base = statistics.median(direct)
    spread = {"samples_ms": [round(x, 1) for x in from_call],
              "baseline_samples_ms": [round(x, 1) for x in direct]}
    # The goal: a stage starts within 100 ms plus the interpreter's own start-up.
    called, returned = statistics.median(from_call), statistics.median(from_return)
    return [
        Figure("launch: run() called -> stage's first line (median)", called, base, "ms",
               "Popen -> first line", "< baseline + 100 ms", called < base + 100, spread),
        Figure("launch: run() returned -> stage's first line (median)", returned, base, "ms",
               "Popen -> first line", "< baseline + 100 ms", returned < base + 100,
               {"samples_ms": [round(x, 1) for x in from_return]}),
        Figure("launch: run() called -> first line (max)", max(from_call), max(direct), "ms",
               "Popen -> first line (max)"),
    ]


# --- pipeline ------------------------------------------------------------------------------------


def _direct_pipeline(slot: Path, root: Path) -> float:
    """The three scripts with plain ``python``, each in a run directory like the executor's."""
    npy = {"type": "npy", "format": None, "schema": {"shape": [None], "dtype": "int64"}}
    plan = [("a", {}, {"x": npy}), ("b", {"x": "a"}, {"y": npy}), ("c", {"y": "b"}, {})]
    started = time.perf_counter()
    for stage, inputs, outputs in plan:
        run_dir = root / stage
        for sub in ("inputs", "outputs", ".quipu"):
            (run_dir / sub).mkdir(parents=True)
        declared = {}
        for name, src in inputs.items():  # staged as the executor stages them: a link
            (run_dir / "inputs" / f"{name}.npy").symlink_to(root / src / "outputs" / f"{name}.npy")
            declared[name] = {**npy, "path": f"inputs/{name}.npy"}
        (run_dir / ".quipu" / "stage.json").write_text(json.dumps(
            {"run_id": stage, "stage": stage, "workspace": "bench", "config": {},
             "inputs": declared, "outputs": outputs}))
        subprocess.run([sys.executable, str(slot / "modules" / f"{stage}.py")], check=True,
                       env={**os.environ, "QUIPU_RUN_DIR": str(run_dir)}, cwd=run_dir)
    return time.perf_counter() - started


def bench_pipeline(q: Any, reps: int) -> list[Figure]:
    """run(wait=True) of a -> b -> c against the same scripts run one after the other."""
    quipu: list[float] = []
    direct: list[float] = []
    slot = q.slots.path("w1")
    for i in range(reps + 1):
        started = time.perf_counter()
        result = q.run("bench", stages=["a", "b", "c"], reason="time a three-stage pipeline",
                       results_spec=SPEC, wait=True, wait_timeout=120)
        elapsed = time.perf_counter() - started
        ids = _check(q, result)
        total = q.runs.load_run(ids[-1]).metrics
        if total is None or total.summaries.get("total", {}).get("last") != 999_000.0:
            raise RuntimeError(f"stage c did not log the expected total: {total}")
        _finalize(q, ids)
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            baseline = _direct_pipeline(slot, Path(tmp))
        if i == 0:
            continue
        quipu.append(elapsed)
        direct.append(baseline)
        log(f"  pipeline {i}/{reps}: quipu {elapsed:.2f} s, direct {baseline:.2f} s")
    value, base = statistics.median(quipu), statistics.median(direct)
    return [Figure("3-stage pipeline, run(wait=True) (median)", value, base, "s",
                   "the 3 scripts with python, in turn", "< 1.5x", value / base < 1.5,
                   {"samples_s": [round(x, 3) for x in quipu],
                    "baseline_samples_s": [round(x, 3) for x in direct]})]


# --- start-up ------------------------------------------------------------------------------------


def _quipu_argv(root: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "quipu", "--project", str(root), *command]


# Bytecode caching on, as in an ordinary install (a PYTHONDONTWRITEBYTECODE=1 environment would
# otherwise make every start compile Quipu from source); the dropped first repetition writes it.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=_ENV)
    return time.perf_counter() - started


def _status_once(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(_quipu_argv(root, "status"), check=True, stdout=subprocess.DEVNULL, env=_ENV)
    return time.perf_counter() - started


def _initialize_once(root: Path) -> float:
    """Spawn ``quipu serve`` and time it until its answer to ``initialize`` arrives."""
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    argv = _quipu_argv(root, "serve")
    params = StdioServerParameters(command=argv[0], args=argv[1:],
                                   env={**_ENV, "QUIPU_ACTOR": "bench:run"})
    answered: list[float] = []

    async def session() -> None:
        started = time.perf_counter()
        with open(os.devnull, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write) as client:
                await client.initialize()
                answered.append(time.perf_counter() - started)

    anyio.run(session)
    return answered[0]


def bench_startup(root: Path, reps: int) -> list[Figure]:
    """``quipu status`` and ``quipu serve`` -> initialize answered, against ``python -c pass``."""
    status: list[float] = []
    serve: list[float] = []
    bare: list[float] = []
    for i in range(reps + 1):
        b, s, m = _bare_python(), _status_once(root), _initialize_once(root)
        if i == 0:
            continue
        bare.append(b * 1000)
        status.append(s * 1000)
        serve.append(m * 1000)
        log(f"  start-up {i}/{reps}: quipu status {status[-1]:.0f} ms, serve -> initialize "
            f"{serve[-1]:.0f} ms, python -c pass {bare[-1]:.0f} ms")
    base = statistics.median(bare)
    status_ms, serve_ms = statistics.median(status), statistics.median(serve)
    return [
        Figure("start-up: `quipu status` wall time (median)", status_ms, base, "ms",
               "python -c pass", "< 300 ms", status_ms < 300,
               {"samples_ms": [round(x, 1) for x in status],
                "baseline_samples_ms": [round(x, 1) for x in bare]}),
        Figure("start-up: spawn `quipu serve` -> initialize answered (median)", serve_ms, base,
               "ms", "python -c pass", "< 500 ms", serve_ms < 500,
               {"samples_ms": [round(x, 1) for x in serve]}),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repetitions each")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 10)")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    args = parser.parse_args(argv)
    reps = args.reps or (3 if args.quick else 10)

    started = time.perf_counter()
    figures: list[Figure] = []
    with scratch_dir("run-") as root:
        q = _project(root / "project")
        try:
            log("launch overhead ...")
            figures += bench_launch(q, reps)
            log("three-stage pipeline ...")
            figures += bench_pipeline(q, reps)
            executor = type(q.workers[0]).__name__ if q.workers else "?"
        finally:
            q.close()
        log("start-up ...")
        figures += bench_startup(root / "project", reps)
    elapsed = time.perf_counter() - started

    out = sys.stderr if args.json else sys.stdout
    m = machine()
    print(f"\nquipu bench.run: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
          f"executor {executor}, {reps} repetitions, load {m['load_average_1m']}, "
          f"{elapsed:.0f} s", file=out)
    print(render(figures), file=out)
    if args.json:
        json.dump({"machine": m, "args": vars(args), "seconds": round(elapsed, 1),
                   "results": [f.as_dict() for f in figures]}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
