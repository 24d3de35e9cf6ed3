"""The executor loop with the Docker backend on a real daemon: isolation, limits and faults.

The contract suite (tests/contracts/test_stage_backend.py) runs every backend through the same
tests; these are what only containers do: no network, a non-root user, a memory limit whose
OOM kill is named, and the daemon, the image or the container failing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
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
from quipu.app.bootstrap import Quipu, open_project
from quipu.core.log import decode
from quipu.core.ports import Resources
from quipu.core.runs.lifecycle import State

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

SERVE_WAIT = 120.0
"""A bound for a broken build (a `quipu serve` start-up included), not a speed claim."""

PROBE = """\
import json, os, socket
try:
    socket.create_connection(("10.255.255.1", 9), timeout=2)
    network = "reached"
except OSError as exc:
    network = type(exc).__name__
out = os.path.join(os.environ["QUIPU_OUTPUTS_DIR"], "result.json")
with open(out, "w") as f:
    json.dump({"uid": os.getuid(), "network": network,
               "inputs_writable": os.access(os.environ["QUIPU_INPUTS_DIR"], os.W_OK)}, f)
"""


def docker_executor(q: Quipu, resources: Resources, **backend: Any) -> Any:
    return executor(q, backends={"docker": DockerBackend(project="proj", **backend)},
                    profiles=lambda _config: resources)


def profile(image: str, **kw: Any) -> Resources:
    return Resources(**{"profile": "box", "backend": "docker", "image": image,
                        "memory_mb": 512, "cpus": 1.0, "network": False, **kw})


def event_of(q: Quipu, kind: str, run_id: str) -> Any:
    for record in q.store.read(after=0, limit=10_000, types=(kind,)):
        event = decode(record).event
        if getattr(event, "run_id", None) == run_id:
            return event
    raise AssertionError(f"no {kind} for {run_id}")


def events_of(q: Quipu, kind: str, run_id: str) -> list[Any]:
    return [e for e in (decode(r).event for r in q.store.read(types=[kind], limit=10_000))
            if getattr(e, "run_id", None) == run_id]


def launch_error(q: Quipu, run_id: str) -> str:
    return str(event_of(q, "RunLaunchFailed", run_id).error)


def test_a_stage_runs_as_a_non_root_user_without_network_and_its_image_is_recorded(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": PROBE})
    with q:
        ex = docker_executor(q, profile(python_image))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert state(q, run_id) is State.SUCCEEDED, exit_of(run)
        seen = json.loads((run_dir_of(run) / "outputs" / "result.json").read_text())
        assert seen["uid"] != 0 and seen["inputs_writable"] is False
        assert seen["network"] != "reached"
        environment = event_of(q, "RunLaunched", run_id).environment
        image = docker_client.images.get(python_image)
        assert environment["image_id"] == image.id and environment["backend"] == "docker"
        assert environment["compute"]["memory_mb"] == 512
        assert docker_client.containers.list(all=True, filters={
            "label": f"quipu.run_id={run_id}"}) == []  # released once recorded


def test_an_oom_kill_ends_the_run_crashed_naming_the_limit(tmp_path: Path,
                                                          python_image: str) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": """\
        import numpy
        block = numpy.ones(512 * 1024 * 1024 // 8)  # 512 MiB, touched
        print(block.sum())
    """})
    with q:
        ex = docker_executor(q, profile(python_image, memory_mb=96))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        exited = exit_of(q.runs.load_run(run_id))
        assert state(q, run_id) is State.CRASHED
        assert exited.error == "out of memory (limit 96 MiB)"


def test_a_daemon_that_is_down_fails_the_launch_naming_the_profile_and_how_to_start_it(
        tmp_path: Path, python_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    q = make_project(tmp_path, ONE_STAGE, {"solo": "pass\n"})
    with q:
        ex = docker_executor(q, profile(python_image))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.FAILED  # failed with the reason, never lost
        error = launch_error(q, run_id)
        assert "profile 'box'" in error and "dead.sock" in error and "dockerd" in error


def test_an_image_that_does_not_exist_fails_the_launch_naming_it(
        tmp_path: Path, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": "pass\n"})
    with q:
        ex = docker_executor(q, profile("quipu-no-such-image:1"))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.FAILED
        assert "quipu-no-such-image:1" in launch_error(q, run_id)


def test_a_container_whose_interpreter_is_missing_fails_with_the_reason(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": "pass\n"})
    with q:
        ex = docker_executor(q, profile(python_image), python="/no/such/python")
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.FAILED
        exited = exit_of(q.runs.load_run(run_id))
        assert exited.exit_code == 127 and "/no/such/python" in (exited.error or "")
        assert docker_client.containers.list(all=True, filters={
            "label": f"quipu.run_id={run_id}"}) == []


def test_a_container_the_daemon_cannot_start_fails_the_launch_with_the_reason(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": "pass\n"})
    with q:
        # More CPUs than the machine has: the daemon refuses to create the container.
        ex = docker_executor(q, profile(python_image, cpus=4096.0))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.FAILED
        error = launch_error(q, run_id)
        assert "profile 'box'" in error and "could not be created" in error
        assert docker_client.containers.list(all=True, filters={
            "label": f"quipu.run_id={run_id}"}) == []


def test_cancel_stops_then_kills_the_container(tmp_path: Path, python_image: str,
                                              docker_client: Any) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": """\
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the kill ends it
        open(os.path.join(os.environ["QUIPU_OUTPUTS_DIR"], "started"), "w").close()
        while True:
            time.sleep(1)
    """})
    with q:
        ex = docker_executor(q, profile(python_image))
        ex.kill_grace = 0.5
        run_id = start(q)["solo"]
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        run_dir = run_dir_of(q.runs.load_run(run_id))
        drive(ex, lambda: (run_dir / "outputs" / "started").exists())
        q.cancel(run_id, "the container must stop when the run is canceled")
        drive(ex, lambda: not ex.running())
        assert state(q, run_id) is State.CANCELED
        wait_until(lambda: not docker_client.containers.list(filters={
            "label": f"quipu.run_id={run_id}"}), what="the container stopped")


WAIT_FOR_GO = """\
    import os, time
    from pathlib import Path
    from quipu import sdk
    sdk.log_metric("loss", 0.5, step=0)  # recorded by whichever engine watches the container
    while not Path(os.environ["QUIPU_RUN_DIR"], ".quipu", "go").exists():
        time.sleep(0.05)
    sdk.save_output("result", {"done": True})
    """


def _serve(root: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QUIPU_ACTOR": "agent:test"}
    return subprocess.Popen(
        [sys.executable, "-m", "quipu.cli", "--project", str(root), "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=env)


def _kill_engine(engine: subprocess.Popen[bytes]) -> None:
    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=10)
    if engine.stdin is not None:
        engine.stdin.close()


def test_a_container_that_outlived_a_killed_engine_is_adopted_by_the_next(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    make_project(tmp_path, ONE_STAGE, {"solo": WAIT_FOR_GO}).close()
    root = tmp_path / "proj"
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["executor"] = {"backend": "docker"}
    config["profiles"] = {"box": {"backend": "docker", "image": python_image}}
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    (root / "workspaces" / "w1" / "configs").mkdir()
    (root / "workspaces" / "w1" / "configs" / "solo.yaml").write_text(
        "compute:\n  profile: box\n")
    with open_project(root, actor="test:docker") as q:
        run_id = start(q)["solo"]
        engine = _serve(root, tmp_path / "serve.log")
        try:
            wait_until(lambda: state(q, run_id) is State.RUNNING, timeout=SERVE_WAIT,
                       what="the first engine launches the container")
            _kill_engine(engine)
            assert docker_client.containers.list(filters={"label": f"quipu.run_id={run_id}"})
            engine = _serve(root, tmp_path / "serve.log")
            second = f":{engine.pid}"
            wait_until(lambda: any(
                e.actor.endswith(second) for e in events_of(q, "MetricsRecorded", run_id)),
                timeout=SERVE_WAIT, what="the restarted engine watches the live container")
            (run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "go").touch()
            wait_until(ended(q, run_id), timeout=SERVE_WAIT, what="the exit is recorded")
            run = q.runs.load_run(run_id)
            assert run.current is State.SUCCEEDED, (run.current, run.exit)
            assert exit_of(run).actor.endswith(second)
        finally:
            _kill_engine(engine)
            for container in docker_client.containers.list(
                    all=True, filters={"label": f"quipu.run_id={run_id}"}):
                container.remove(force=True)


def test_a_profile_asking_for_gpus_without_a_gpu_runtime_fails_naming_it(
        tmp_path: Path, python_image: str, docker_client: Any) -> None:
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has a GPU runtime")  # pragma: no cover - none here or in CI
    q = make_project(tmp_path, ONE_STAGE, {"solo": "pass\n"})
    with q:
        ex = docker_executor(q, profile(python_image, gpus=1))
        run_id = start(q)["solo"]
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.FAILED
        error = launch_error(q, run_id)
        assert "profile 'box' asks for 1 GPU(s)" in error and "NVIDIA" in error
