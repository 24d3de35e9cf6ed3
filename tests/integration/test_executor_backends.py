"""The executor loop over its stage backends: what it keeps in launch.json and how it reads
older files, a backend it does not have, and a profile that cannot be resolved at launch.

Real projects, real SQLite logs, real stage processes (tests/integration/test_supervisor.py has
the restart tests through a real ``quipu serve``; the backend contract is in
tests/contracts/test_stage_backend.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_executor_helpers import (
    ONE_STAGE,
    drive,
    ended,
    executor,
    kill_quietly,
    make_project,
    run_dir_of,
    start,
    state,
)

from quipu.core.errors import InvalidInput
from quipu.core.log import decode
from quipu.core.ports import Resources, StageHandle
from quipu.core.runs.events import RunLaunched, RunLaunchFailed, RunLost
from quipu.core.runs.lifecycle import State

WAIT_FOR_GO = """\
    import time
    from pathlib import Path
    from quipu import sdk
    while not Path("{go}").exists():
        time.sleep(0.05)
    sdk.save_output("result", {{"done": True}})
    """


def events_of(q: Any, kind: type[Any], run_id: str) -> list[Any]:
    found = [decode(r).event for r in q.store.read(after=0, limit=100000, types=[kind.TYPE])]
    return [e for e in found if getattr(e, "run_id", None) == run_id]


def test_launch_json_keeps_the_backend_handle(tmp_path: Path) -> None:
    go = tmp_path / "go"
    q = make_project(tmp_path, ONE_STAGE, {"solo": WAIT_FOR_GO.format(go=go)})
    run_id = start(q)["solo"]
    ex = executor(q)
    try:
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        launch = json.loads((run_dir_of(q.runs.load_run(run_id)) / ".quipu" /
                             "launch.json").read_text())
        handle = StageHandle.from_dict(launch["handle"])
        assert (handle.backend, handle.run_id, handle.pid) == ("local", run_id, launch["pid"])
        assert handle.identity  # the process's creation time
        assert launch["environment"]["compute"]["profile"] == "local"
        go.touch()
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.SUCCEEDED
    finally:
        go.touch()
        q.close()


def test_a_launch_json_written_before_handles_is_still_adopted(tmp_path: Path) -> None:
    go = tmp_path / "go"
    q = make_project(tmp_path, ONE_STAGE, {"solo": WAIT_FOR_GO.format(go=go)})
    run_id = start(q)["solo"]
    first = executor(q, worker_id="test:first")
    pid = 0
    try:
        drive(first, lambda: state(q, run_id) is State.RUNNING)
        path = run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "launch.json"
        launch = json.loads(path.read_text())
        pid = launch["pid"]
        del launch["handle"]  # what an engine before the StageBackend port wrote
        path.write_text(json.dumps(launch))
        second = executor(q, worker_id="test:second")  # the first one is abandoned
        second.poll_once()
        assert second.running() == [run_id]
        go.touch()
        drive(second, ended(q, run_id))
        assert state(q, run_id) is State.SUCCEEDED
        assert not events_of(q, RunLost, run_id)
    finally:
        go.touch()
        kill_quietly(pid)
        q.close()


def test_a_stage_of_a_backend_not_configured_here_is_left_alone(tmp_path: Path) -> None:
    go = tmp_path / "go"
    q = make_project(tmp_path, ONE_STAGE, {"solo": WAIT_FOR_GO.format(go=go)})
    run_id = start(q)["solo"]
    first = executor(q, worker_id="test:first")
    pid = 0
    try:
        drive(first, lambda: state(q, run_id) is State.RUNNING)
        path = run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "launch.json"
        launch = json.loads(path.read_text())
        pid = launch["pid"]
        launch["handle"]["backend"] = "elsewhere"
        path.write_text(json.dumps(launch))
        second = executor(q, worker_id="test:second")
        second.poll_once()
        # Neither watched nor declared lost: its own backend's executor (or the deadline)
        # decides.
        assert second.running() == [] and state(q, run_id) is State.RUNNING
        assert not events_of(q, RunLost, run_id)
    finally:
        go.touch()
        kill_quietly(pid)
        q.close()


def test_a_profile_that_cannot_be_resolved_at_launch_fails_the_launch(tmp_path: Path) -> None:
    q = make_project(tmp_path, ONE_STAGE, {"solo": "print('never runs')\n"})
    run_id = start(q)["solo"]

    def no_profiles(config: Any) -> Resources:
        raise InvalidInput("no compute profile 'gone'", code="unknown_profile")

    def other_backend(config: Any) -> Resources:
        return Resources(profile="boxed", backend="docker")

    try:
        drive(executor(q, profiles=no_profiles), ended(q, run_id))
        [failed] = events_of(q, RunLaunchFailed, run_id)
        assert "no compute profile 'gone'" in failed.error
        assert not events_of(q, RunLaunched, run_id)
        q.finalize_run(run_id, {"ml_outcome": "unknown", "notes": "the launch failed"})
        second = start(q)["solo"]
        drive(executor(q, profiles=other_backend), ended(q, second))
        [failed] = events_of(q, RunLaunchFailed, second)
        assert "'docker' stage backend is not configured" in failed.error
    finally:
        q.close()
