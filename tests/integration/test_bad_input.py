"""Bad input and hostile conditions, over a real SQLite log and real slot directories.

Every case asserts two things: the caller gets a typed error with a code and a hint, and nothing
was written: the log's head position and every file under the slots are exactly as before.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from filetree import tree as _tree

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.slots.local import LocalSlotFiles
from quipu.core.errors import Conflict, InvalidInput, NotFound, QuipuError, Unavailable
from quipu.core.log import ChainBreak, decode, verify_chain
from quipu.core.ports import EventStore, NewEvent, SlotFiles, StoredRecord
from quipu.core.runs.handlers import RunService
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.aggregate import Slot
from quipu.core.workspaces.events import VersionSaved, WorkspaceMounted
from quipu.core.workspaces.handlers import Service, Settings

ACTOR = "agent-1"
REASON = "exercise bad input handling end to end"
AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return AT




def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Files and links under ``root`` (directories left out)."""
    return _tree(root, dirs=False)


@dataclass
class Project:
    service: Service
    store: EventStore
    root: Path

    def slot(self, name: str) -> Path:
        return self.root / "workspaces" / name

    def write(self, slot: str, rel: str, text: str) -> Path:
        path = self.slot(slot) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def state(self) -> tuple[int, dict[str, tuple[str, bytes | str, int]]]:
        """What must not change: the log head and every file under every slot."""
        return self.store.head(), tree(self.root / "workspaces")


def open_project(root: Path, *, blobs: LocalBlobStore | None = None,
                 store: EventStore | None = None, slots: SlotFiles | None = None,
                 **sqlite: Any) -> Project:
    """A service over a real SQLite log in ``root``; pass ports to wrap or replace them."""
    store = store or open_sqlite_store(root / "events.db", synchronous="OFF", **sqlite)
    blobs = blobs or LocalBlobStore(root / "blobs", fsync=False)
    slots = slots or LocalSlotFiles(root / "workspaces", blobs, root / "cache")
    service = Service(UnitOfWork(store, FixedClock()), blobs, slots,
                      Settings(slots=("w1", "w2", "w3")))
    return Project(service, store, root)


def arrange(p: Project) -> None:
    """exp: mounted in w1 at v1 with an unsaved edit; idle: hibernated at v1; w2, w3 free."""
    s = p.service
    s.create_workspace("exp", "the experiment under test", REASON, actor=ACTOR)
    s.create_workspace("idle", "a workspace resting in storage", REASON, actor=ACTOR)
    s.mount("idle", "w2", REASON, actor=ACTOR)
    p.write("w2", "idle.txt", "idle work\n")
    s.hibernate("w2", REASON, actor=ACTOR)
    s.mount("exp", "w1", REASON, actor=ACTOR)
    p.write("w1", "train.py", "lr = 0.1\n")
    s.save_version("w1", "first version of training", actor=ACTOR)
    p.write("w1", "train.py", "lr = 0.01\n")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = open_project(tmp_path)
    arrange(p)
    yield p
    p.store.close()


def read_all(store: EventStore) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    while page := store.read(after=records[-1].position if records else 0, limit=500):
        records.extend(page)
    return records


def assert_log_verifies(store: EventStore) -> None:
    breaks = [b for b in verify_chain(read_all(store)) if isinstance(b, ChainBreak)]
    assert breaks == []


# --- refused input: a table of commands that must fail and write nothing -----------------------

Call = Callable[[Service], object]
LONG = "x" * 65
CASES: list[tuple[str, Call, type[QuipuError], str]] = [
    # reasons and messages
    ("create without reason",
     lambda s: s.create_workspace("new", "goal", "", actor=ACTOR), InvalidInput, "reason_missing"),
    ("create with short reason",
     lambda s: s.create_workspace("new", "goal", "because", actor=ACTOR), InvalidInput,
     "reason_too_short"),
    ("mount with short reason",
     lambda s: s.mount("idle", "w3", "why not", actor=ACTOR), InvalidInput, "reason_too_short"),
    ("save with short message",
     lambda s: s.save_version("w1", "wip", actor=ACTOR), InvalidInput, "reason_too_short"),
    ("save with blank message",
     lambda s: s.save_version("w1", "   ", actor=ACTOR), InvalidInput, "reason_missing"),
    ("hibernate without reason",
     lambda s: s.hibernate("w1", None, actor=ACTOR), InvalidInput,  # type: ignore[arg-type]
     "reason_missing"),
    ("rollback with short reason",
     lambda s: s.rollback("w1", 1, "undo", actor=ACTOR), InvalidInput, "reason_too_short"),
    ("delete with short reason",
     lambda s: s.delete_workspace("idle", "old", actor=ACTOR), InvalidInput, "reason_too_short"),
    ("prune with short reason",
     lambda s: s.prune_versions("exp", "tidy", actor=ACTOR, version=1), InvalidInput,
     "reason_too_short"),
    # names
    ("name with a slash",
     lambda s: s.create_workspace("a/b", "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("name climbing out",
     lambda s: s.create_workspace("..", "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("name with dots inside",
     lambda s: s.create_workspace("a..b", "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("name with a control character",
     lambda s: s.create_workspace("exp\x1b[2J", "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("name with a newline",
     lambda s: s.create_workspace("exp\n", "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("name over 64 characters",
     lambda s: s.create_workspace(LONG, "goal", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("fork source with a slash",
     lambda s: s.create_workspace("new", "goal", REASON, actor=ACTOR,
                                  from_workspace="../exp"), InvalidInput, "invalid_name"),
    ("mount a workspace named with a slash",
     lambda s: s.mount("../idle", "w3", REASON, actor=ACTOR), InvalidInput, "invalid_name"),
    ("tag with a slash",
     lambda s: s.tag_version("exp", 1, "best/ever", REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    ("tag over 64 characters",
     lambda s: s.tag_version("exp", 1, LONG, REASON, actor=ACTOR), InvalidInput,
     "invalid_name"),
    # unknown things
    ("unknown slot for mount",
     lambda s: s.mount("idle", "w9", REASON, actor=ACTOR), NotFound, "unknown_slot"),
    ("slot path instead of a slot name",
     lambda s: s.mount("idle", "../w1", REASON, actor=ACTOR), NotFound, "unknown_slot"),
    ("unknown slot for save",
     lambda s: s.save_version("w9", "a perfectly fine message", actor=ACTOR), NotFound,
     "unknown_slot"),
    ("unknown workspace for mount",
     lambda s: s.mount("ghost", "w3", REASON, actor=ACTOR), NotFound, "unknown_workspace"),
    ("unknown workspace to fork",
     lambda s: s.create_workspace("new", "goal", REASON, actor=ACTOR, from_workspace="ghost"),
     NotFound, "unknown_workspace"),
    ("unknown workspace to delete",
     lambda s: s.delete_workspace("ghost", REASON, actor=ACTOR), NotFound, "unknown_workspace"),
    ("unknown workspace to tag",
     lambda s: s.tag_version("ghost", 1, "best", REASON, actor=ACTOR), NotFound,
     "unknown_workspace"),
    ("unknown version to roll back to",
     lambda s: s.rollback("w1", "v7", REASON, actor=ACTOR), NotFound, "unknown_version"),
    ("unknown version to fork",
     lambda s: s.create_workspace("new", "goal", REASON, actor=ACTOR, from_workspace="exp",
                                  from_version=7), NotFound, "unknown_version"),
    ("unknown version to tag",
     lambda s: s.tag_version("exp", 7, "best", REASON, actor=ACTOR), NotFound,
     "unknown_version"),
    ("unknown version to prune",
     lambda s: s.prune_versions("exp", REASON, actor=ACTOR, version=7), NotFound,
     "unknown_version"),
    ("unknown version to diff",
     lambda s: s.diff("exp@v7"), NotFound, "unknown_version"),
    ("version that is not a version",
     lambda s: s.rollback("w1", "latest", REASON, actor=ACTOR), InvalidInput,
     "invalid_version"),
    ("version zero",
     lambda s: s.rollback("w1", 0, REASON, actor=ACTOR), InvalidInput, "invalid_version"),
    ("boolean as a version",
     lambda s: s.rollback("w1", True, REASON, actor=ACTOR), InvalidInput, "invalid_version"),
    # state that forbids the command
    ("mount into an occupied slot",
     lambda s: s.mount("idle", "w1", REASON, actor=ACTOR), Conflict, "slot_occupied"),
    ("mount a workspace that is already mounted",
     lambda s: s.mount("exp", "w3", REASON, actor=ACTOR), Conflict, "already_mounted"),
    ("delete a mounted workspace",
     lambda s: s.delete_workspace("exp", REASON, actor=ACTOR), Conflict, "workspace_mounted"),
    ("create a workspace that exists",
     lambda s: s.create_workspace("idle", "goal", REASON, actor=ACTOR), Conflict,
     "workspace_exists"),
    ("save an empty slot",
     lambda s: s.save_version("w3", "a perfectly fine message", actor=ACTOR), Conflict,
     "slot_empty"),
    ("prune the current version",
     lambda s: s.prune_versions("exp", REASON, actor=ACTOR, version=1), Conflict,
     "version_current"),
]


@pytest.mark.parametrize(("call", "error", "code"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_input_raises_a_typed_error_and_writes_nothing(project, call, error, code):
    before = project.state()

    with pytest.raises(error) as err:
        call(project.service)

    assert err.value.code == code
    assert err.value.hint, "every refusal tells the caller what to do next"
    assert project.state() == before


# --- symlinks that leave the slot --------------------------------------------------------------


class TestEscapingSymlink:
    @pytest.fixture
    def escaping(self, project, tmp_path):
        secret = tmp_path / "outside.txt"
        secret.write_text("not part of any version\n")
        os.symlink(secret, project.slot("w1") / "data.txt")
        return project

    def test_save_version_is_refused(self, escaping):
        before = escaping.state()

        with pytest.raises(InvalidInput) as err:
            escaping.service.save_version("w1", "save with a bad link", actor=ACTOR)

        assert err.value.code == "symlink_escapes_slot" and "data.txt" in str(err.value)
        assert err.value.hint
        assert escaping.state() == before

    def test_a_relative_link_climbing_out_is_refused_too(self, project):
        os.symlink("../../outside.txt", project.slot("w1") / "up.txt")
        before = project.state()

        with pytest.raises(InvalidInput) as err:
            project.service.save_version("w1", "save with a bad link", actor=ACTOR)

        assert err.value.code == "symlink_escapes_slot"
        assert project.state() == before

    def test_hibernate_is_refused_and_leaves_the_slot_as_it_was(self, escaping):
        before = escaping.state()

        with pytest.raises(InvalidInput) as err:
            escaping.service.hibernate("w1", REASON, actor=ACTOR)

        assert err.value.code == "symlink_escapes_slot"
        assert escaping.state() == before

    def test_rollback_is_refused_and_leaves_the_slot_as_it_was(self, escaping):
        before = escaping.state()

        with pytest.raises(InvalidInput) as err:
            escaping.service.rollback("w1", 1, REASON, actor=ACTOR)

        assert err.value.code == "symlink_escapes_slot"
        assert escaping.state() == before


# --- a file vanishing mid-save -----------------------------------------------------------------


class VanishingBlobs(LocalBlobStore):
    """A blob store that watches a file disappear just as it is being stored."""

    def __init__(self, root: Path, victim: str) -> None:
        super().__init__(root, fsync=False)
        self.victim = victim

    def put_file(self, path: Path) -> tuple[str, int]:
        if path.name == self.victim:
            path.unlink()
        return super().put_file(path)


def test_a_file_that_vanishes_during_a_save_is_a_conflict_and_nothing_is_recorded(tmp_path):
    p = open_project(tmp_path, blobs=VanishingBlobs(tmp_path / "blobs", "scratch.tmp"))
    arrange(p)
    p.write("w1", "scratch.tmp", "written by a process that is about to delete it\n")
    head, files = p.state()

    with pytest.raises(Conflict) as err:
        p.service.save_version("w1", "save while a job is still writing", actor=ACTOR)

    assert err.value.code == "file_vanished" and "scratch.tmp" in str(err.value)
    assert err.value.hint
    after_head, after_files = p.state()
    assert after_head == head
    del files["w1/scratch.tmp"]  # the injected fault, and nothing else, touched the slot
    assert after_files == files
    p.store.close()


# --- a locked database -------------------------------------------------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Project]:
    """A project whose SQLite log another connection holds with BEGIN EXCLUSIVE."""
    p = open_project(tmp_path, lock_timeout=1, lock_retries=1)
    arrange(p)
    holder = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield p
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        p.store.close()


def test_a_locked_log_makes_a_command_unavailable_and_writes_nothing(locked):
    before = locked.state()

    with pytest.raises(Unavailable) as err:
        locked.service.create_workspace("new", "a new line of work", REASON, actor=ACTOR)

    assert err.value.code == "database_locked" and err.value.hint
    assert locked.state() == before


def test_a_mount_into_a_locked_log_leaves_the_slot_empty(locked):
    before = locked.state()

    with pytest.raises(Unavailable) as err:
        locked.service.mount("idle", "w3", REASON, actor=ACTOR)

    assert err.value.code == "database_locked"
    assert locked.state() == before


def test_a_save_into_a_locked_log_leaves_the_edits_in_place(locked):
    before = locked.state()

    with pytest.raises(Unavailable):
        locked.service.save_version("w1", "save while the log is locked", actor=ACTOR)

    assert locked.state() == before


def test_a_rollback_into_a_locked_log_puts_the_unsaved_edits_back(locked):
    """The rollback rewrote the slot before the append failed; it restores what was there."""
    before = locked.state()

    with pytest.raises(Unavailable):
        locked.service.rollback("w1", 1, REASON, actor=ACTOR)

    assert locked.state() == before
    assert (locked.slot("w1") / "train.py").read_text() == "lr = 0.01\n"


def test_a_hibernate_into_a_locked_log_keeps_the_slot_files(locked):
    before = locked.state()

    with pytest.raises(Unavailable):
        locked.service.hibernate("w1", REASON, actor=ACTOR)

    assert locked.state() == before


# --- two services racing for one slot ----------------------------------------------------------


class BeforeFirstWrite:
    """Runs ``hook`` once, just before the first write through any wrapped port."""

    def __init__(self, hook: Callable[[], object]) -> None:
        self.hook = hook
        self.fired = False

    def __call__(self) -> None:
        if not self.fired:
            self.fired = True
            self.hook()


class HookedStore:
    """The EventStore port over a real store, pausing before the first append."""

    def __init__(self, inner: EventStore, before_write: BeforeFirstWrite) -> None:
        self.inner = inner
        self.before_write = before_write
        self.appends = 0

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        self.before_write()
        self.appends += 1
        return self.inner.append(events)

    def load(self, stream: UUID, *, after: int = 0) -> list[StoredRecord]:
        return self.inner.load(stream, after=after)

    def read(self, *, after: int = 0, limit: int = 1000, until: int | None = None,
             types: Sequence[str] = ()) -> list[StoredRecord]:
        return self.inner.read(after=after, limit=limit, until=until, types=types)

    def scan(self, *, after: int = 0, limit: int = 1000, until: int | None = None,
             types: Sequence[str] = ()) -> list[tuple[int, str, bytes]]:
        return self.inner.scan(after=after, limit=limit, until=until, types=types)

    def hash_at(self, position: int) -> str:
        return self.inner.hash_at(position)

    def wait_for_append(self, *, after: int, timeout: float) -> int:
        return self.inner.wait_for_append(after=after, timeout=timeout)

    def head(self) -> int:
        return self.inner.head()

    def close(self) -> None:
        self.inner.close()


class HookedSlots:
    """The SlotFiles port over real directories, pausing before the first change to a slot."""

    def __init__(self, inner: LocalSlotFiles, before_write: BeforeFirstWrite) -> None:
        self.inner = inner
        self.before_write = before_write

    def restore(self, slot: str, manifest: bytes) -> int:
        self.before_write()
        return self.inner.restore(slot, manifest)

    def clear(self, slot: str) -> None:
        self.before_write()
        self.inner.clear(slot)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_two_services_racing_to_mount_into_one_slot_have_exactly_one_winner(tmp_path):
    """Both decide the slot is free; the other one commits first; the loser retries and is
    refused, and the winner's files in the slot are left alone."""
    winner = open_project(tmp_path)
    arrange(winner)
    winner.service.hibernate("w1", REASON, actor=ACTOR)  # exp at v2, idle at v1: both resting
    expected_files = None

    def winner_mounts() -> None:
        nonlocal expected_files
        winner.service.mount("exp", "w3", REASON, actor=ACTOR)
        expected_files = tree(winner.slot("w3"))

    gate = BeforeFirstWrite(winner_mounts)
    loser_store = HookedStore(open_sqlite_store(tmp_path / "events.db", synchronous="OFF"),
                              gate)
    loser_blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    loser_slots = HookedSlots(
        LocalSlotFiles(tmp_path / "workspaces", loser_blobs, tmp_path / "cache-loser"), gate)
    loser = open_project(tmp_path, store=loser_store, blobs=loser_blobs, slots=loser_slots)

    with pytest.raises(Conflict) as err:
        loser.service.mount("idle", "w3", REASON, actor=ACTOR)

    assert gate.fired
    assert err.value.code == "slot_occupied"
    assert loser_store.appends == 1, "one losing append, then the reloaded retry is refused"
    assert tree(winner.slot("w3")) == expected_files == {
        "train.py": ("file", b"lr = 0.01\n", 0o644)}
    slot = winner.service.load(Slot, "w3")
    assert slot.occupant == "exp"
    mounts = [decode(r).event for r in read_all(winner.store) if r.type == "WorkspaceMounted"]
    assert [(m.workspace, m.slot) for m in mounts if isinstance(m, WorkspaceMounted)
            and m.slot == "w3"] == [("exp", "w3")]
    assert_log_verifies(winner.store)
    loser.store.close()
    winner.store.close()


class NoRunsYet:
    """The RunIndex port of a project that never ran anything."""

    def latest_output(self, workspace: str, stage: str, signal: str) -> str | None:
        return None

    def previous_finalized(self, *args: Any) -> tuple[str, float] | None:
        return None

    def best(self, *args: Any, direction: str) -> tuple[str, float] | None:
        return None


def test_a_run_whose_slot_changes_hands_during_its_retry_is_refused_not_mislabelled(tmp_path):
    """run("w1") decides on exp; before it commits, another agent hibernates exp and mounts
    idle into w1. The retry must not save idle's files as a version of exp (or run them as
    exp): it is refused with slot_changed and nothing of it is written."""
    winner = open_project(tmp_path)
    arrange(winner)
    winner.write("w1", "pipeline.yaml", "stages:\n  - name: solo\n    outputs:\n"
                 "      result: {type: json, schema: null}\n")
    winner.write("w1", "modules/solo.py", "print('solo')\n")

    def swap_the_slot() -> None:
        winner.service.hibernate("w1", REASON, actor=ACTOR)
        winner.service.mount("idle", "w1", REASON, actor=ACTOR)

    gate = BeforeFirstWrite(swap_the_slot)
    loser_store = HookedStore(open_sqlite_store(tmp_path / "events.db", synchronous="OFF"),
                              gate)
    loser = open_project(tmp_path, store=loser_store)
    runs = RunService(loser.service, NoRunsYet())
    spec = {"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.5,
            "goal_value": 0.9, "dataset_split": "test", "tolerance": 0.01,
            "context": "a run that races a hibernate"}

    with pytest.raises(Conflict) as err:
        runs.run("w1", reason="see whether the solo stage runs at all", results_spec=spec,
                 actor=ACTOR)

    assert gate.fired and err.value.code == "slot_changed"
    assert "'exp'" in err.value.message and "'idle'" in err.value.message
    events = [decode(r).event for r in read_all(winner.store)]
    assert not [e for e in events if e.TYPE in ("PipelineRunStarted", "RunRequested")]
    saves = [e for e in events if isinstance(e, VersionSaved)]
    assert not [e for e in saves if e.trigger == "run"], "no slot was saved for the run"
    loser.store.close()
    winner.store.close()
