"""Asking a running stage to stop: StopRequested -> the executor writes the stop file -> the
stage sees should_stop() -> an exit 0 ends the run ``stopped`` with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import pytest
from test_executor_helpers import (
    ONE_STAGE,
    drive,
    ended,
    executor,
    kill_quietly,
    make_project,
    pid_of,
    run_dir_of,
    start,
    state,
)
from waiting import wait_until

from quipu.app.bootstrap import Quipu
from quipu.core.errors import Conflict, NotFound
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.reviews.events import StopRequested
from quipu.core.runs.events import RunExited
from quipu.core.runs.lifecycle import State

POLLS = """\
    import time
    from quipu import sdk
    while not sdk.should_stop():
        time.sleep(0.05)
    sdk.save_output('result', {'stopped': True})
    """

IGNORES = """\
    import time
    while True:
        time.sleep(0.05)
    """

WHY = "the loss has plateaued, stop and keep the checkpoint"


E = TypeVar("E", bound=Event)


def _events(q: Quipu, cls: type[E]) -> list[E]:
    return [e for e in (decode(r).event for r in q.store.read(after=0, limit=10_000))
            if isinstance(e, cls)]


class TestRequestStop:
    def test_a_stage_polling_should_stop_ends_stopped_with_the_reason(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": POLLS})
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        answer = q.request_stop(run_id, WHY)
        assert answer["stop_requested"] and not answer["already_requested"]
        assert answer["state"] == "running"
        drive(ex, ended(q, run_id))
        assert state(q, run_id) is State.STOPPED
        stop_file = run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "stop_requested"
        assert json.loads(stop_file.read_text()) == {"reason": WHY, "requested_by": "agent"}
        [stop] = _events(q, StopRequested)
        assert stop.requested_by == "agent" and stop.reason == WHY and stop.finding is None
        [exited] = _events(q, RunExited)
        assert exited.state == "stopped" and WHY in exited.reason
        # Stopped runs hold the gate like any ended run: the verdict is still the agent's.
        assert [r["run_id"] for r in q.list_unfinalized_runs("ws")["runs"]] == [run_id]

    def test_asking_twice_records_once(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": POLLS})
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        try:
            q.request_stop(run_id, WHY)
            head = q.store.head()
            again = q.request_stop(run_id, "asking a second time to be sure")
            assert again["already_requested"] and "position" not in again
            assert q.store.head() == head
            drive(ex, ended(q, run_id))
        finally:
            kill_quietly(pid_of(q, run_id))

    def test_a_stage_that_ignores_the_request_keeps_running_until_canceled(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": IGNORES})
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        try:
            q.request_stop(run_id, WHY)
            stop_file = run_dir_of(q.runs.load_run(run_id)) / ".quipu" / "stop_requested"
            drive(ex, stop_file.exists, what="the executor writes the stop file")
            for _ in range(5):
                ex.poll_once()
            assert state(q, run_id) is State.RUNNING
            q.cancel(run_id, "it ignores the stop request, so end it")
            drive(ex, lambda: not ex.running(), what="the canceled stage is gone")
            assert state(q, run_id) is State.CANCELED
        finally:
            kill_quietly(pid_of(q, run_id))

    def test_an_ended_run_is_refused_and_nothing_is_written(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": "print('done')\n"})
        run_id = start(q)["solo"]
        drive(executor(q), ended(q, run_id))
        head = q.store.head()
        with pytest.raises(Conflict) as refused:
            q.request_stop(run_id, WHY)
        assert refused.value.code == "run_ended"
        assert q.store.head() == head

    def test_a_queued_run_is_refused_with_cancel_as_the_hint(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": POLLS})
        run_id = start(q)["solo"]
        head = q.store.head()
        with pytest.raises(Conflict) as refused:
            q.request_stop(run_id, WHY)
        assert refused.value.code == "run_not_running" and "cancel" in refused.value.hint
        assert q.store.head() == head

    def test_an_unknown_run_gets_a_did_you_mean_among_the_runs_in_flight(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": POLLS})
        run_id = start(q)["solo"]
        ex = executor(q)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        try:
            head = q.store.head()
            typo = run_id[:-1] + ("x" if run_id[-1] != "x" else "y")
            with pytest.raises(NotFound) as refused:
                q.request_stop(typo, WHY)
            assert refused.value.code == "unknown_run"
            assert f"did you mean {run_id!r}" in refused.value.hint
            assert q.store.head() == head
        finally:
            q.request_stop(run_id, "clean up: stop the stage of this test")
            wait_until(ended(q, run_id), what="the stage stops", step=ex.poll_once,
                       timeout=120)
