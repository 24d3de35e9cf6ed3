"""A service over SQLite, the local blob store and slot directories, across restarts.

The adapters' own behaviour is tested by their contract suites in ``tests/contracts/``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from filetree import tree, write

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.slots.local import LocalSlotFiles
from quipu.core.log import ChainBreak, verify_chain
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.handlers import Service, Settings

ACTOR = "agent-1"
REASON = "exercise slots and blobs on disk"




# --- the service over a real SQLite file -------------------------------------------------------


class FixedClock:
    def now(self) -> datetime:
        return datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def open_service(root: Path) -> Service:
    blobs = LocalBlobStore(root / "blobs")
    slots = LocalSlotFiles(root / "workspaces", blobs, root / "cache")
    return Service(UnitOfWork(open_sqlite_store(root / "events.db"), FixedClock()), blobs, slots,
                   Settings(slots=("w1", "w2")))


def test_a_project_carries_on_after_the_log_is_closed_and_reopened(tmp_path):
    first = open_service(tmp_path)
    first.create_workspace("exp", "carry on across restarts", REASON, actor=ACTOR)
    first.mount("exp", "w1", REASON, actor=ACTOR)
    write(tmp_path / "workspaces" / "w1" / "run.sh", "#!/bin/sh\n", mode=0o755)
    os.symlink("run.sh", tmp_path / "workspaces" / "w1" / "go")
    first.save_version("w1", "the first runnable script", actor=ACTOR)
    expected = tree(tmp_path / "workspaces" / "w1")
    first.store.close()

    second = open_service(tmp_path)
    second.hibernate("w1", REASON, actor=ACTOR)
    result = second.mount("exp", "w2", REASON, actor=ACTOR)

    assert result["version"] == "v1"
    assert tree(tmp_path / "workspaces" / "w2") == expected
    assert tree(tmp_path / "workspaces" / "w1") == {}
    records = second.store.read(limit=1000)
    assert [r.type for r in records] == [
        "WorkspaceCreated", "WorkspaceMounted", "SlotClaimed", "VersionSaved",
        "WorkspaceHibernated", "SlotReleased", "WorkspaceMounted", "SlotClaimed"]
    assert not any(isinstance(b, ChainBreak) for b in verify_chain(records))
    second.store.close()
