"""The executor steps when something happens, and continues from where it stopped.

Real projects, a real SQLite log and real stage processes. The executors here have ticks of an
hour, so any progress they make was caused by a wake-up (an append or a stage's exit), which
``wakeups`` counts; no test looks at a clock.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

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

from quipu.adapters.executors._position import load_position
from quipu.adapters.executors.local import LocalExecutor
from quipu.app.bootstrap import DATA_DIR, Quipu, open_project
from quipu.core.log import decode
from quipu.core.runs.lifecycle import State

HOUR = 3600.0

CHAIN = """\
    stages:
      - name: a
        outputs: {x: {type: json, schema: null}}
      - name: b
        inputs: {x: {type: json, from_stage: a, schema: null}}
        outputs: {y: {type: json, schema: null}}
      - name: c
        inputs: {y: {type: json, from_stage: b, schema: null}}
        outputs: {z: {type: json, schema: null}}
    """
PASS_ON = {
    "a": 'from quipu import sdk\nsdk.save_output("x", {"n": 1})\n',
    "b": 'from quipu import sdk\nsdk.save_output("y", {"n": sdk.load_input("x")["n"] + 1})\n',
    "c": 'from quipu import sdk\nsdk.save_output("z", {"n": sdk.load_input("y")["n"] + 1})\n',
}
SOLO = 'from quipu import sdk\nsdk.save_output("result", {"ok": True})\n'


def position_file(q: Quipu) -> Path:
    return q.root / DATA_DIR / "executor.json"


def sleepy(q: Quipu, **kw: Any) -> LocalExecutor:
    """An executor in its own thread whose ticks never come during a test."""
    return executor(q, poll_interval=HOUR, idle_interval=HOUR, **kw)


def finalize(q: Quipu, *run_ids: str) -> None:
    for run_id in run_ids:
        q.finalize_run(run_id, {"ml_outcome": "unknown", "notes": "only the executor matters"})


class TestTheExecutorWakesOnEvents:
    def test_a_pipeline_queued_in_this_process_runs_through_without_a_single_tick(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, CHAIN, PASS_ON)
        ex = sleepy(q)
        ex.start()
        try:
            ids = start(q)
            wait_until(ended(q, *ids.values()), timeout=120, what="the whole pipeline ends")
        finally:
            ex.stop()
        assert {s: state(q, r) for s, r in ids.items()} == dict.fromkeys(ids, State.SUCCEEDED)
        # Every step after the first was caused by the run's events or a stage's exit.
        assert ex.wakeups["timeout"] == 0
        assert ex.wakeups["append"] >= 1 and ex.wakeups["exit"] >= 3
        q.close()

    def test_a_run_queued_by_another_process_wakes_the_executor(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        q.save_version("w1", "the stage the other process will run")
        ex = sleepy(q)
        ex.start()
        try:
            other = textwrap.dedent(f"""\
                from pathlib import Path
                from quipu.app.bootstrap import open_project
                q = open_project(Path({str(q.root)!r}), actor="cli:other")
                q.run("ws", reason={REASON!r}, results_spec={SPEC!r})
                q.close()
                """)
            subprocess.run([sys.executable, "-c", other], check=True, timeout=120)
            [run_id] = [decode(r).event.run_id  # type: ignore[attr-defined]
                        for r in q.store.read(types=["RunQueued"])]
            wait_until(ended(q, run_id), timeout=120, what="the other process's run ends")
        finally:
            ex.stop()
        assert state(q, run_id) is State.SUCCEEDED
        assert ex.wakeups["timeout"] == 0 and ex.wakeups["append"] >= 1
        q.close()


class TestTheExecutorKeepsItsPosition:
    def test_a_restarted_executor_continues_from_the_saved_position(
            self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        first = start(q)["solo"]
        ex = executor(q, position_file=position_file(q), save_every=0.0)
        drive(ex, ended(q, first))
        finalize(q, first)
        ex.poll_once()
        ex.stop()
        saved = load_position(position_file(q), q.store)
        assert saved is not None and saved.position == q.store.head()
        assert first not in saved.runs  # finalized: nothing left to know about it

        # The marker: hide the run's RunFinalized from a reader that starts at 0. An executor
        # that read the log from 0 would think the run still needs watching; one that
        # continues from the saved position never reads that far back.
        conn = sqlite3.connect(q.root / DATA_DIR / "events.db")
        with conn:
            conn.execute("UPDATE stored_events SET topic = 'ThoughtLogged' "
                         "WHERE topic = 'RunFinalized'")
        conn.close()
        again = executor(q, position_file=position_file(q))
        again.poll_once()
        assert again.position == q.store.head()
        assert again.book.state(first) is None

        from_zero = executor(q)  # no saved position: the marker is seen
        from_zero.poll_once()
        assert from_zero.book.state(first) is State.SUCCEEDED
        q.close()

    def test_a_restored_older_log_makes_the_executor_read_from_0(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        run_id = start(q)["solo"]
        events = q.root / DATA_DIR / "events.db"
        older = tmp_path / "older.db"
        _copy_db(events, older)  # the log while the run was only queued
        ex = executor(q, position_file=position_file(q), save_every=0.0)
        drive(ex, ended(q, run_id))
        ex.stop()
        stale = position_file(q).read_text()
        saved_at = json.loads(stale)["position"]
        root = q.root
        q.close()

        _copy_db(older, events)  # the older log is restored: its head is behind the position
        q = open_project(root)
        assert q.store.head() < saved_at
        behind = executor(q, position_file=position_file(q), max_parallel=0)
        behind.poll_once()
        assert behind.position == q.store.head()
        assert behind.book.state(run_id) is State.QUEUED

        # The log grows past the saved position again, with other events there; the file
        # still names the lost position (``behind`` has saved its own since: put it back).
        while q.store.head() <= saved_at:
            q.log_thought("new events where the lost ones were")
        position_file(q).write_text(stale)
        other = executor(q, position_file=position_file(q), max_parallel=0)
        other.poll_once()
        assert other.position == q.store.head()
        assert other.book.state(run_id) is State.QUEUED
        q.close()

    def test_an_unreadable_position_file_is_ignored(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, ONE_STAGE, {"solo": SOLO})
        run_id = start(q)["solo"]
        position_file(q).write_text('{"format": 1, "position": ')
        ex = executor(q, position_file=position_file(q), max_parallel=0)
        ex.poll_once()
        assert ex.position == q.store.head() and ex.book.state(run_id) is State.QUEUED
        q.close()


def _copy_db(src: Path, dst: Path) -> None:
    """Copy a SQLite database through SQLite (WAL included)."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
