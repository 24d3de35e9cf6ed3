"""The Docker backend's limits and a container that vanishes, on a real daemon.

The profile's CPUs and the backend's pids limit are read back from the container the daemon
made (``HostConfig.NanoCpus`` / ``PidsLimit``), and a stage that forks without end is stopped by
the pids limit; a container removed behind the engine's back (``docker rm -f``) ends its run
``lost``, never succeeded or failed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_executor_helpers import (
    ONE_STAGE,
    drive,
    ended,
    executor,
    exit_of,
    make_project,
    run_dir_of,
    start,
    state,
)
from waiting import wait_until

from quipu.adapters.docker import DockerBackend
from quipu.app.bootstrap import Quipu
from quipu.core.log import decode
from quipu.core.ports import Resources
from quipu.core.runs.events import RunLost
from quipu.core.runs.lifecycle import State

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

PIDS_LIMIT = 48
"""Small enough to reach quickly, large enough for the interpreter, init and the probe."""

# Waits for .quipu/go (so the test can inspect the running container), then forks sleeping
# children until the kernel refuses: the pids limit, not the loop's bound, must stop it.
FORKER = """\
    import json, os, time
    from pathlib import Path

    side = Path(os.environ["QUIPU_RUN_DIR"], ".quipu")
    (side / "waiting").touch()
    while not (side / "go").exists():
        time.sleep(0.05)
    kids, refused = [], None
    try:
        for _ in range(2000):
            pid = os.fork()
            if pid == 0:
                time.sleep(120)
                os._exit(0)
            kids.append(pid)
    except OSError as exc:
        refused = exc.errno
    finally:
        for pid in kids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    with open(os.path.join(os.environ["QUIPU_OUTPUTS_DIR"], "result.json"), "w") as f:
        json.dump({"forked": len(kids), "refused": refused}, f)
    """

WAIT_FOREVER = """\
    import os, time
    from pathlib import Path

    Path(os.environ["QUIPU_RUN_DIR"], ".quipu", "waiting").touch()
    while True:
        time.sleep(1)
    """


def _executor(q: Quipu, image: str, **resources: Any) -> Any:
    profile = Resources(**{"profile": "box", "backend": "docker", "image": image,
                           "memory_mb": 512, "cpus": 1.0, "network": False, **resources})
    backend = DockerBackend(project="proj", blobs=q.blobs, pids_limit=PIDS_LIMIT)
    return executor(q, backends={"docker": backend}, profiles=lambda _config: profile)


def _container(docker_client: Any, run_id: str) -> Any:
    found = docker_client.containers.list(all=True, filters={"label": f"quipu.run_id={run_id}"})
    assert len(found) == 1, found
    return found[0]


def test_the_profiles_cpus_and_the_pids_limit_apply_and_a_fork_bomb_is_stopped(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": FORKER})
    with q:
        ex = _executor(q, python_image, cpus=0.5)
        run_id = start(q)["solo"]
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        run_dir = run_dir_of(q.runs.load_run(run_id))
        drive(ex, lambda: (run_dir / ".quipu" / "waiting").exists())
        host = _container(docker_client, run_id).attrs["HostConfig"]
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == PIDS_LIMIT
        assert host["Memory"] == host["MemorySwap"] == 512 * 1024 * 1024
        (run_dir / ".quipu" / "go").touch()
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.SUCCEEDED, exit_of(q.runs.load_run(run_id))
        seen = json.loads((run_dir / "outputs" / "result.json").read_text())
    assert seen["refused"] == 11  # EAGAIN: the cgroup's pids.max, not the loop's 2000
    assert 0 < seen["forked"] < PIDS_LIMIT


def test_a_container_removed_behind_the_engines_back_ends_the_run_lost(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": WAIT_FOREVER})
    with q:
        ex = _executor(q, python_image)
        run_id = start(q)["solo"]
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        run_dir = run_dir_of(q.runs.load_run(run_id))
        drive(ex, lambda: (run_dir / ".quipu" / "waiting").exists())
        container = _container(docker_client, run_id)
        docker = shutil.which("docker")
        if docker is not None:  # as an operator would
            subprocess.run([docker, "rm", "-f", container.id], check=True,
                           capture_output=True, timeout=60)
        else:  # pragma: no cover - the CLI is installed here and in CI
            container.remove(force=True)
        drive(ex, lambda: state(q, run_id) is not State.RUNNING)
        run = q.runs.load_run(run_id)
        assert run.current is State.LOST, run.current
        assert run.exit is None  # nothing is known of how it ended
        lost = [r.event for r in map(decode, q.store.read())
                if isinstance(r.event, RunLost) and r.event.run_id == run_id]
        assert [e.why for e in lost] == ["container vanished"]
        assert not ex.running()
    wait_until(lambda: not docker_client.containers.list(
        all=True, filters={"label": f"quipu.run_id={run_id}"}), what="no container is left")
