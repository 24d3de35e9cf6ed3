"""The during-run monitor with a real executor and real stage processes: NaN -> finding ->
auto_stop -> stopped; a loss spike; no progress; a bad event never stops it or the engine."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any, TypeVar

import yaml
from test_executor_helpers import (
    ONE_STAGE,
    REASON,
    SPEC,
    drive,
    ended,
    executor,
    make_project,
    start,
    state,
)
from waiting import wait_until

from quipu.adapters.executors.executor import StageExecutor
from quipu.adapters.executors.local import LocalExecutor
from quipu.adapters.monitor import PostRunReviewer, RunMonitor
from quipu.app.bootstrap import Quipu, Workers, open_project
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.patterns.detection import ApprovedPattern
from quipu.core.reviews.events import FindingsRecorded, StopRequested
from quipu.core.reviews.monitoring import MonitorRules
from quipu.core.runs.events import RunExited
from quipu.core.runs.lifecycle import State

E = TypeVar("E", bound=Event)

WAITS = """\
    import time
    from quipu import sdk
    while not sdk.should_stop():
        time.sleep(0.05)
    """

GOES_NAN = dedent("""\
    from quipu import sdk
    for step in range(3):
        sdk.log_metric("loss", 1.0 / (step + 1), step=step)
    sdk.log_metric("loss", float("nan"), step=3)
    """) + dedent(WAITS)

SPIKES = dedent("""\
    from quipu import sdk
    for step, value in enumerate([1.0, 0.5, 0.2, 0.15, 4.0]):
        sdk.log_metric("loss", value, step=step)
    """) + dedent(WAITS)

ONE_POINT = dedent("""\
    from quipu import sdk
    sdk.log_metric("loss", 0.5, step=0)
    """) + dedent(WAITS)


def events(q: Quipu, cls: type[E]) -> list[E]:
    """Every event of type ``cls`` in the log, in order."""
    return [e for e in (decode(r).event for r in q.store.read(after=0, limit=100_000))
            if isinstance(e, cls)]


def monitor(q: Quipu, **rules: Any) -> RunMonitor:
    """A monitor on the project's log, polled by the test."""
    return RunMonitor(q.store, q.runs, MonitorRules(**rules), tick=0.05)


def both(ex: LocalExecutor, mon: RunMonitor) -> Any:
    """One step of the executor, then of the monitor."""
    def step() -> None:
        ex.poll_once()
        mon.poll_once()
    return step


def findings(q: Quipu, run_id: str) -> list[dict[str, Any]]:
    """The monitor's findings about the run, in log order."""
    return [f for e in events(q, FindingsRecorded) if e.run_id == run_id
            and e.source == "monitor" and e.phase == "during_run" for f in e.findings]


class TestAutoStop:
    def test_a_nan_metric_is_an_error_finding_that_stops_the_run_through_the_engine(
            self, tmp_path: Path) -> None:
        """Wired by bootstrap: the monitor starts with the executor (quipu.yaml svs.monitor)."""
        q = make_project(tmp_path, ONE_STAGE, {"solo": GOES_NAN})
        root = q.root
        config = yaml.safe_load((root / "quipu.yaml").read_text())
        config["svs"] = {"monitor": {"auto_stop": True, "tick_seconds": 0.1}}
        (root / "quipu.yaml").write_text(yaml.safe_dump(config))
        q.close()
        q = open_project(root)
        try:
            q.start_workers()
            [group] = [w for w in q.workers if isinstance(w, Workers)]
            assert {type(w) for w in group.workers} == {StageExecutor, RunMonitor,
                                                       PostRunReviewer}
            run_id = start(q)["solo"]
            wait_until(ended(q, run_id), what="the monitor stops the run", timeout=120)
            assert state(q, run_id) is State.STOPPED
            [nan] = findings(q, run_id)
            assert nan["signal"] == "nan_metric" and nan["severity"] == "error"
            assert nan["evidence"]["metric"] == "loss" and nan["evidence"]["kind"] == "nan"
            assert nan["stage"] == "solo"
            [stop] = events(q, StopRequested)
            assert stop.requested_by == "monitor" and stop.actor == "monitor"
            assert stop.finding is not None and stop.finding["signal"] == "nan_metric"
            [exited] = events(q, RunExited)
            assert "stop requested by monitor" in exited.reason
        finally:
            q.close()


class TestRules:
    def test_a_loss_spike_is_flagged_once_and_without_auto_stop_the_run_goes_on(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SPIKES})
        run_id = start(q)["solo"]
        ex, mon = executor(q), monitor(q, loss_spike_factor=5.0)
        step = both(ex, mon)
        wait_until(lambda: findings(q, run_id), what="the spike is flagged", step=step,
                   timeout=120)
        for _ in range(5):
            step()
        assert state(q, run_id) is State.RUNNING  # auto_stop is off
        [spike] = findings(q, run_id)
        assert spike["signal"] == "loss_spike" and spike["severity"] == "error"
        assert spike["evidence"]["value"] == 4.0 and spike["evidence"]["minimum"] == 0.15
        assert not events(q, StopRequested)
        q.request_stop(run_id, "end the test stage after the spike was seen")
        drive(ex, ended(q, run_id))
        assert [f["signal"] for f in findings(q, run_id)] == ["loss_spike"]

    def test_an_approved_metric_pattern_is_a_finding_naming_the_pattern(
            self, tmp_path: Path) -> None:
        """The failure-pattern loop's metric rules run in the monitor (as bootstrap wires
        them): a match is recorded once, with the pattern's id, severity and prevention."""
        q = make_project(tmp_path, ONE_STAGE, {"solo": SPIKES})
        run_id = start(q)["solo"]
        pattern = ApprovedPattern(
            pattern_id="pat-0123456789ab", stage="solo", severity="warning",
            signal="loss_spike", symptom="the loss jumps above 3 late in training",
            prevention="lower the learning rate after warm-up",
            detection={"kind": "metric", "metric": "loss", "op": ">", "threshold": 3})
        elsewhere = ApprovedPattern(
            pattern_id="pat-ba9876543210", stage="other", severity="error",
            signal="loss_spike", symptom="another stage's rule",
            detection={"kind": "metric", "metric": "loss", "op": ">", "threshold": 0})
        ex = executor(q)
        mon = RunMonitor(q.store, q.runs, MonitorRules(loss_spike_factor=1000.0), tick=0.05,
                         patterns=lambda stage: [pattern, elsewhere])
        step = both(ex, mon)
        wait_until(lambda: [f for f in findings(q, run_id) if f.get("pattern_id")],
                   what="the pattern matches", step=step, timeout=120)
        for _ in range(5):
            step()
        [found] = [f for f in findings(q, run_id) if f.get("pattern_id")]
        assert found["pattern_id"] == "pat-0123456789ab" and found["severity"] == "warning"
        assert found["fix"] == "lower the learning rate after warm-up"
        q.request_stop(run_id, "end the test stage after the pattern was seen")
        drive(ex, ended(q, run_id))

    def test_no_metric_progress_past_the_threshold_is_a_warning(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": ONE_POINT})
        run_id = start(q)["solo"]
        ex, mon = executor(q), monitor(q, stall_seconds=1.0)
        step = both(ex, mon)
        wait_until(lambda: findings(q, run_id), what="the stall is flagged", step=step,
                   timeout=120)
        [stall] = findings(q, run_id)
        assert stall["signal"] == "no_metric_progress" and stall["severity"] == "warning"
        assert stall["evidence"]["seconds"] >= 1.0
        for _ in range(5):
            step()
        assert len(findings(q, run_id)) == 1  # once per stall, not once per tick
        q.request_stop(run_id, "end the test stage after the stall was seen")
        drive(ex, ended(q, run_id))

    def test_a_restarted_monitor_does_not_record_a_finding_twice(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": GOES_NAN})
        run_id = start(q)["solo"]
        ex, mon = executor(q), monitor(q)
        wait_until(lambda: findings(q, run_id), what="the NaN is flagged",
                   step=both(ex, mon), timeout=120)
        again = monitor(q)  # reads the log from the start, its own findings included
        again.poll_once()
        assert len(findings(q, run_id)) == 1 and again.errors == 0
        q.request_stop(run_id, "end the test stage after the NaN was seen")
        drive(ex, ended(q, run_id))


    def test_a_monitor_continues_from_its_saved_position_and_a_bad_file_means_from_0(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": GOES_NAN})
        saved = tmp_path / "monitor.json"
        run_id = start(q)["solo"]
        ex = executor(q)
        mon = RunMonitor(q.store, q.runs, MonitorRules(), tick=0.05, position_file=saved)
        wait_until(lambda: findings(q, run_id), what="the NaN is flagged",
                   step=both(ex, mon), timeout=120)
        mon.save(force=True)
        again = RunMonitor(q.store, q.runs, MonitorRules(), tick=0.05, position_file=saved)
        again._restore()
        assert again.position == mon.position > 0  # it continues, not from 0
        assert set(again.watches) == {run_id}
        assert ("nan_metric", "loss") in again.watches[run_id].flagged
        again._restored = True
        again.poll_once()
        saved.write_text("{not json")
        fresh = RunMonitor(q.store, q.runs, MonitorRules(), tick=0.05, position_file=saved)
        fresh.poll_once()
        assert fresh.position == q.store.head() and fresh.errors == 0
        assert len(findings(q, run_id)) == 1  # neither recorded it again
        q.request_stop(run_id, "end the test stage after the restart checks")
        drive(ex, ended(q, run_id))


class TestFaults:
    def test_a_bad_event_is_skipped_and_neither_the_monitor_nor_the_engine_stops(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": WAITS})
        run_id = start(q)["solo"]
        ex, mon = executor(q), monitor(q, auto_stop=True)
        drive(ex, lambda: state(q, run_id) is State.RUNNING)
        mon.start()  # its own thread, as in the engine
        try:
            # A summary no ingester writes: its non_finite facts do not parse.
            q.runs.record_metrics(run_id, actor="test", series=None, points=1,
                                  summaries={"loss": {"count": 1, "last": None,
                                                      "non_finite": {"count": "many"}}},
                                  complete=False)
            wait_until(lambda: mon.errors >= 1, what="the monitor trips on the bad event")
            assert mon._thread is not None and mon._thread.is_alive()
            # It goes on: a later NaN is still flagged and stops the run.
            q.runs.record_metrics(run_id, actor="test", series=None, points=2,
                                  summaries={"loss": {"count": 2, "last": None, "min": 0.5,
                                                      "max": 0.5, "non_finite": {
                                                          "count": 1, "kind": "nan",
                                                          "first_step": 1, "first_index": 1,
                                                          "last_finite": 0.5}}},
                                  complete=False)
            drive(ex, ended(q, run_id), what="the monitor stops the run after the bad event")
            assert state(q, run_id) is State.STOPPED
            assert [f["signal"] for f in findings(q, run_id)] == ["nan_metric"]
        finally:
            mon.stop()
        # The engine still runs stages.
        q.finalize_run(run_id, {"ml_outcome": "miss", "notes": "diverged on purpose in a test"})
        second = q.run("ws", reason=REASON, results_spec=SPEC)["queued"][0]["stage_run_id"]
        drive(ex, lambda: state(q, second) is State.RUNNING)
        q.request_stop(second, "stop the second stage of the fault test")
        drive(ex, ended(q, second))
        assert state(q, second) is State.STOPPED
