"""The environment a stage runs with, as small facts recorded with its launch.

``EnvironmentProbe.facts`` answers, for the interpreter a stage is started with and the
environment variables it is given::

    {"python": "3.11.9", "implementation": "cpython", "executable": "/usr/bin/python3",
     "os": "Linux-6.8.0-x86_64-with-glibc2.36", "machine": "x86_64", "cpu_count": 8,
     "gpu": [{"name": "NVIDIA A100-SXM4-40GB", "driver": "535.104.05", "memory": "40960 MiB"}],
     "env_names": ["HOME", "LANG", "PATH", ...],
     "packages": {"count": 42, "sha256": "<blob of the sorted name==version lines>"}}

The interpreter facts (version, installed distributions, platform) come from running that
interpreter once with ``-c``; they are cached per interpreter and invalidated when the
interpreter file or a directory of its ``sys.path`` changes (installing or removing a
distribution changes its site-packages directory), so later launches cost a few ``stat`` calls.
Only the NAMES of relevant variables are kept, never their values: values hold tokens and keys.
A probe that fails never stops a launch; its facts say ``error`` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quipu.core.ports import BlobStore

from ._probe import ENV_NAME_PREFIXES, ENV_NAMES, gpu_facts, relevant_env_names

__all__ = ["ENV_NAMES", "ENV_NAME_PREFIXES", "EnvironmentProbe", "gpu_facts",
           "relevant_env_names"]

log = logging.getLogger("quipu.executor")

PROBE_TIMEOUT = 30.0

# Run in the stage's interpreter: everything it would import from, without the stage's code.
# The text of ``_probe`` itself, so the local and the in-container facts are computed alike.
_PROBE = (Path(__file__).with_name("_probe.py").read_text(encoding="utf-8")
          + "\n_main()\n")


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class EnvironmentProbe:
    """Collects a launch's environment facts, caching what is costly per interpreter."""

    def __init__(self, blobs: BlobStore, *, timeout: float = PROBE_TIMEOUT) -> None:
        self.blobs = blobs
        self.timeout = timeout
        self.probes = 0  # how many times an interpreter was actually run (tests, benchmarks)
        self._lock = threading.Lock()
        # executable -> (stamp, facts); the stamp is what must not change for facts to hold.
        self._interpreters: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._gpus: dict[tuple[str | None, int | None], list[dict[str, str]] | None] = {}

    def facts(self, executable: str, env: Mapping[str, str]) -> dict[str, Any]:
        """The environment facts of a stage started as ``executable`` with ``env``."""
        out: dict[str, Any] = {"executable": executable}
        with self._lock:
            try:
                out.update(self._interpreter(executable, env))
            except Exception as exc:  # a launch never fails for want of its facts
                log.warning("executor: probing %s failed: %s", executable, exc)
                out["error"] = f"{type(exc).__name__}: {exc}"[:300]
            out["gpu"] = self._gpu(env.get("PATH"))
        out["env_names"] = relevant_env_names(env)
        return out

    def _stamp(self, executable: str, paths: list[str]) -> tuple[Any, ...]:
        return (_mtime(os.path.realpath(executable)), _mtime(executable),
                tuple((p, _mtime(p)) for p in paths))

    def _interpreter(self, executable: str, env: Mapping[str, str]) -> dict[str, Any]:
        cached = self._interpreters.get(executable)
        if cached is not None:
            stamp, facts = cached
            if stamp == self._stamp(executable, facts["paths"]):
                return self._public(facts)
        # The stage's own code directory is not the interpreter's: leave it out.
        probe_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        done = subprocess.run([executable, "-c", _PROBE], capture_output=True,
                              timeout=self.timeout, env=probe_env, cwd="/",
                              stdin=subprocess.DEVNULL, check=False)
        self.probes += 1
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise RuntimeError(f"exit {done.returncode}: {' '.join(tail)}")
        facts = json.loads(done.stdout)
        listing = "".join(f"{line}\n" for line in facts["packages"]).encode()
        digest = self.blobs.put_bytes(listing)
        assert digest == hashlib.sha256(listing).hexdigest()
        facts["packages"] = {"count": len(facts["packages"]), "sha256": digest}
        facts["executable"] = executable  # as launched (the probe may report a resolved path)
        self._interpreters[executable] = (self._stamp(executable, facts["paths"]), facts)
        return self._public(facts)

    @staticmethod
    def _public(facts: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in facts.items() if k not in ("paths", "executable")}

    def _gpu(self, path: str | None) -> list[dict[str, str]] | None:
        tool = shutil.which("nvidia-smi", path=path)
        key = (tool, _mtime(tool) if tool else None)
        if key not in self._gpus:
            self._gpus[key] = gpu_facts(path) if tool else None
        return self._gpus[key]

