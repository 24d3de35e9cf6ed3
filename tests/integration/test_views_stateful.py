"""Incremental views == rebuilt views == replayed views, for random command sequences.

Hypothesis drives the real command service (SQLite log, local blobs and slot directories in a
temporary directory) through creates, forks, mounts, file edits, saves, rollbacks, hibernations,
tags, prunes, deletes and thoughts, refused commands included. The live views catch up after
every command. At the end:

1. the live views equal a rebuild from position 0 (every table row for row, and STATE.md bytes
   for a fixed dirty answer), also when the rebuild folds in tiny pages;
2. rebuilding twice gives identical rows;
3. ``replay_views(store, N)`` equals what the live views showed when N was the head.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.slots import LocalSlotFiles
from quipu.core.errors import QuipuError
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.aggregate import Slot, Workspace
from quipu.core.workspaces.handlers import Service, Settings
from quipu.projections import Views, replay_views

ACTOR = "agent:machine"
REASON = "a reason long enough for the service"
NAMES = ("alpha", "beta", "gamma")
SLOTS = ("w1", "w2")
TAGS = ("best", "keep")

names = st.sampled_from(NAMES)
slots = st.sampled_from(SLOTS)
numbers = st.integers(min_value=1, max_value=8)


def fixed_dirty(slot: str, manifest: str | None) -> bool:
    """A deterministic stand-in for looking at the slot's files."""
    return manifest is None or manifest[0] in "01234567"


def snapshot(views: Views) -> dict[str, Any]:
    """Everything the views hold and answer: tables row for row, queries, STATE.md bytes."""
    conn = views.conn
    tables = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    everything = views.workspaces(include_deleted=True)
    return {
        "tables": {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
                   for n in tables},
        "project": views.project(),
        "workspaces": everything,
        "versions": {w["name"]: views.versions(w["name"], limit=100, include_pruned=True)
                     for w in everything},
        "slots": views.slots(SLOTS),
        "thoughts": views.thoughts(limit=1000),
        "audit": views.audit_log(limit=1000),
        "count": views.workspace_count(),
        "state_md": views.state_md(fixed_dirty, slot_names=SLOTS).encode(),
    }


class StepClock:
    """The Clock port: 37 seconds later at every call (so minutes roll over now and then)."""

    def __init__(self) -> None:
        self.at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=37)
        return self.at


class ViewsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="quipu-views-machine-"))
        self.store = open_sqlite_store(self.tmp / "events.db", synchronous="OFF")
        blobs = LocalBlobStore(self.tmp / "blobs", fsync=False)
        self.files = LocalSlotFiles(self.tmp / "workspaces", blobs, self.tmp / "cache")
        self.service = Service(UnitOfWork(self.store, StepClock(), min_reason_length=5), blobs,
                               self.files, Settings(slots=SLOTS))
        self.service.init_project("machine", "keep the views honest", actor=ACTOR)
        self.views = Views(self.tmp / "views.db", self.store)
        self.views.catch_up()
        self.snapshots: list[tuple[int, dict[str, Any]]] = []

    def do(self, command: Any, *args: Any, **kwargs: Any) -> None:
        name = command.__name__
        try:
            command(*args, actor=ACTOR, **kwargs)
            event(f"{name}: done")
        except QuipuError as exc:
            event(f"{name}: refused ({exc.code})")  # refusals must leave no trace either
        self.views.catch_up()

    def live(self) -> list[Workspace]:
        return [ws for ws in self.service.aggregates(NAMES) if ws.exists]

    def occupied(self) -> list[str]:
        return [s for s in SLOTS if self.service.load(Slot, s).occupant is not None]

    # --- commands ------------------------------------------------------------------------------
    # One rule runs a short burst of commands picked from a weighted list, so that saves and
    # version commands are common, create/delete cycles do not crowd them out, and even a short
    # run reaches deep states. Most commands aim at what exists; ``blind`` sends arguments that
    # may not fit (most of those are refused).

    @initialize()
    def start_with_one_mounted_workspace(self) -> None:
        self.do(self.service.create_workspace, "alpha", "goal of alpha", REASON)
        self.do(self.service.mount, "alpha", "w1", REASON)

    @rule(kinds=st.lists(st.sampled_from(["edit", "version", "edit", "version", "mount",
                                          "hibernate", "create", "delete", "thought", "blind"]),
                         min_size=1, max_size=4), data=st.data())
    def commands(self, kinds: list[str], data: st.DataObject) -> None:
        for kind in kinds:
            getattr(self, f"_{kind}")(data)

    def _create(self, data: st.DataObject) -> None:
        taken = {ws.name for ws in self.live()}
        name = data.draw(st.sampled_from([n for n in NAMES if n not in taken] or list(NAMES)))
        sources = [ws for ws in self.live() if ws.versions]
        fork = data.draw(st.none() | st.sampled_from(sources)) if sources else None
        version = data.draw(st.none() | st.sampled_from(sorted(fork.versions))) if fork else None
        self.do(self.service.create_workspace, name, f"goal of {name}", REASON,
                from_workspace=fork.name if fork else None, from_version=version)

    def _mount(self, data: st.DataObject) -> None:
        idle = [w.name for w in self.live() if w.slot is None]
        free = [s for s in SLOTS if s not in self.occupied()]
        if idle and free:
            self.do(self.service.mount, data.draw(st.sampled_from(idle)),
                    data.draw(st.sampled_from(free)), REASON)

    def _edit(self, data: st.DataObject) -> None:
        if not self.occupied():
            return self._mount(data)
        slot = data.draw(st.sampled_from(self.occupied()))
        target = self.files.path(slot) / data.draw(st.sampled_from(["a.txt", "sub/b.txt"]))
        content = data.draw(st.none() | st.text(alphabet="xyz", max_size=4))
        if content is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        if data.draw(st.integers(0, 3)):  # sometimes leave the edit unsaved
            self.do(self.service.save_version, slot, "save what is in the slot")
        return None

    def _hibernate(self, data: st.DataObject) -> None:
        if self.occupied():
            self.do(self.service.hibernate, data.draw(st.sampled_from(self.occupied())), REASON)

    def _version(self, data: st.DataObject) -> None:
        candidates = [w for w in self.live() if w.versions]
        if not candidates:
            return self._edit(data)
        ws = data.draw(st.sampled_from(candidates))
        number = data.draw(st.sampled_from(sorted(ws.versions)))
        action = data.draw(st.sampled_from(["tag", "untag", "prune", "unprune", "rollback",
                                            "prune_range"]))
        if action == "tag":
            self.do(self.service.tag_version, ws.name, number, data.draw(st.sampled_from(TAGS)),
                    REASON)
        elif action == "untag":
            self.do(self.service.untag_version, ws.name, data.draw(st.sampled_from(TAGS)), REASON)
        elif action in ("prune", "unprune"):
            self.do(self.service.prune_versions, ws.name, REASON, version=number,
                    unprune=action == "unprune")
        elif action == "prune_range":
            self.do(self.service.prune_versions, ws.name, REASON, from_version=1,
                    to_version=number)
        elif ws.slot is not None:
            self.do(self.service.rollback, ws.slot, number, REASON)
        return None

    def _delete(self, data: st.DataObject) -> None:
        idle = [w.name for w in self.live() if w.slot is None]
        if idle:
            self.do(self.service.delete_workspace, data.draw(st.sampled_from(idle)), REASON)

    def _thought(self, data: st.DataObject) -> None:
        text = data.draw(st.text(alphabet="ab \n", min_size=1, max_size=6).filter(str.strip))
        names: list[str | None] = [w.name for w in self.live()] or [None]
        about = data.draw(st.none() | st.sampled_from(names))
        self.do(self.service.log_thought, text, workspace=about)

    def _blind(self, data: st.DataObject) -> None:
        command = data.draw(st.sampled_from(["mount", "save", "rollback", "hibernate", "tag",
                                             "prune", "delete", "create", "thought"]))
        name, slot, version = data.draw(names), data.draw(slots), data.draw(numbers)
        svc = self.service
        if command == "mount":
            self.do(svc.mount, name, slot, REASON)
        elif command == "save":
            self.do(svc.save_version, slot, "save what is in the slot")
        elif command == "rollback":
            self.do(svc.rollback, slot, version, REASON)
        elif command == "hibernate":
            self.do(svc.hibernate, slot, REASON)
        elif command == "tag":
            self.do(svc.tag_version, name, version, TAGS[0], REASON)
        elif command == "delete":
            self.do(svc.delete_workspace, name, REASON)
        elif command == "create":
            self.do(svc.create_workspace, name, "goal", REASON, from_workspace=data.draw(names),
                    from_version=version)
        elif command == "thought":
            self.do(svc.log_thought, " \n ", workspace=name)
        else:
            self.do(svc.prune_versions, name, REASON, version=version)

    @rule()
    def remember_what_the_views_show(self) -> None:
        self.snapshots.append((self.store.head(), snapshot(self.views)))

    # --- checks --------------------------------------------------------------------------------

    @invariant()
    def views_are_caught_up(self) -> None:
        assert self.views.position() == self.store.head()

    def teardown(self) -> None:
        event(f"log head >= {self.store.head() // 20 * 20}")
        try:
            live = snapshot(self.views)
            with Views(self.tmp / "paged.db", self.store, page_size=3) as paged:
                paged.rebuild()
                assert snapshot(paged) == live, "incremental != rebuilt in small pages"
            self.views.rebuild()
            first = snapshot(self.views)
            assert first == live, "incremental != rebuilt"
            self.views.rebuild()
            assert snapshot(self.views) == first, "two rebuilds differ"
            for head, seen in self.snapshots:
                replayed = replay_views(self.store, head, self.tmp)
                try:
                    assert snapshot(replayed) == seen, f"replay to {head} != live views then"
                finally:
                    replayed.close()
        finally:
            self.views.close()
            self.store.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


ViewsMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestIncrementalEqualsRebuiltEqualsReplayed = ViewsMachine.TestCase
