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
