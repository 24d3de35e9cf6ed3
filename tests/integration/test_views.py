"""The views over a real SQLite log file: damage repair, reopening, sharing a file, the facade.

``views.db`` is disposable, so whatever happens to it (garbage bytes, a dropped table, an older
schema) the next open or catch-up refolds it from the log, without being asked.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.adapters.slots import LocalSlotFiles
from quipu.app.bootstrap import init_project, open_project
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.handlers import Service, Settings
from quipu.projections import Views, position_at, replay_views
from quipu.projections.views import SCHEMA

ACTOR = "agent:integration"
REASON = "exercise the views over a real log"


class StepClock:
    """The Clock port, one minute later at every call."""

    def __init__(self) -> None:
        self.at = datetime(2025, 2, 1, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(minutes=1)
        return self.at


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecorderEventStore]:
    """A SQLite log holding a project, two workspaces, a saved version and a thought."""
    log = open_sqlite_store(tmp_path / "events.db", synchronous="OFF")
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    files = LocalSlotFiles(tmp_path / "workspaces", blobs, tmp_path / "cache")
    service = Service(UnitOfWork(log, StepClock()), blobs, files, Settings(slots=("w1", "w2")))
    service.init_project("demo", "a goal for the demo", actor=ACTOR)
    service.create_workspace("a", "goal of a", REASON, actor=ACTOR)
    service.mount("a", "w1", REASON, actor=ACTOR)
    (files.path("w1") / "model.py").write_text("layers = 3\n")
    service.save_version("w1", "three layers to start", actor=ACTOR)
    service.create_workspace("b", "goal of b", REASON, actor=ACTOR, from_workspace="a")
    service.log_thought("three layers may be too few", actor=ACTOR, workspace="a")
    yield log
    log.close()


def dump(views: Views) -> dict[str, list[tuple[Any, ...]]]:
    conn = views.conn
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


def reference(store: RecorderEventStore, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with Views(tmp_path / "reference.db", store) as v:
        v.catch_up()
        return dump(v)


# --- damage ------------------------------------------------------------------------------------


class TestDamageIsRepaired:
    def test_garbage_over_views_db_is_rebuilt_from_the_log_at_open(self, store, tmp_path):
        path = tmp_path / "views.db"
        with Views(path, store) as v:
            v.catch_up()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(b"this is not a database, just garbage " * 200)

        with Views(path, store) as v:
            v.catch_up()
            assert dump(v) == reference(store, tmp_path)
            forked = v.workspace("b")
            assert forked is not None and forked["forked_from"] == "a"

    def test_garbage_written_while_open_is_rebuilt_at_the_next_catch_up(self, store, tmp_path):
        path = tmp_path / "views.db"
        with Views(path, store) as v:
            v.catch_up()
            v.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with open(path, "r+b") as f:
                f.write(b"\x00garbage" * 512)
            v.conn.execute("PRAGMA shrink_memory")  # forget cached pages, as a busy process would

            assert v.catch_up() == store.head()
            assert dump(v) == reference(store, tmp_path)
            assert path.read_bytes().startswith(b"SQLite format 3")

    def test_a_missing_table_refolds_that_view_at_open(self, store, tmp_path):
        path = tmp_path / "views.db"
        with Views(path, store) as v:
            v.catch_up()
            v.conn.execute("DROP TABLE versions")

        with Views(path, store) as v:
            assert v.position() == 0  # the workspaces view starts again ...
            v.catch_up()
            assert dump(v) == reference(store, tmp_path)  # ... and ends where it was

    def test_a_table_dropped_while_open_is_refolded_at_the_next_catch_up(self, store, tmp_path):
        with Views(tmp_path / "views.db", store) as v:
            v.catch_up()
            v.conn.execute("DROP TABLE _positions")

            v.catch_up()

            assert dump(v) == reference(store, tmp_path)

    def test_another_schema_version_starts_from_nothing(self, store, tmp_path):
        path = tmp_path / "views.db"
        with Views(path, store) as v:
            v.catch_up()
            v.conn.execute("UPDATE _meta SET value = ? WHERE key = 'schema'", (str(SCHEMA + 1),))
            v.conn.execute("CREATE TABLE leftover (x)")

        with Views(path, store) as v:
            assert v.position() == 0
            v.catch_up()
            assert dump(v) == reference(store, tmp_path)

    def test_a_changed_projection_version_refolds_only_that_projection(self, store, tmp_path):
        path = tmp_path / "views.db"
        with Views(path, store) as v:
            v.catch_up()
            v.conn.execute("UPDATE _positions SET version = 0 WHERE name = 'thoughts'")
            v.conn.execute("INSERT INTO audit (position, summary) VALUES (999, 'survives')")

        with Views(path, store) as v:
            positions = dict(v.conn.execute("SELECT name, position FROM _positions"))
            assert positions["thoughts"] == 0 and positions["audit"] == store.head()
            v.catch_up()
            assert v.thoughts()[0]["thought"] == "three layers may be too few"
            assert v.conn.execute("SELECT summary FROM audit WHERE position = 999").fetchone()


# --- sharing and reopening ---------------------------------------------------------------------


def test_two_views_on_one_file_fold_every_event_exactly_once(store, tmp_path):
    path = tmp_path / "views.db"
    with Views(path, store) as first, Views(path, store) as second:
        first.catch_up()
        second.catch_up()
        assert dump(first) == dump(second) == reference(store, tmp_path)


def test_a_view_of_the_past_stays_in_the_past(store, tmp_path):
    head = store.head()
    when = datetime(2025, 2, 1, 10, 3, 30, tzinfo=UTC)  # after the mount, before the save

    past = position_at(store, when)
    replayed = replay_views(store, past, tmp_path)
    try:
        assert 0 < past < head
        a = replayed.workspace("a")
        assert a is not None and (a["slot"], a["current_version"]) == ("w1", None)
        assert replayed.workspace("b") is None
        assert replayed.catch_up() == past  # later events stay out, even when asked
    finally:
        replayed.close()


# --- through the facade ------------------------------------------------------------------------


def test_read_your_writes_through_quipu(tmp_path):
    q = init_project(tmp_path / "proj", name="demo", goal="beat the baseline", actor=ACTOR)
    try:
        q.create_workspace("baseline", "a simple baseline", REASON)
        q.mount("baseline", "w2", REASON)
        (q.root / "workspaces" / "w2" / "train.py").write_text("print('train')\n")
        q.save_version("w2", "first training script")

        status = q.status()
        inspected = q.inspect_workspace("baseline")
    finally:
        q.close()

    assert status["project"] == {"name": "demo", "goal": "beat the baseline"}
    assert status["workspace_count"] == 1
    assert status["head_position"] > 0
    w2 = next(s for s in status["slots"] if s["slot"] == "w2")
    assert w2["workspace"] == "baseline" and w2["current_version"] == "v1"
    assert w2["dirty"] is False
    assert f"{ACTOR}: saved baseline v1" in status["state_md"].split("## Recent actions")[1]
    assert "### baseline (mounted in w2)" in status["state_md"]
    assert inspected["current_version"] == "v1" and inspected["version_total"] == 1
    assert (tmp_path / "proj" / "STATE.md").read_text() == status["state_md"]


def test_a_deleted_views_db_is_rebuilt_when_the_project_is_reopened(tmp_path):
    q = init_project(tmp_path / "proj", name="demo", goal="beat the baseline", actor=ACTOR)
    q.create_workspace("baseline", "a simple baseline", REASON)
    before = q.status()["state_md"]
    q.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path}/proj/.quipu/views.db{suffix}").unlink(missing_ok=True)

    with open_project(tmp_path / "proj", actor=ACTOR) as again:
        assert again.status()["state_md"] == before


def test_a_locked_views_db_is_not_mistaken_for_damage(store, tmp_path):
    path = tmp_path / "views.db"
    with Views(path, store) as v:
        v.catch_up()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Views(path, store, busy_timeout=0.1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Views(path, store) as v:
        assert v.position() == store.head()  # nothing was thrown away


# --- a rebuild in two processes ------------------------------------------------------------------


def _grow(store: RecorderEventStore, tmp_path: Path) -> None:
    """Add enough workspace and thought events for a rebuild to use a second process."""
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    files = LocalSlotFiles(tmp_path / "workspaces", blobs, tmp_path / "cache")
    service = Service(UnitOfWork(store, StepClock()), blobs, files, Settings(slots=("w1", "w2")))
    for i in range(12):
        service.create_workspace(f"grow-{i}", "a goal to grow the log", REASON, actor=ACTOR)
        service.log_thought(f"thought number {i} about the sweep", actor=ACTOR,
                            workspace=f"grow-{i}")
    for i in range(6):
        (files.path("w1") / "model.py").write_text(f"layers = {4 + i}\n")
        service.save_version("w1", f"try {4 + i} layers this time", actor=ACTOR)


def test_a_rebuild_in_two_processes_equals_one_in_a_single_process(
        store: RecorderEventStore, tmp_path: Path) -> None:
    _grow(store, tmp_path)
    path = store.description.removeprefix("sqlite ")
    with Views(tmp_path / "single.db", store, page_size=5) as single:
        single.rebuild()
        expected = dump(single)
    with Views(tmp_path / "split.db", store, page_size=5,
               reopen=lambda: open_sqlite_store(path)) as split:
        report = split.rebuild()
        assert report["position"] == store.head()
        assert dump(split) == expected
        assert not list(tmp_path.glob(".split.db.rebuild-*"))  # the side file is cleaned up


def test_a_failed_second_process_falls_back_to_folding_here(
        store: RecorderEventStore, tmp_path: Path) -> None:
    _grow(store, tmp_path)

    def broken() -> RecorderEventStore:
        raise RuntimeError("the second connection cannot be opened")

    with Views(tmp_path / "single.db", store, page_size=5) as single:
        single.rebuild()
        expected = dump(single)
    with Views(tmp_path / "fallback.db", store, page_size=5, reopen=broken) as fallback:
        fallback.rebuild()
        assert dump(fallback) == expected


def test_a_second_process_that_stalls_is_killed_and_its_share_folded_here(
        store: RecorderEventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forked child that stops making progress (as one can when a lock another thread held
    at the fork is never released in it) must not hold the views' lock forever."""
    import quipu.projections.views as views_module

    _grow(store, tmp_path)
    monkeypatch.setattr(views_module, "SIDE_FOLD_STALL", 2.0)

    def hangs() -> RecorderEventStore:
        threading.Event().wait()  # never returns: the child writes nothing more
        raise AssertionError("unreachable")

    with Views(tmp_path / "single.db", store, page_size=5) as single:
        single.rebuild()
        expected = dump(single)
    with Views(tmp_path / "stalled.db", store, page_size=5, reopen=hangs) as stalled:
        report = stalled.rebuild()
        assert report["position"] == store.head()
        assert dump(stalled) == expected
        assert not list(tmp_path.glob(".stalled.db.rebuild-*"))
