"""`quipu pattern ...` as people run it: a stage fails under a real `quipu serve`, its error
becomes a candidate, an invalid rule is refused at approval (exit 2, nothing written), a valid
one is approved and shows in STATE.md."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runner import quipu
from test_cli_runs import as_json, project, refused, workers  # noqa: F401 (fixtures)
from toy_pipeline import SPEC
from waiting import wait_until

pytestmark = pytest.mark.timeout(300)

WHY = "the prep stage keeps failing with the same error"


def test_pattern_commands_from_a_real_failure(project: Path,  # noqa: F811
                                              workers: subprocess.Popen[str]) -> None:  # noqa: F811
    (project / "workspaces" / "w1" / "modules" / "prep.py").write_text(
        "raise RuntimeError('features are all zero')\n")
    quipu("run", "start", "toy", "--reason", WHY, "--spec", json.dumps(SPEC), "--stage",
          "prep", "--wait", cwd=project)
    found: list[Any] = []

    def listed() -> bool:
        found[:] = as_json("pattern", "list", "--status", "candidate", cwd=project)["patterns"]
        return bool(found)

    wait_until(listed, what="a candidate pattern from the failed run")
    pid = found[0]["pattern_id"]
    assert "features are all zero" in quipu("pattern", "list", cwd=project).stdout

    head = as_json("dashboard", cwd=project)["cursor_position"]
    err = refused("invalid_detection", "pattern", "approve", pid, "--reason", WHY,
                  "--detection", '{"kind": "statistic", "statistic": "std", "op": "=="}',
                  cwd=project)
    assert "detection.threshold" in err
    assert as_json("dashboard", cwd=project)["cursor_position"] == head
    refused("unknown_pattern", "pattern", "show", "pat-000000000000", cwd=project)

    quipu("pattern", "approve", pid, "--reason", WHY, "--detection",
          '{"kind": "statistic", "statistic": "std", "op": "==", "threshold": 0}',
          "--prevention", "check the feature scaling", cwd=project)
    shown = json.loads(quipu("pattern", "show", pid, cwd=project).stdout)["pattern"]
    assert shown["status"] == "approved" and shown["detection"]["threshold"] == 0.0
    status = quipu("status", cwd=project).stdout
    assert pid in status and "checks statistic" in status
