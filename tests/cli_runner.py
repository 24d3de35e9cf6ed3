"""Run the real `quipu` entry point in a subprocess, as a person at a terminal would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def quipu(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m quipu ARGS` (what the `quipu` script runs) in ``cwd`` as actor ``cli:test``;
    raises if ``check`` fails."""
    env = {**os.environ, "QUIPU_ACTOR": "cli:test"}
    env.pop("QUIPU_PROJECT", None)
    proc = subprocess.run([sys.executable, "-m", "quipu", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"quipu {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def as_json(*args: str, cwd: Path) -> Any:
    """The parsed output of `quipu ARGS --json`."""
    return json.loads(quipu(*args, "--json", cwd=cwd).stdout)


def refused(code: str, *args: str, cwd: Path) -> str:
    """Run a command that must exit 2 with ``code`` and a hint; return its stderr."""
    proc = quipu(*args, cwd=cwd, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"error [{code}]" in proc.stderr and "hint:" in proc.stderr, proc.stderr
    return proc.stderr
