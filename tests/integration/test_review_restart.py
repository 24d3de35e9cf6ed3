"""A review left mid-flight by an engine killed with ``kill -9`` is done again on restart.

Real parts: ``quipu serve`` processes (the engine the review adapter runs in), killed with
SIGKILL while a ``command`` reviewer program hangs in its first review; a real SQLite log; the
restarted engine's review worker sees the run still ``reviewing``, finds the first reviewer's
lease free (the kernel dropped it with the process), and reviews the run again at once instead
of leaving it to the 15-minute review deadline and its fail-open ``review_timed_out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from test_executor_helpers import ONE_STAGE, SPEC, kill_quietly, pid_gone, write_slot
from test_supervisor import SERVE_WAIT, _kill_engine, _serve
from waiting import wait_until

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.reviews.events import ReviewCompleted, ReviewStarted
from quipu.core.runs.events import RunQueued
from quipu.core.runs.lifecycle import State

pytestmark = pytest.mark.timeout(600)
WHY = "check that a review cut short by a killed engine is done again"

# The first review hangs (its engine is killed meanwhile); any later one approves.
REVIEWER = """\
import json, os, sys, time
from pathlib import Path

sys.stdin.read()
marker = Path({marker!r})
if not marker.exists():
    marker.write_text(str(os.getpid()))
    time.sleep(600)
print(json.dumps({{"decision": "approve", "findings": []}}))
"""

SOLO = """\
    from quipu import sdk
    sdk.save_output("result", {"ok": True})
    """


def reviewed_project(tmp_path: Path, marker: Path) -> Quipu:
    """A project whose quipu.yaml reviews every run with the hanging-once command reviewer
    (its own timeout far beyond the test's waits), with a one-stage pipeline in slot w1."""
    root = tmp_path / "proj"
    script = tmp_path / "reviewer.py"
    script.write_text(REVIEWER.format(marker=str(marker)))
    init_project(root, name="proj", goal="review runs before they run").close()
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["svs"] = {"reviewer": "command", "command": [sys.executable, str(script)],
                     "timeout": 3000}
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    q = open_project(root, actor="agent:test")
    q.create_workspace("ws", "one stage", WHY)
    q.mount("ws", "w1", WHY)
    write_slot(q, ONE_STAGE, {"solo": SOLO})
    return q


def events_of(q: Quipu, cls: type[Event], run_id: str) -> list[Event]:
    found = (decode(r).event for r in q.store.read(limit=100_000, types=[cls.TYPE]))
    return [e for e in found if getattr(e, "run_id", None) == run_id]


def test_a_review_left_by_a_killed_engine_is_done_again_by_the_restarted_one(
        tmp_path: Path) -> None:
    marker = tmp_path / "first-review.pid"
    q = reviewed_project(tmp_path, marker)
    run_id = q.run("w1", reason=WHY, results_spec=SPEC)["queued"][0]["stage_run_id"]
    log = tmp_path / "serve.log"
    engine = _serve(q.root, log)
    try:
        wait_until(marker.exists, timeout=SERVE_WAIT,
                   what="the first engine's reviewer program hangs in the review")
        assert q.runs.load_run(run_id).current is State.REVIEWING
        [started] = events_of(q, ReviewStarted, run_id)
        assert isinstance(started, ReviewStarted)
        assert started.actor.endswith(f":{engine.pid}")
        _kill_engine(engine)  # kill -9, mid-review
        engine = _serve(q.root, log)
        wait_until(lambda: events_of(q, ReviewCompleted, run_id), timeout=SERVE_WAIT,
                   what="the restarted engine reviews the run again (the review deadline "
                        "is 15 minutes away)")
        [completed] = events_of(q, ReviewCompleted, run_id)
        assert isinstance(completed, ReviewCompleted)
        assert completed.actor.endswith(f":{engine.pid}")
        assert completed.resumed_from == started.actor
        # The static checks may warn about the toy stage; no reviewer failed or timed out.
        assert completed.decision in ("approve", "warn")
        assert "reviewer_failed" not in {f["signal"] for f in completed.findings}
        assert "command" in completed.reviewers
        assert "reviewed again" in completed.reason
        # Not the deadline's fail-open: the review itself queued the run.
        assert events_of(q, RunQueued, run_id) == []
        wait_until(lambda: q.runs.load_run(run_id).current is State.SUCCEEDED,
                   timeout=SERVE_WAIT, what="the reviewed run then runs")
        assert q.inspect_run(run_id)["review"]["resumed_from"] == started.actor
    finally:
        _kill_engine(engine)
        if marker.exists():  # the first reviewer program outlived its engine: end it
            pid = int(marker.read_text())
            kill_quietly(pid)
            wait_until(lambda: pid_gone(pid), what="the hanging reviewer program is gone")
        q.close()
