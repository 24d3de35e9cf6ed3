"""What the unit tests share: a project over fakes of ports (an in-memory log, a fixed clock)
and real local blobs and slots in a temporary directory, and a RunIndex with set answers.

A module of its own (not ``tests/unit/conftest.py``) so that tests import it by a name no
other directory uses: ``from conftest import ...`` found whichever conftest came first on the
path. Nothing here stands in for Quipu's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filetree import tree as _tree
from filetree import write

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.eventstore import open_memory_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.adapters.slots.local import LocalSlotFiles
from quipu.core.log import Recorded, decode
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.handlers import Service, Settings

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ACTOR = "agent-1"
REASON = "exercise the service in a unit test"

Tree = dict[str, tuple[str, bytes | str, int]]


class FixedClock:
    """The Clock port, frozen at one instant."""

    def __init__(self, at: datetime = AT) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def tree(root: Path) -> Tree:
    """Everything under ``root``: path -> ("file", bytes, mode) or ("link", target, 0)."""
    return _tree(root, dirs=False)


@dataclass
class Project:
    """A service over real directories, with helpers to touch slot files and read the log."""

    service: Service
    store: RecorderEventStore
    blobs: LocalBlobStore
    slots: LocalSlotFiles
    root: Path

    def slot(self, name: str = "w1") -> Path:
        return self.slots.path(name)

    def write(self, slot: str, rel: str, content: str | bytes, mode: int | None = None) -> Path:
        return write(self.slot(slot) / rel, content, mode)

    def tree(self, slot: str = "w1") -> Tree:
        return tree(self.slot(slot))

    def events(self) -> list[Recorded]:
        return [decode(r) for r in self.store.read(limit=100_000)]

    def types(self, after: int = 0) -> list[str]:
        return [r.type for r in self.store.read(after=after, limit=100_000)]

    # Shortcuts for the arrange step of a test; the commands under test are called directly.
    def create(self, name: str, **kwargs: object) -> dict[str, object]:
        return self.service.create_workspace(name, f"goal of {name}", REASON, actor=ACTOR,
                                             **kwargs)  # type: ignore[arg-type]

    def mount(self, name: str, slot: str = "w1") -> dict[str, object]:
        return self.service.mount(name, slot, REASON, actor=ACTOR)

    def save(self, slot: str = "w1", message: str = "save the slot in a unit test") -> int:
        return int(self.service.save_version(slot, message, actor=ACTOR)["number"])

    def hibernate(self, slot: str = "w1") -> dict[str, object]:
        return self.service.hibernate(slot, REASON, actor=ACTOR)


def make_project(root: Path, blobs: LocalBlobStore | None = None) -> Project:
    """A fresh project under ``root`` (memory log, local blobs and slots)."""
    store = open_memory_store()
    blobs = blobs or LocalBlobStore(root / "blobs", fsync=False)
    slots = LocalSlotFiles(root / "workspaces", blobs, root / "cache")
    service = Service(UnitOfWork(store, FixedClock()), blobs, slots,
                      Settings(slots=("w1", "w2", "w3")))
    return Project(service, store, blobs, slots, root)


class FakeIndex:
    """The RunIndex port with answers the test sets."""

    def __init__(self) -> None:
        self.outputs: dict[tuple[str, str, str], str] = {}
        self.previous: tuple[str, float] | None = None
        self.best_run: tuple[str, float] | None = None

    def latest_output(self, workspace: str, stage: str, signal: str) -> str | None:
        return self.outputs.get((workspace, stage, signal))

    def previous_finalized(self, workspace: str, stage: str, metric: str,
                           exclude: str) -> tuple[str, float] | None:
        return self.previous

    def best(self, workspace: str, stage: str, metric: str, exclude: str, *,
             direction: str) -> tuple[str, float] | None:
        return self.best_run
