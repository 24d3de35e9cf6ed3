"""Registered sources: one row per name, its status, where it is, its hash, its metadata and
how many runs consumed it.

Sources are few and their events rare, so each event is one statement. A deleted source keeps
its row (status ``deleted``) until its name is registered again; listings leave deleted
sources out unless asked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.sources.events import (
    ArtifactPromoted,
    SourceConsumed,
    SourceDeleted,
    SourceMetadataUpdated,
    SourceRegistered,
    SourceRetired,
    SourceStaged,
)
from quipu.projections._base import Folded, Indexes, rows_as_dicts

__all__ = ["COUNTED", "STATUSES", "SourcesView", "counts", "source", "sources"]

STATUSES = ("active", "retired", "deleted")
_LIST_COLUMNS = ("name", "status", "format", "size_bytes", "sha256", "uri", "verified",
                 "runs", "description", "created_at", "created_by")
MAX_LISTED_DESCRIPTION = 160
"""Characters of a description shown in a listing (``get`` shows it whole)."""


class SourcesView:
    """Folds the source events into the ``sources`` table."""

    name: ClassVar[str] = "sources"
    version: ClassVar[int] = 2
    types: ClassVar[frozenset[str]] = frozenset({
        SourceRegistered.TYPE, SourceMetadataUpdated.TYPE, SourceRetired.TYPE,
        SourceDeleted.TYPE, SourceConsumed.TYPE, ArtifactPromoted.TYPE, SourceStaged.TYPE})
    tables: ClassVar[tuple[str, ...]] = ("sources",)
    indexes: ClassVar[Indexes] = (("sources", ("status", "name")),)

    def create(self, db: sqlite_utils.Database) -> None:
        """One row per source name."""
        db.table("sources").create({
            "name": str, "status": str, "uri": str, "path": str, "sha256": str,
            "size_bytes": int, "format": str, "description": str, "metadata": str,
            "verified": int, "created_at": str, "created_by": str, "reason": str,
            "updated_at": str, "updated_by": str, "position": int, "runs": int,
            "promoted_from": str, "remote": str}, pk="name")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page of source events, one statement each."""
        for f in events:
            e = f.event
            if isinstance(e, SourceRegistered):
                conn.execute(
                    "INSERT OR REPLACE INTO sources (name, status, uri, path, sha256, size_bytes,"
                    " format, description, metadata, verified, created_at, created_by, reason,"
                    " updated_at, updated_by, position, runs, remote) VALUES"
                    " (?, 'active', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (e.source, e.uri, e.path, e.sha256, e.size_bytes, e.format, e.description,
                     _json(e.metadata), int(e.verified), f.at, e.actor, e.reason, f.at, e.actor,
                     f.position, _json(e.remote) if e.remote is not None else None))
            elif isinstance(e, SourceStaged):
                # the object's content is known now: its blob's hash, and its fingerprint
                conn.execute("UPDATE sources SET sha256 = ?, verified = 1,"
                             " remote = COALESCE(remote, ?) WHERE name = ?",
                             (e.sha256, _json({"generation": e.generation, "crc32c": e.crc32c,
                                               "md5": e.md5, "size": e.size_bytes}),
                              e.source))
            elif isinstance(e, ArtifactPromoted):
                lineage = {"run_id": e.run_id, "output": e.output, "workspace": e.workspace,
                           "stage": e.stage, "version": f"v{e.version}",
                           "manifest": e.manifest, "inputs": e.inputs}
                conn.execute(
                    "INSERT OR REPLACE INTO sources (name, status, uri, path, sha256, size_bytes,"
                    " format, description, metadata, verified, created_at, created_by, reason,"
                    " updated_at, updated_by, position, runs, promoted_from) VALUES"
                    " (?, 'active', ?, NULL, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (e.source, f"run:{e.run_id}/{e.output}", e.sha256, e.size_bytes, e.format,
                     e.description, _json(e.metadata), f.at, e.actor, e.reason, f.at, e.actor,
                     f.position, _json(lineage)))
            elif isinstance(e, SourceMetadataUpdated):
                conn.execute("UPDATE sources SET description = ?, metadata = ?, updated_at = ?,"
                             " updated_by = ? WHERE name = ?",
                             (e.description, _json(e.metadata), f.at, e.actor, e.source))
            elif isinstance(e, SourceRetired):
                conn.execute("UPDATE sources SET status = 'retired', updated_at = ?,"
                             " updated_by = ? WHERE name = ?", (f.at, e.actor, e.source))
            elif isinstance(e, SourceConsumed):
                conn.execute("UPDATE sources SET runs = runs + 1 WHERE name = ?", (e.source,))
            elif isinstance(e, SourceDeleted):
                conn.execute("UPDATE sources SET status = 'deleted', updated_at = ?,"
                             " updated_by = ? WHERE name = ?", (f.at, e.actor, e.source))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


COUNTED = frozenset({SourceRegistered.TYPE, ArtifactPromoted.TYPE, SourceRetired.TYPE,
                     SourceDeleted.TYPE})
"""The events that change ``counts`` (STATE.md's mark must move on each of them)."""


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many sources are active and retired (deleted ones are not counted): one indexed
    aggregate, whatever the number of sources."""
    found = dict(conn.execute("SELECT status, COUNT(*) FROM sources WHERE status != 'deleted'"
                              " GROUP BY status").fetchall())
    return {"active": int(found.get("active", 0)), "retired": int(found.get("retired", 0))}


def sources(conn: sqlite3.Connection, *, status: str | None = None, limit: int = 50,
            offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of sources by name (deleted ones only when ``status='deleted'``), and the total;
    descriptions are cut to ``MAX_LISTED_DESCRIPTION`` characters."""
    where, params = (("WHERE status = ?", [status]) if status is not None
                     else ("WHERE status != 'deleted'", []))
    total = conn.execute(f"SELECT COUNT(*) FROM sources {where}", params).fetchone()[0]
    cur = conn.execute(f"SELECT {', '.join(_LIST_COLUMNS)} FROM sources {where} ORDER BY name"
                       " LIMIT ? OFFSET ?", (*params, max(limit, 0), max(offset, 0)))
    rows = rows_as_dicts(cur)
    for row in rows:
        row["verified"] = bool(row["verified"])
        text = row["description"] or ""
        if len(text) > MAX_LISTED_DESCRIPTION:
            row["description"] = text[:MAX_LISTED_DESCRIPTION] + "…"
    return rows, int(total)


def source(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """One source with its full metadata (a deleted one too, with ``status: deleted``)."""
    cur = conn.execute("SELECT * FROM sources WHERE name = ?", (name,))
    rows = rows_as_dicts(cur)
    if not rows:
        return None
    row = rows[0]
    row["verified"] = bool(row["verified"])
    row["metadata"] = json.loads(row["metadata"])
    row["promoted_from"] = json.loads(row["promoted_from"]) if row["promoted_from"] else None
    row["object"] = json.loads(row.pop("remote")) if row.get("remote") else None
    return row
