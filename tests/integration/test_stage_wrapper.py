"""The stage wrapper, run as the executor runs it (a real subprocess), writes how the stage
ended to ``.quipu/exit.json``: the exit code, the signal, and what it raised."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WRAPPER = "quipu.adapters.executors._wrapper"


def run_stage(tmp_path: Path, code: str) -> tuple[int, dict[str, object]]:
    """Run ``code`` as a stage script under the wrapper; its return code and exit.json."""
    script = tmp_path / "stage.py"
    script.write_text(code)
    env = {**os.environ, "QUIPU_RUN_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", WRAPPER, str(script)], env=env,
                          cwd=tmp_path, capture_output=True, timeout=120)
    return done.returncode, json.loads((tmp_path / ".quipu" / "exit.json").read_text())


@pytest.mark.parametrize(("code", "exit_code", "error"), [
    ("print('fine')\n", 0, None),
    ("raise ValueError('bad shape (3, 4)')\n", 1, "ValueError: bad shape (3, 4)"),
    ("class Diverged(Exception):\n    pass\nraise Diverged('loss is nan')\n", 1,
     "Diverged: loss is nan"),
    ("import sys\nsys.exit('no data in inputs/')\n", 1, "SystemExit: no data in inputs/"),
    ("import sys\nsys.exit(3)\n", 3, None),
])
def test_the_exception_a_stage_raised_is_its_error(tmp_path: Path, code: str, exit_code: int,
                                                   error: str | None) -> None:
    returncode, status = run_stage(tmp_path, code)
    assert returncode == exit_code
    assert status == {"exit_code": exit_code, "signal": None, "error": error}


def test_a_long_message_is_cut_to_one_bounded_line(tmp_path: Path) -> None:
    _, status = run_stage(tmp_path, "raise RuntimeError('x' * 5000 + '\\nsecond line')\n")
    error = status["error"]
    assert isinstance(error, str) and error.startswith("RuntimeError: xxx")
    assert len(error) <= 1000 and "\n" not in error
