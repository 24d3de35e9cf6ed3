"""The stage backends the StageBackend contract runs against, and a stand-alone engine.

``CASES`` lists every backend: adding one to the contract suite
(tests/contracts/test_stage_backend.py) is one line there, naming a function that builds the
backend and the resources its stages run with.

Run as a script (``python tests/stage_backends.py engine NAME RUN_DIR``), this module is a
minimal engine in its own process: it launches the stage in RUN_DIR through backend NAME,
writes the handle to ``RUN_DIR/handle.json`` and then waits to be killed, so a test can
``kill -9`` an engine that has a stage running and adopt the stage from another process.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.executors.process import LocalProcessBackend
from quipu.core.ports import LaunchSpec, Resources, StageBackend

__all__ = ["CASES", "Case", "make_case", "spec_for"]


@dataclass
class Case:
    """One backend under test and the profile its stages get."""

    name: str
    backend: StageBackend
    resources: Resources


def _local(tmp: Path) -> Case:
    return Case("local", LocalProcessBackend(LocalBlobStore(tmp / "blobs")), Resources())


def _docker(tmp: Path) -> Case:
    import docker
    from docker_image import build_python_image

    from quipu.adapters.docker import DockerBackend

    image = build_python_image(docker.from_env())  # reused while the host's Python is unchanged
    return Case("docker", DockerBackend(project="contract"),
                Resources(profile="contract-docker", backend="docker", image=image,
                          memory_mb=1024, cpus=1.0, network=False))


CASES: dict[str, Callable[[Path], Case]] = {
    "local": _local,
    "docker": _docker,
}
"""Every StageBackend the contract suite runs against (one line per backend)."""


def make_case(name: str, tmp: Path) -> Case:
    """A fresh backend ``name`` with its scratch space under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    return CASES[name](tmp)


def spec_for(case: Case, run_dir: Path, *, run_id: str | None = None,
             stage: str = "contract") -> LaunchSpec:
    """The launch of ``run_dir/code/stage.py`` the way the executor builds one."""
    return LaunchSpec(
        run_id=run_id or run_dir.name, stage=stage, run_dir=run_dir,
        entrypoint="code/stage.py", resources=case.resources,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "QUIPU_RUN_ID": run_id or run_dir.name, "QUIPU_STAGE": stage},
        paths={"PYTHONPATH": "code", "QUIPU_RUN_DIR": ".", "QUIPU_INPUTS_DIR": "inputs",
               "QUIPU_OUTPUTS_DIR": "outputs", "QUIPU_STAGE_CONFIG": ".quipu/stage.json"})


def _engine(name: str, run_dir: Path) -> None:
    case = make_case(name, run_dir.parent / f"{run_dir.name}-engine")
    spec = spec_for(case, run_dir)
    case.backend.prepare(spec)
    handle = case.backend.launch(spec)
    tmp = run_dir / "handle.json.tmp"
    tmp.write_text(json.dumps(handle.to_dict()))
    tmp.rename(run_dir / "handle.json")
    while True:  # an engine with a stage running, until it is killed
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1:2] == ["engine"] and len(sys.argv) == 4:
        _engine(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit("usage: stage_backends.py engine NAME RUN_DIR")
