"""The benchmarks still run: each one, at its smallest size, prints figures beside baselines.

Nothing here looks at how fast anything is (tests never assert wall-clock times); it keeps the
one-command benchmarks in ``bench/`` from rotting as the code they measure changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module,args", [
    ("bench.log", ["--quick"]),
    ("bench.run", ["--quick"]),
    ("bench.metrics", ["--quick", "--no-mlflow"]),
    ("bench.growth", ["--quick"]),
    ("bench.lineage", ["--quick"]),
    ("bench.compare", ["--quick"]),
    pytest.param("bench.docker_launch", ["--quick"], marks=pytest.mark.docker),
    ("bench.artifacts", ["--quick"]),
    ("bench.gcs", ["--quick"]),
    ("bench.static_review", ["--quick"]),
])
def test_each_benchmark_runs_and_reports_every_figure_beside_a_baseline(
        module: str, args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", module, *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "QUIPU_BENCH_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    figures = report["results"]
    assert figures, "a benchmark with no figures"
    for figure in figures:
        assert figure["value"] > 0 and figure["baseline"] > 0, figure
        assert figure["baseline_name"], figure


def test_growth_benchmark_generates_a_log_the_real_code_accepts_with_the_gate_clear(
        tmp_path: Path) -> None:
    """The generated project (cached in the bench dir) verifies, holds the runs it claims in
    ``busy`` with every one finalized, and every operation of issue 6 was measured on it."""
    from quipu.app.bootstrap import open_project
    from quipu.core.audit import verify_log

    proc = subprocess.run([sys.executable, "-m", "bench.growth", "--quick", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "QUIPU_BENCH_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    operations = {f["operation"] for f in report["results"]}
    assert operations == {
        "python -c pass", "quipu status", "quipu status (opens the project)",
        "quipu serve -> initialize", "status()",
        "dashboard()", "list_history(busy)", "inspect_run()", "run(dry_run=True)",
        "log_thought()", "log_thought(workspace=busy)", "create_workspace()",
        "save_version(w1)", "finalize_run()", "run()"}
    (project,) = tmp_path.glob("growth-*/project")
    q = open_project(project, actor="test:bench")
    try:
        assert verify_log(q.store).ok
        assert q.list_history("busy")["total"] == 40
        for workspace in ("busy", "quiet-1", "quiet-2", "quiet-3"):
            assert q.list_unfinalized_runs(workspace)["count"] == 0
        dashboard = q.dashboard()
        assert dashboard["active"]["count"] == 0
        assert dashboard["pending_finalization"]["count"] == 0
    finally:
        q.close()
