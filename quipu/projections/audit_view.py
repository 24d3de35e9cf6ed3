"""Recent actions: who changed what, why and when, one line each, newest first.

Every state-changing event gets a row with a one-line summary. Thoughts have their own view and
``SlotClaimed``/``SlotReleased`` only mirror a mount or hibernate, so they are not repeated here.
Adding an event type to the audit is one entry in ``SUMMARIES``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.messages import Event
from quipu.core.project.events import HostJoined, ProjectInitialized
from quipu.core.sources.events import (
    ArtifactPromoted,
    SourceDeleted,
    SourceMetadataUpdated,
    SourceRegistered,
    SourceRetired,
)
from quipu.core.workspaces.events import (
    SlotRolledBack,
    VersionPruned,
    VersionSaved,
    VersionTagged,
    VersionUnpruned,
    VersionUntagged,
    WorkspaceCreated,
    WorkspaceDeleted,
    WorkspaceHibernated,
    WorkspaceMounted,
)
from quipu.projections._base import Folded, Indexes, rows_as_dicts

__all__ = ["SUMMARIES", "AuditView", "audit_log", "plural", "summary"]


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _created(e: WorkspaceCreated) -> str:
    fork = f" (forked from {e.forked_from}@v{e.from_version})" if e.forked_from else ""
    return f"created workspace {e.workspace}{fork}"


def _mounted(e: WorkspaceMounted) -> str:
    at = f" at v{e.version}" if e.version is not None else " (no versions yet)"
    return f"mounted {e.workspace} in {e.slot}{at}"


def _hibernated(e: WorkspaceHibernated) -> str:
    saved = f", auto-saved v{e.saved_version}" if e.saved_version is not None else ""
    return f"hibernated {e.workspace} from {e.slot}{saved}"


def _saved(e: VersionSaved) -> str:
    how = "" if e.trigger == "save" else f" ({e.trigger})"
    return (f"saved {e.workspace} v{e.number}{how}: {plural(e.file_count, 'file')}, "
            f"{plural(e.total_bytes, 'byte')}")


SUMMARIES: dict[str, Callable[[Any], str]] = {
    ProjectInitialized.TYPE: lambda e: f"initialised project {e.name}",
    HostJoined.TYPE: lambda e: f"host {e.host} joined with slots {', '.join(e.slots)}",
    WorkspaceCreated.TYPE: _created,
    WorkspaceMounted.TYPE: _mounted,
    WorkspaceHibernated.TYPE: _hibernated,
    WorkspaceDeleted.TYPE: lambda e: f"deleted workspace {e.workspace}",
    VersionSaved.TYPE: _saved,
    VersionTagged.TYPE: lambda e: f"tagged {e.workspace} v{e.number} as {e.tag}",
    VersionUntagged.TYPE: lambda e: f"removed tag {e.tag} from {e.workspace} v{e.number}",
    VersionPruned.TYPE: lambda e: f"pruned {e.workspace} v{e.number}",
    VersionUnpruned.TYPE: lambda e: f"unpruned {e.workspace} v{e.number}",
    SlotRolledBack.TYPE: lambda e: (f"rolled {e.slot} ({e.workspace}) back to v{e.number}, "
                                    f"{plural(e.files_changed, 'file')} changed"),
    SourceRegistered.TYPE: lambda e: (f"registered source {e.source} ({e.format}, "
                                      f"{plural(e.size_bytes, 'byte')}) from {e.uri[:120]}"),
    SourceMetadataUpdated.TYPE: lambda e: f"updated the metadata of source {e.source}",
    SourceRetired.TYPE: lambda e: f"retired source {e.source}",
    ArtifactPromoted.TYPE: lambda e: (f"promoted {e.run_id}.{e.output} ({e.workspace} "
                                      f"v{e.version}) to source {e.source}"),
    SourceDeleted.TYPE: lambda e: f"deleted source {e.source}",
}
"""One line per audited event type: what happened, in words."""


def summary(event: Event) -> str:
    """The one-line summary of an audited event."""
    return SUMMARIES[event.TYPE](event)


class AuditView:
    """Folds every audited event into one ``audit`` row."""

    name: ClassVar[str] = "audit"
    version: ClassVar[int] = 3
    """2: source registrations, updates, retirements and deletions are audited; 3: hosts
    joining."""
    types: ClassVar[frozenset[str]] = frozenset(SUMMARIES)
    tables: ClassVar[tuple[str, ...]] = ("audit",)
    indexes: ClassVar[Indexes] = (("audit", ("workspace", "position")),)

    def create(self, db: sqlite_utils.Database) -> None:
        """The table; ``indexes`` serves per-workspace reads."""
        db.table("audit").create({"position": int, "at": str, "actor": str, "type": str,
                            "workspace": str, "slot": str, "summary": str, "reason": str},
                           pk="position")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Insert one row per event."""
        conn.executemany(
            "INSERT OR REPLACE INTO audit (position, at, actor, type, workspace, slot, summary,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(f.position, f.at, f.event.actor, f.event.TYPE, _field(f.event, "workspace"),
              _field(f.event, "slot"), summary(f.event), f.event.reason) for f in events])


def _field(event: Event, name: str) -> Any:
    # A plain dict lookup: pydantic's __getattr__ for an absent field is slow on a hot path.
    return event.__dict__.get(name)


def audit_log(conn: sqlite3.Connection, *, limit: int = 20,
              workspace: str | None = None) -> list[dict[str, Any]]:
    """Recent actions newest first, optionally only those on one workspace."""
    where, params = ("WHERE workspace = ? ", [workspace]) if workspace is not None else ("", [])
    cur = conn.execute(
        "SELECT position, at, actor, type, workspace, slot, summary, reason FROM audit "
        f"{where}ORDER BY position DESC LIMIT ?", (*params, max(limit, 0)))
    return rows_as_dicts(cur)
