"""Benchmark metric logging: ``quipu.sdk.log_metric`` against MLflow, in the same run.

Quipu's half: a stage process (a real ``python`` subprocess in a run directory laid out as the
executor lays it out) logs 1,000,000 points with ``sdk.log_metric``, one call per point, in 4
series of 250,000 steps, then ``sdk.finish()``. The points are then ingested with the executor's
own ingestion (``quipu.adapters.executors._metrics.MetricSeries``: read ``metrics.jsonl``,
summarise, store the Parquet series in the blob store) and one series is read back from that
blob and checked point by point. The figure that counts is end to end: points / (logging +
ingestion + reading back), since only then is every point readable.

MLflow's half runs in its own environment (``/tmp/quipu-bench/mlflow-venv``, created with
``python -m venv`` and ``pip install mlflow`` on first use, never in Quipu's) as a subprocess
that logs into a SQLite tracking store and reports JSON: ``mlflow.log_metric`` one call per
point (2,000 points) and ``MlflowClient.log_batch`` in chunks of 1,000 (100,000 points), each
read back with ``get_metric_history`` and counted::

    python -m bench.metrics                  # ~1-2 minutes (+ a few minutes to install MLflow once)
    python -m bench.metrics --quick          # 100,000 Quipu points, 500 / 10,000 MLflow points
    python -m bench.metrics --no-mlflow      # Quipu only, against the reference figures

Speed is never asserted in tests; the results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from ._util import SCRATCH, machine
from .run import Figure, render

__all__ = ["main"]

MLFLOW_VENV = SCRATCH / "mlflow-venv"
REFERENCE = {"per_call": 250.0, "batch": 9_600.0}
"""MLflow points/s quoted in the issue, used only when MLflow cannot be installed here."""
SERIES = ("loss", "accuracy", "lr", "grad_norm")

STAGE = textwrap.dedent('''\
    import json, sys, time
    from quipu import sdk

    steps = int(sys.argv[1])
    names = sys.argv[2].split(",")
    log_metric = sdk.log_metric
    started = time.perf_counter()
    for step in range(steps):
        for k, name in enumerate(names):
            log_metric(name, step * 0.001 + k, step=step)
    sdk.finish()
    print(json.dumps({"seconds": time.perf_counter() - started}))
''')

MLFLOW = textwrap.dedent('''\
    import json, logging, sys, time
    logging.disable(logging.WARNING)
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri, per_call, batched = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    mlflow.set_experiment("bench")
    out = {"mlflow": mlflow.__version__}
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        started = time.perf_counter()
        for step in range(per_call):
            mlflow.log_metric("loss", step * 0.001, step=step)
        out["per_call_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        stamp = int(time.time() * 1000)
        for lo in range(0, batched, 1000):
            client.log_batch(run_id, metrics=[Metric("accuracy", i * 0.001, stamp, i)
                                               for i in range(lo, min(lo + 1000, batched))])
        out["batch_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        out["per_call_read"] = len(client.get_metric_history(run_id, "loss"))
        history = client.get_metric_history(run_id, "accuracy")
        out["batch_read"] = len(history)
        out["read_seconds"] = time.perf_counter() - started
        out["batch_steps_ok"] = sorted(m.step for m in history) == list(range(batched))
    print(json.dumps(out))
''')


def log(msg: str) -> None:
    """Progress on stderr, so --json output on stdout stays clean."""
    print(msg, file=sys.stderr, flush=True)


# --- MLflow, in its own environment -----------------------------------------------------------


def mlflow_python() -> Path | None:
    """The MLflow venv's python, creating the venv on first use; None if MLflow won't install."""
    python = MLFLOW_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import mlflow"],
                                          capture_output=True).returncode == 0:
        return python
    log(f"creating {MLFLOW_VENV} and installing mlflow (once) ...")
    SCRATCH.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        log(f"cannot create the MLflow venv: {made.stderr.strip()[-500:]}")
        return None
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        log(f"cannot install mlflow: {pip.stderr.strip()[-500:]}")
        return None
    return python


def bench_mlflow(python: Path, workdir: Path, per_call: int, batched: int) -> dict[str, Any]:
    """Run the MLflow half as a subprocess; its JSON report."""
    script = workdir / "mlflow_bench.py"
    script.write_text(MLFLOW)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    done = subprocess.run([str(python), str(script), uri, str(per_call), str(batched)],
                          capture_output=True, text=True, cwd=workdir)
    if done.returncode != 0:
        raise RuntimeError(f"the MLflow benchmark failed:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if report["per_call_read"] != per_call or report["batch_read"] != batched \
            or not report["batch_steps_ok"]:
        raise RuntimeError(f"MLflow did not return every point: {report}")
    return report


# --- Quipu ---------------------------------------------------------------------------------------


def bench_quipu(workdir: Path, steps: int) -> dict[str, Any]:
    """Log ``steps`` x 4 points from a stage process, ingest them, read one series back."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quipu.adapters.blobs import LocalBlobStore
    from quipu.adapters.executors._metrics import MetricSeries

    run_dir = workdir / "run"
    for sub in ("inputs", "outputs", ".quipu"):
        (run_dir / sub).mkdir(parents=True)
    (run_dir / ".quipu" / "stage.json").write_text(json.dumps(
        {"run_id": "bench", "stage": "log", "workspace": "bench", "config": {}, "inputs": {},
         "outputs": {}}))
    script = workdir / "log_points.py"
    script.write_text(STAGE)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(steps), ",".join(SERIES)],
                          capture_output=True, text=True, cwd=run_dir,
                          env={**os.environ, "QUIPU_RUN_DIR": str(run_dir)})
    process_seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the logging stage failed:\n{done.stderr[-3000:]}")
    logging_seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]

    blobs = LocalBlobStore(workdir / "blobs")
    started = time.perf_counter()
    series = MetricSeries(run_dir / ".quipu" / "metrics.jsonl")
    series.read_new()
    summaries = series.summaries()
    digest = series.store(blobs)
    ingest_seconds = time.perf_counter() - started
    if digest is None:
        raise RuntimeError("no metric points were ingested")

    started = time.perf_counter()
    table = pq.read_table(pa.BufferReader(blobs.get_bytes(digest)),
                          filters=[("name", "=", "loss")], columns=["step", "value"])
    steps_read = table.column("step").to_numpy()
    values_read = table.column("value").to_numpy()
    read_seconds = time.perf_counter() - started

    expected = np.arange(steps)
    ok = (len(steps_read) == steps and np.array_equal(np.sort(steps_read), expected)
          and np.allclose(values_read[np.argsort(steps_read)], expected * 0.001)
          and series.points == steps * len(SERIES) and series.skipped == 0
          and all(summaries[n]["count"] == steps for n in SERIES))
    if not ok:
        raise RuntimeError(f"not every point was readable: read {len(steps_read)} of {steps} "
                           f"'loss' points, {series.points} of {steps * len(SERIES)} in all")
    return {"points": steps * len(SERIES), "logging_seconds": logging_seconds,
            "process_seconds": process_seconds, "ingest_seconds": ingest_seconds,
            "read_seconds": read_seconds, "series_points_read": len(steps_read),
            "jsonl_bytes": (run_dir / ".quipu" / "metrics.jsonl").stat().st_size,
            "parquet_bytes": len(blobs.get_bytes(digest))}


def main(argv: list[str] | None = None) -> int:
    """Run both halves and print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--no-mlflow", action="store_true",
                        help="skip MLflow; compare with the reference figures from the issue")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    args = parser.parse_args(argv)
    steps = 25_000 if args.quick else 250_000
    per_call, batched = (500, 10_000) if args.quick else (2_000, 100_000)

    started = time.perf_counter()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="metrics-", dir=SCRATCH) as tmp:
        work = Path(tmp)
        mlflow: dict[str, Any] | None = None
        python = None if args.no_mlflow else mlflow_python()
        if python is not None:
            log(f"MLflow: {per_call:,} points one call each, {batched:,} with log_batch ...")
            (work / "mlflow").mkdir()
            mlflow = bench_mlflow(python, work / "mlflow", per_call, batched)
        log(f"Quipu: {steps * len(SERIES):,} points with sdk.log_metric, ingest, read back ...")
        (work / "quipu").mkdir()
        quipu = bench_quipu(work / "quipu", steps)
    elapsed = time.perf_counter() - started

    points = quipu["points"]
    end_to_end = points / (quipu["logging_seconds"] + quipu["ingest_seconds"]
                           + quipu["read_seconds"])
    logging_rate = points / quipu["logging_seconds"]
    if mlflow is not None:
        per_call_rate = per_call / mlflow["per_call_seconds"]
        batch_rate = batched / mlflow["batch_seconds"]
        source = f"MLflow {mlflow['mlflow']}, SQLite store, same run"
    else:
        per_call_rate, batch_rate = REFERENCE["per_call"], REFERENCE["batch"]
        source = "reference figure from the issue (MLflow not run here)"
    figures = [
        Figure(f"{points:,} points logged + ingested + 1 series read back", end_to_end,
               per_call_rate, "points/s", f"mlflow.log_metric per call ({source})",
               ">= 100x", end_to_end >= 100 * per_call_rate),
        Figure(f"{points:,} points logged + ingested + 1 series read back", end_to_end,
               batch_rate, "points/s", f"MlflowClient.log_batch, 1,000/call ({source})",
               ">= 10x", end_to_end >= 10 * batch_rate),
        Figure("sdk.log_metric alone (in the stage, incl. finish())", logging_rate,
               per_call_rate, "points/s", "mlflow.log_metric per call"),
    ]
    out = sys.stderr if args.json else sys.stdout
    m = machine()
    print(f"\nquipu bench.metrics: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
          f"load {m['load_average_1m']}, {elapsed:.0f} s", file=out)
    print(render(figures), file=out)
    print(f"\nquipu: logging {quipu['logging_seconds']:.2f} s (stage process "
          f"{quipu['process_seconds']:.2f} s), ingestion {quipu['ingest_seconds']:.2f} s, "
          f"reading {quipu['series_points_read']:,} 'loss' points {quipu['read_seconds']:.3f} s;"
          f" metrics.jsonl {quipu['jsonl_bytes'] / 2**20:.0f} MiB -> Parquet "
          f"{quipu['parquet_bytes'] / 2**20:.1f} MiB", file=out)
    if mlflow is not None:
        print(f"mlflow: {per_call:,} log_metric calls {mlflow['per_call_seconds']:.2f} s, "
              f"{batched:,} points by log_batch {mlflow['batch_seconds']:.2f} s, reading both "
              f"series back {mlflow['read_seconds']:.2f} s (every point returned)", file=out)
    if args.json:
        json.dump({"machine": m, "args": vars(args), "seconds": round(elapsed, 1),
                   "quipu": quipu, "mlflow": mlflow,
                   "results": [f.as_dict() for f in figures]}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
