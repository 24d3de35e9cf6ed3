"""The shared log follower (``quipu.adapters._follow.LogFollower``) on real SQLite logs.

A small follower folds ``ThoughtLogged`` events (the other events in the log are there to be
skipped) and writes each one it folds into a journal outside itself, as an adapter's answer
would be. Whatever sequence of appends, steps, crashes (the follower dropped without ``stop``,
a half-written temporary left behind) and clean restarts happens, every event is processed at
least once, a restarted follower never goes back past the position it had saved, and its fold
is exactly the fold of the whole log. Damaged and foreign position files are ignored, and the
files the review worker, the pattern follower, the monitor and the post-run review wrote
before they shared this base still load.
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_support import FakeIndex, Project

import quipu.adapters._follow as follow_module
from quipu.adapters._follow import LogFollower
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.adapters.monitor import PostRunReviewer, RunMonitor
from quipu.adapters.patterns import PatternFollower
from quipu.adapters.reviewers import ReviewWorker
from quipu.core.errors import Unavailable
from quipu.core.messages import Event
from quipu.core.ports import NewEvent
from quipu.core.project.events import ThoughtLogged
from quipu.core.reviews.monitoring import MonitorRules
from quipu.core.runs.handlers import RunService
from quipu.core.workspaces.events import WorkspaceCreated

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Journal(LogFollower[int]):
    """Folds thoughts: counts them and writes each one it folds into ``journal``."""

    NAME: ClassVar[str] = "test follower"
    TYPES: ClassVar[tuple[str, ...]] = (ThoughtLogged.TYPE,)

    def __init__(self, store: RecorderEventStore, journal: list[tuple[int, int]], *,
                 page: int = 500, position_file: Path | None = None,
                 save_every: float = 0.0) -> None:
        super().__init__(store, tick=0.05, page=page, position_file=position_file,
                         save_every=save_every)
        self.journal = journal
        self.life = id(self)
        self.folded = 0
        self.last = 0  # position of the newest thought folded
        self.fail_at: int | None = None  # a position whose fold meets an outage once

    def fold(self, event: Event) -> None:
        if self.position == self.fail_at:
            self.fail_at = None
            raise Unavailable("the log went away for a moment", code="database_locked")
        if isinstance(event, ThoughtLogged) and event.thought == "poison":
            raise ValueError("a thought this follower cannot take")
        assert self.position > self.last, "events are folded in log order, each once per fold"
        self.folded += 1
        self.last = self.position
        self.journal.append((self.life, self.position))

    def caught_up(self) -> int:
        return self.folded

    def state_dict(self) -> dict[str, Any]:
        return {"folded": self.folded, "last": self.last}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        folded, last = int(data["folded"]), int(data["last"])
        self.folded, self.last = folded, last


@contextmanager
def sqlite_log() -> Iterator[tuple[RecorderEventStore, Path]]:
    """A fresh real log file and a directory for position files (one per hypothesis example)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_sqlite_store(Path(tmp) / "events.db")
        try:
            yield store, Path(tmp)
        finally:
            store.close()


def append(store: RecorderEventStore, thoughts: int, others: int = 0,
           text: str = "a thought") -> list[int]:
    """Append ``thoughts`` thoughts and ``others`` other events (each its own stream)."""
    batch: list[NewEvent] = []
    for _ in range(thoughts):
        batch.append(NewEvent(uuid.uuid4(), 1, ThoughtLogged(
            actor="test", reason="fill the log", at=AT, thought=text)))
    for n in range(others):
        batch.append(NewEvent(uuid.uuid4(), 1, WorkspaceCreated(
            actor="test", reason="fill the log", at=AT, workspace=f"w{n}", goal="g")))
    return store.append(batch) if batch else []


def thought_positions(store: RecorderEventStore) -> list[int]:
    return [r.position for r in store.read(after=0, limit=100_000, types=(ThoughtLogged.TYPE,))]


def saved_position(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["position"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


# --- any sequence of appends, steps, crashes and restarts ---------------------------------------

@dataclass
class Append:
    thoughts: int
    others: int


@dataclass
class Poll:
    pass


@dataclass
class Crash:
    """The follower is dropped without stop(), maybe with a half-written temporary beside."""
    torn_write: bool


@dataclass
class Restart:
    pass


@dataclass
class Outage:
    """The next event's fold meets an outage: the step fails, the event is read again."""


steps = st.lists(st.one_of(
    st.builds(Append, st.integers(0, 4), st.integers(0, 4)),
    st.just(Poll()), st.just(Poll()),
    st.builds(Crash, st.booleans()),
    st.just(Restart()),
    st.just(Outage()),
), max_size=25)


@dataclass
class Life:
    follower: Journal
    floor: int  # the position saved when this life began: it never reads at or before it
    seen: list[int] = field(default_factory=list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, page=st.integers(1, 5), throttled=st.booleans())
def test_every_event_is_processed_and_a_restart_never_goes_behind_its_saved_position(
        plan: list[Any], page: int, throttled: bool) -> None:
    with sqlite_log() as (store, tmp):
        saved = tmp / "follower.json"
        journal: list[tuple[int, int]] = []
        save_every = 3600.0 if throttled else 0.0  # throttled: saved on stop() only

        def begin() -> Life:
            follower = Journal(store, journal, page=page, position_file=saved,
                               save_every=save_every)
            return Life(follower, floor=saved_position(saved))

        life = begin()

        def poll(current: Life) -> None:
            before = current.follower.position
            count = len(journal)
            try:
                current.follower.poll_once()
            except Unavailable:
                assert current.follower.position < store.head()
            else:
                assert current.follower.position == store.head()
                assert current.follower.folded == len(thought_positions(store))
            assert current.follower.position >= max(before, current.floor)
            fresh = [p for life_id, p in journal[count:] if life_id == current.follower.life]
            assert all(p > current.floor for p in fresh), "read again behind the saved point"

        for step in plan:
            if isinstance(step, Append):
                append(store, step.thoughts, step.others)
            elif isinstance(step, Poll):
                poll(life)
            elif isinstance(step, Outage):
                later = [p for p in thought_positions(store) if p > life.follower.position]
                if later:
                    life.follower.fail_at = later[0]
                poll(life)
            elif isinstance(step, Crash):
                if step.torn_write:
                    (tmp / f".{saved.name}.99999.1.tmp").write_text('{"format": 1, "posi')
                life = begin()  # the old one is simply gone: nothing saved on its way out
            else:
                life.follower.stop()
                assert saved_position(saved) == life.follower.position or \
                    life.follower.position == 0
                life = begin()
        poll(life)
        poll(life)  # an outage in the last step is over by now
        processed = {p for _, p in journal}
        assert processed == set(thought_positions(store))  # every event at least once
        assert life.follower.folded == len(processed)  # the fold took each one once


# --- faults while following ---------------------------------------------------------------------

def test_an_event_the_fold_cannot_take_is_skipped_and_counted() -> None:
    with sqlite_log() as (store, _):
        journal: list[tuple[int, int]] = []
        append(store, 1)
        append(store, 1, text="poison")
        append(store, 2)
        follower = Journal(store, journal)
        assert follower.poll_once() == 3
        assert follower.errors == 1 and follower.position == store.head()


def test_a_follower_thread_wakes_on_an_append_and_stops_with_its_position_saved() -> None:
    from waiting import wait_until

    with sqlite_log() as (store, tmp):
        journal: list[tuple[int, int]] = []
        follower = Journal(store, journal, position_file=tmp / "f.json", save_every=3600)
        follower.tick = 3600  # only an append can wake it within the test's bound
        follower.start()
        try:
            wait_until(lambda: follower._restored, what="the first step ran")
            append(store, 2)
            wait_until(lambda: follower.folded == 2, what="the append woke the follower")
        finally:
            follower.stop()
        assert saved_position(tmp / "f.json") == store.head()


# --- damaged and foreign position files ----------------------------------------------------------

def follow_with(store: RecorderEventStore, saved: Path) -> tuple[Journal, list[tuple[int, int]]]:
    journal: list[tuple[int, int]] = []
    follower = Journal(store, journal, position_file=saved)
    follower.poll_once()
    return follower, journal


def good_file(store: RecorderEventStore, saved: Path) -> dict[str, Any]:
    follower, _ = follow_with(store, saved)
    follower.stop()
    body: dict[str, Any] = json.loads(saved.read_text())
    assert body == {"format": 1, "position": store.head(), "hash": store.hash_at(store.head()),
                    "state": {"folded": 3, "last": thought_positions(store)[-1]}}
    return body


@pytest.mark.parametrize("damage", [
    "not json", "no position", "no hash", "another format", "beyond the head",
    "another log's hash", "a fold that does not parse", "a list",
])
def test_a_damaged_or_foreign_position_file_means_folding_from_0(damage: str) -> None:
    with sqlite_log() as (store, tmp):
        saved = tmp / "follower.json"
        append(store, 3, 2)
        body = good_file(store, saved)
        text = {
            "not json": '{"format": 1, "position": ',
            "no position": json.dumps({k: v for k, v in body.items() if k != "position"}),
            "no hash": json.dumps({k: v for k, v in body.items() if k != "hash"}),
            "another format": json.dumps({**body, "format": 2}),
            "beyond the head": json.dumps({**body, "position": store.head() + 1}),
            "another log's hash": json.dumps({**body, "hash": "0" * 64}),
            "a fold that does not parse": json.dumps({**body, "state": {"folded": "many"}}),
            "a list": "[1, 2, 3]",
        }[damage]
        saved.write_text(text)
        again, journal = follow_with(store, saved)
        assert [p for _, p in journal] == thought_positions(store)  # all of it, from 0
        assert again.folded == 3 and again.position == store.head()
        again.stop()
        assert json.loads(saved.read_text()) == body  # and a good file replaces the bad one


def test_a_log_restored_from_an_older_copy_makes_the_follower_fold_from_0() -> None:
    with sqlite_log() as (store, tmp):
        saved = tmp / "follower.json"
        append(store, 2, 1)
        store.close()
        shutil.copy(tmp / "events.db", tmp / "older.db")
        store = open_sqlite_store(tmp / "events.db")
        append(store, 3, 1)
        first, _ = follow_with(store, saved)
        first.stop()
        store.close()
        for suffix in ("-wal", "-shm"):
            (tmp / f"events.db{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp / "older.db", tmp / "events.db")  # the backup comes back ...
        store = open_sqlite_store(tmp / "events.db")
        try:
            append(store, 4, 1, text="written after the restore")  # ... and grows past it
            assert store.head() >= saved_position(saved)  # the position exists, another history
            again, journal = follow_with(store, saved)
            assert [p for _, p in journal] == thought_positions(store)
            assert again.folded == 6
            shorter = open_sqlite_store(tmp / "older.db")  # a log shorter than the position
            try:
                behind, journal = follow_with(shorter, saved)
                assert behind.folded == 2
                assert [p for _, p in journal] == thought_positions(shorter)
            finally:
                shorter.close()
        finally:
            store.close()


# --- the adapters' files, written before they shared this base, still load --------------------

@pytest.fixture
def runs(project: Project) -> RunService:
    return RunService(project.service, FakeIndex(), new_id=lambda: "0001")


def anchor(project: Project) -> dict[str, Any]:
    head = project.store.head()
    return {"format": 1, "position": head, "hash": project.store.hash_at(head)}


def test_a_review_workers_saved_file_loads_and_is_written_the_same_way(
        project: Project, runs: RunService, tmp_path: Path) -> None:
    project.create("w")
    saved = tmp_path / "reviewer.json"
    old = {**anchor(project), "pending": ["0007"], "manifests": {"0007": ["w", "train", "m1"]},
           "last_ok": [["w", "train", "m0"]]}
    saved.write_text(json.dumps(old, separators=(",", ":")))
    worker = ReviewWorker(project.store, project.blobs, runs, [], worker_id="t",
                          position_file=saved)
    worker._restore()
    assert worker.position == old["position"]
    assert worker._pending == {"0007": None}
    assert worker._manifests == {"0007": ("w", "train", "m1")}
    assert worker._last_ok == {("w", "train"): "m0"}
    worker._restored = True
    worker._pending = {}  # (run 0007 is made up: nothing to take)
    project.create("another")
    assert worker.poll_once() == []
    worker.stop()
    body = json.loads(saved.read_text())
    # The same layout, a later position, and the runs in review (a key older files lack).
    assert set(body) == {*old, "reviewing"} and body["position"] == project.store.head()
    assert body["manifests"] == old["manifests"] and body["last_ok"] == old["last_ok"]


def test_a_pattern_followers_saved_file_loads_and_is_written_the_same_way(
        project: Project, tmp_path: Path) -> None:
    project.create("w")
    saved = tmp_path / "patterns.json"
    old = {**anchor(project), "wrong": [["0003", "train", "failed"], ["0004", None, "blocked"]]}
    saved.write_text(json.dumps(old, separators=(",", ":")))
    follower = PatternFollower(project.store, lambda command: None, actor="t",
                               position_file=saved)
    assert follower.poll_once() == 0
    assert follower.position == old["position"]
    assert list(follower._wrong.items()) == [("0003", ("train", "failed")),
                                             ("0004", (None, "blocked"))]
    project.create("another")
    follower.poll_once()
    follower.stop()
    body = json.loads(saved.read_text())
    assert set(body) == set(old) and body["position"] == project.store.head()
    assert body["wrong"] == old["wrong"]


def test_the_monitors_and_post_run_reviews_saved_files_load(
        project: Project, runs: RunService, tmp_path: Path) -> None:
    project.create("w")
    monitor_file, post_file = tmp_path / "monitor.json", tmp_path / "post_run.json"
    watch = {"stage": "train", "progress_at": AT.isoformat(), "points": 4,
             "stop_asked": False, "flagged": [["nan_metric", "loss"]], "seen": {"loss": [1.0]}}
    monitor_file.write_text(json.dumps({**anchor(project), "state": {
        "stages": {"0001": "train"}, "reported": {"0001": [["nan_metric", "loss"]]},
        "watches": {"0001": watch}}}))
    post_file.write_text(json.dumps({**anchor(project), "state": {"due": ["0002"]}}))
    monitor = RunMonitor(project.store, runs, MonitorRules(), position_file=monitor_file)
    monitor._restore()
    assert monitor.position == project.store.head()
    assert monitor.watches["0001"].flagged == {("nan_metric", "loss")}
    assert json.loads(json.dumps(monitor.state_dict()["watches"]["0001"])) == watch
    post = PostRunReviewer(project.store, runs, position_file=post_file)
    post._restore()
    assert post.position == project.store.head() and list(post.due) == ["0002"]


def test_a_monitor_file_half_of_which_parses_leaves_no_half_fold(
        project: Project, runs: RunService, tmp_path: Path) -> None:
    project.create("w")
    saved = tmp_path / "monitor.json"
    saved.write_text(json.dumps({**anchor(project), "state": {
        "stages": {"0001": "train"}, "watches": {"0001": {"stage": "train"}}}}))
    monitor = RunMonitor(project.store, runs, MonitorRules(), position_file=saved)
    monitor._restore()
    assert monitor.position == 0 and monitor._stages == {} and monitor.watches == {}


# --- the shared module stays shared ---------------------------------------------------------------

def test_the_shared_follower_imports_no_adapter_package() -> None:
    tree = ast.parse(inspect.getsource(follow_module))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in imported if m.startswith("quipu")}
    assert ours and all(m.startswith("quipu.core") for m in ours), ours

