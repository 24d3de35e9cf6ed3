"""Run the real `quipu` entry point in a subprocess, as a person at a terminal would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
