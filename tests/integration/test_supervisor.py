"""The supervisor turns silence into events, and a restarted engine finds its runs again.

Real stage processes and a real SQLite log. The restart tests kill ``quipu serve`` (the real
CLI, which starts the workers) with SIGKILL while a stage runs, then start it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_executor_helpers import (
    ONE_STAGE,
    drive,
    ended,
    executor,
    exit_of,
    kill_quietly,
    make_project,
    pid_gone,
    pid_of,
    start,
    state,
)
from waiting import wait_until

from quipu.app.bootstrap import DATA_DIR, Quipu
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.runs.events import MetricsRecorded, RunAdopted, RunHeartbeat, RunLost
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.aggregate import Workspace
from quipu.core.workspaces.handlers import Service

HANG = """\
    import time
    while True:
        time.sleep(0.1)
    """

# The metric comes first so that an executor watching the live stage records it (an event that
# names which executor is watching); the stage then waits for the test's go.
SLEEP_THEN_SUCCEED = """\
    import time
    from pathlib import Path
    from quipu import sdk
    sdk.log_metric("loss", 0.5, step=0)
    while not Path("{go}").exists():
        time.sleep(0.05)
    sdk.save_output("result", {{"done": True}})
    """

# A `quipu serve` process imports the whole engine and the MCP server before its executor polls:
# on a loaded machine that alone has taken over ten seconds. Waits that include one are bounded
# by this, which is a limit for a broken build, not a speed claim.
SERVE_WAIT = 120.0

TWO_STAGES = """\
    stages:
      - name: first
        outputs:
          result: {type: json, schema: null}
      - name: second
        inputs:
          result: {type: json, from_stage: first, schema: null}
        outputs:
          result: {type: json, schema: null}
    """

WAIT_THEN_SAVE = """\
    import time
    from pathlib import Path
    from quipu import sdk
    while not Path("{go}").exists():
        time.sleep(0.05)
    sdk.save_output("result", {{"done": True}})
    """

SAVE = """\
    from quipu import sdk
    sdk.save_output("result", {"done": True})
    """


def events_of(q: Quipu, cls: type[Event], run_id: str) -> list[Any]:
    return [e for e in (decode(r).event for r in q.store.read(types=[cls.TYPE], limit=10_000))
            if getattr(e, "run_id", None) == run_id]


class MovableClock:
    """A fake of the Clock port whose time the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class TestDeadlines:
    def test_a_hanging_stage_without_heartbeats_is_lost(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": HANG})
        run_id = start(q)["solo"]
        ex = executor(q, heartbeat_timeout=1.0)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        pid = pid_of(q, run_id)
        try:
            drive(ex, lambda: state(q, run_id) is State.LOST, what="the silent stage is lost")
            lost = events_of(q, RunLost, run_id)
            assert len(lost) == 1 and lost[0].actor == "supervisor:test:1"
            assert run_id in q.service.load(Workspace, "ws").awaiting  # the gate sees it
            assert events_of(q, RunHeartbeat, run_id) == []
        finally:
            kill_quietly(pid)

    def test_a_stage_that_beats_is_not_lost(self, tmp_path: Path) -> None:
        code = """\
            import time
            from quipu import sdk
            for i in range(60):
                sdk.heartbeat(f"step {i}", force=True)
                time.sleep(0.1)
            sdk.save_output("result", {"ok": True})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        # The run lasts twice the silence allowed; the margin keeps a loaded CI machine (slow
        # interpreter start, late polls) from turning a beating stage into a lost one.
        drive(executor(q, heartbeat_timeout=3.0, heartbeat_every=0.2), ended(q, run_id))
        assert state(q, run_id) is State.SUCCEEDED
        beats = events_of(q, RunHeartbeat, run_id)
        assert len(beats) >= 3 and any((b.message or "").startswith("step") for b in beats)

    def test_a_lost_stage_that_speaks_again_is_adopted(self, tmp_path: Path) -> None:
        speak, finish = tmp_path / "speak", tmp_path / "finish"
        # Once it speaks, the stage keeps beating until the test saw it adopted: adoption is for
        # a live process, and a stage that exits at once (or falls silent again past the 1 s
        # allowed) would leave the outcome to a race.
        code = f"""\
            import time
            from pathlib import Path
            from quipu import sdk
            while not Path({str(speak)!r}).exists():
                time.sleep(0.05)
            sdk.heartbeat("back", force=True)
            while not Path({str(finish)!r}).exists():
                sdk.heartbeat("waiting", force=True)
                time.sleep(0.05)
            sdk.save_output("result", {{"ok": True}})
            """
        q = make_project(tmp_path, ONE_STAGE, {"solo": code})
        run_id = start(q)["solo"]
        ex = executor(q, heartbeat_timeout=1.0)
        drive(ex, lambda: state(q, run_id) is State.LOST, what="the silent stage is lost")
        speak.touch()
        drive(ex, lambda: state(q, run_id) is State.RUNNING, what="the lost stage is adopted")
        finish.touch()
        drive(ex, lambda: not ex.running(), what="the adopted stage ends")
        assert state(q, run_id) is State.SUCCEEDED
        assert len(events_of(q, RunAdopted, run_id)) == 1
        assert run_id in q.service.load(Workspace, "ws").awaiting

    def test_a_queued_run_expires_then_its_cancellation_is_finalized(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": HANG})
        run_id = start(q)["solo"]
        clock = MovableClock()
        runs = RunService(Service(UnitOfWork(q.store, clock), q.blobs, q.slots), q.views)
        supervisor_only = executor(q, max_parallel=0, runs=runs)
        supervisor_only.poll_once()
        assert state(q, run_id) is State.QUEUED
        clock.offset = timedelta(days=1, minutes=1)
        supervisor_only.poll_once()
        assert state(q, run_id) is State.CANCELED
        clock.offset += timedelta(days=7, minutes=1)
        supervisor_only.poll_once()
        assert state(q, run_id) is State.FINALIZED


class TestAnExecutorRestartInProcess:
    def test_a_new_executor_watches_a_live_stage_to_its_end(self, tmp_path: Path) -> None:
        go = tmp_path / "go"
        q = make_project(tmp_path, ONE_STAGE, {"solo": SLEEP_THEN_SUCCEED.format(go=go)})
        run_id = start(q)["solo"]
        first = executor(q, worker_id="test:first")
        drive(first, lambda: state(q, run_id) is State.RUNNING)
        # the first executor is abandoned without a word, like a killed engine
        second = executor(q, worker_id="test:second")
        second.poll_once()
        assert second.running() == [run_id]
        go.touch()
        drive(second, ended(q, run_id))
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED and exit_of(run).exit_code == 0
        assert exit_of(run).actor == "test:second"
        assert run.metrics is not None and run.metrics.summaries["loss"]["last"] == 0.5
        first.poll_once()  # the first one coming back records nothing twice
        assert q.runs.load_run(run_id).version == run.version

    def test_a_lost_run_found_alive_after_a_restart_is_adopted(self, tmp_path: Path) -> None:
        go = tmp_path / "go"
        q = make_project(tmp_path, ONE_STAGE, {"solo": SLEEP_THEN_SUCCEED.format(go=go)})
        run_id = start(q)["solo"]
        first = executor(q, worker_id="test:first", heartbeat_timeout=0.5)
        drive(first, lambda: state(q, run_id) is State.LOST, what="the silent stage is lost")
        second = executor(q, worker_id="test:second")
        second.poll_once()
        assert state(q, run_id) is State.RUNNING
        assert [e.worker for e in events_of(q, RunAdopted, run_id)] == ["test:second"]
        go.touch()
        drive(second, lambda: not second.running())
        assert state(q, run_id) is State.SUCCEEDED


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


class TestAKilledServeRestarts:
    def test_a_stage_that_outlived_the_engine_ends_with_its_exit_code(
            self, tmp_path: Path) -> None:
        go = tmp_path / "go"
        q = make_project(tmp_path, ONE_STAGE, {"solo": SLEEP_THEN_SUCCEED.format(go=go)})
        run_id = start(q)["solo"]
        engine = _serve(q.root, tmp_path / "serve.log")
        try:
            wait_until(lambda: state(q, run_id) is State.RUNNING, timeout=SERVE_WAIT,
                       what="the first engine launches the stage")
            stage_pid = pid_of(q, run_id)
            _kill_engine(engine)
            assert not pid_gone(stage_pid)  # the stage lives in its own session
            engine = _serve(q.root, tmp_path / "serve.log")
            second = f":{engine.pid}"
            # The stage must still be running when the new engine finds it: it waits for go
            # until the new engine, watching it, has recorded its metric.
            wait_until(lambda: any(e.actor.endswith(second)
                                   for e in events_of(q, MetricsRecorded, run_id)),
                       timeout=SERVE_WAIT, what="the restarted engine watches the live stage")
            go.touch()
            wait_until(ended(q, run_id), timeout=SERVE_WAIT, what="the stage's exit is recorded")
            run = q.runs.load_run(run_id)
            assert run.current is State.SUCCEEDED, (run.current, run.exit)
            assert exit_of(run).exit_code == 0 and exit_of(run).actor.endswith(second)
            assert run_id in q.service.load(Workspace, "ws").awaiting
        finally:
            _kill_engine(engine)
            kill_quietly(q.runs.load_run(run_id).pid or 0)

    def test_a_stage_killed_with_the_engine_is_lost_and_holds_the_gate(
            self, tmp_path: Path) -> None:
        go = tmp_path / "go"
        q = make_project(tmp_path, ONE_STAGE, {"solo": SLEEP_THEN_SUCCEED.format(go=go)})
        run_id = start(q)["solo"]
        engine = _serve(q.root, tmp_path / "serve.log")
        try:
            wait_until(lambda: state(q, run_id) is State.RUNNING, timeout=SERVE_WAIT,
                       what="the first engine launches the stage")
            stage_pid = pid_of(q, run_id)
            _kill_engine(engine)
            os.killpg(stage_pid, signal.SIGKILL)  # the machine took the stage down too
            wait_until(lambda: pid_gone(stage_pid), what="the killed stage is gone")
            engine = _serve(q.root, tmp_path / "serve.log")
            wait_until(lambda: state(q, run_id) is State.LOST, timeout=SERVE_WAIT,
                       what="the restarted engine declares the vanished stage lost")
            run = q.runs.load_run(run_id)
            assert run.lost_why == "process gone after an engine restart"
            assert run_id in q.service.load(Workspace, "ws").awaiting  # the gate sees it
            q.refresh()
            unfinalized = q.list_unfinalized_runs("ws")
            assert [(r["run_id"], r["state"]) for r in unfinalized["runs"]] == [(run_id, "lost")]
        finally:
            _kill_engine(engine)


class TestTheBookOfRuns:
    def test_a_queued_stage_starts_after_its_upstream_was_finalized_and_tagged_meanwhile(
            self, tmp_path: Path) -> None:
        """A tag on a finalized run does not bring it back into the book as a run in flight
        that its downstream would wait on forever."""
        go = tmp_path / "go"
        q = make_project(tmp_path, TWO_STAGES, {"first": WAIT_THEN_SAVE.format(go=go),
                                                "second": SAVE})
        ids = start(q)
        first = executor(q, worker_id="test:first")
        drive(first, lambda: state(q, ids["first"]) is State.RUNNING)
        # the first executor is abandoned while its stage runs, like a killed engine
        stage_pid = pid_of(q, ids["first"])
        go.touch()
        wait_until(lambda: pid_gone(stage_pid) and (
            q.root / DATA_DIR / "runs" / ids["first"] / ".quipu" / "exit.json").exists(),
            what="the abandoned stage ends and leaves its exit status")
        supervisor = executor(q, worker_id="test:supervisor", max_parallel=0)
        supervisor.poll_once()  # records the exit it finds, starts nothing
        assert state(q, ids["first"]) is State.SUCCEEDED
        assert state(q, ids["second"]) is State.QUEUED
        q.finalize_run(ids["first"], {"ml_outcome": "unknown",
                                      "notes": "only a producer of the second stage's input"})
        q.tag_record(ids["first"], "keep", "keep the producer for later comparisons")
        third = executor(q, worker_id="test:third")
        drive(third, ended(q, ids["second"]), what="the downstream stage runs to its end")
        assert state(q, ids["second"]) is State.SUCCEEDED
