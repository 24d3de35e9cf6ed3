"""`quipu demo` end to end, as a user runs it: a subprocess on a fresh temporary project.

The demo runs the real digits pipeline (preprocess -> train -> evaluate) twice through the
local executor, finalizes every stage run, compares the two evaluations and verifies the log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


Demo = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    project = tmp_path_factory.mktemp("demo") / "digits"
    env = {k: v for k, v in os.environ.items()
           if k not in ("QUIPU_PROJECT", "QUIPU_EVENTSTORE_URL", "QUIPU_ACTOR")}
    # The timeout bounds a hung demo; how fast it runs is the benchmarks' business, not a test's.
    done = subprocess.run([sys.executable, "-m", "quipu.cli", "demo", "--keep", str(project)],
                          capture_output=True, text=True, env=env, timeout=170)
    return done, project


def test_the_demo_exits_0(demo: Demo) -> None:
    done, _ = demo
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def test_two_pipeline_runs_succeed_and_are_finalized(demo: Demo) -> None:
    out = demo[0].stdout
    for stage in ("preprocess", "train", "evaluate"):
        assert len(re.findall(rf"^  {stage}\s+stage-\w+: succeeded$", out, re.M)) == 2, stage
    finalized = re.findall(r"^finalized evaluate run (stage-\w+): accuracy (0\.\d+) "
                           r"\((success|partial|miss)\)$", out, re.M)
    assert len(finalized) == 2
    assert finalized[0][0] != finalized[1][0]
    assert all(0.5 < float(value) <= 1.0 for _, value, _ in finalized)
    assert "train logged 15 epochs" in out and "train logged 40 epochs" in out


def test_the_second_run_is_compared_with_the_first(demo: Demo) -> None:
    out = demo[0].stdout
    finalized = re.findall(r"^finalized evaluate run (stage-\w+): accuracy (0\.\d+)", out, re.M)
    compared = re.search(r"^comparison vs previous: (stage-\w+) had (0\.\d+), now (0\.\d+) "
                         r"\(delta ([+-]0\.\d+), improved: (True|False)\)$", out, re.M)
    assert compared is not None, out[-3000:]
    assert compared.group(1) == finalized[0][0]
    assert compared.group(2) == f"{float(finalized[0][1]):.4f}"
    assert compared.group(3) == f"{float(finalized[1][1]):.4f}"


def test_state_md_and_the_audit(demo: Demo) -> None:
    out, project = demo[0].stdout, demo[1]
    assert "=== STATE.md" in out
    assert "mlp/evaluate" in out
    assert re.search(r"^audit verify: OK \(\d+ events", out, re.M)
    assert "Awaiting finalization\n- (none" in (project / "STATE.md").read_text()
    assert (project / "workspaces" / "w3" / "pipeline.yaml").is_file()
