"""Workspaces, their versions and tags, and who occupies each slot.

A workspace can be deleted and created again under the same name. Its version numbers keep
growing across incarnations (the aggregate never reuses one), and every version row records the
``incarnation`` it belongs to, so the view of a workspace only ever shows its live incarnation.

Within a page, rows are folded in memory (workspaces fetched once per page, versions loaded only
when a tag or prune touches an old one) and written back with ``executemany`` at the end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import sqlite_utils

from quipu.core.workspaces.events import (
    SlotClaimed,
    SlotReleased,
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
from quipu.projections._base import Folded, Indexes, chunks, placeholders, rows_as_dicts

__all__ = ["WorkspacesView", "latest_versions", "newest_version", "recent_workspaces", "slots",
           "versions", "workspace", "workspace_count", "workspaces"]

_WS_COLUMNS = ("name", "incarnation", "goal", "created_at", "created_by", "forked_from",
               "from_version", "slot", "current_number", "last_number", "version_count",
               "deleted", "last_position")
_V_COLUMNS = ("workspace", "number", "incarnation", "message", "created_at", "actor", "parent",
              "file_count", "total_bytes", "pruned", "trigger", "manifest", "position")

Row = dict[str, Any]


def _v(number: int | None) -> str | None:
    return None if number is None else f"v{number}"


_PRUNED = _V_COLUMNS.index("pruned")


class _Page:
    """The rows one page of events touches, folded in memory, written back by ``flush``."""

    def __init__(self, conn: sqlite3.Connection, names: set[str]) -> None:
        self.conn = conn
        self.ws: dict[str, Row] = {}
        for batch in chunks(sorted(names)):
            cur = conn.execute(
                f"SELECT * FROM workspaces WHERE name IN ({placeholders(len(batch))})", batch)
            self.ws.update((row["name"], row) for row in rows_as_dicts(cur))
        self.touched: set[str] = set()
        # Version rows as lists in _V_COLUMNS order: new ones, and old ones a prune touched.
        self.versions: dict[tuple[str, int], list[Any]] = {}
        self.tags: dict[tuple[str, str], int | None] = {}  # None: removed
        self.cleared: set[str] = set()  # workspaces re-created: their old tags go
        self.slots: dict[str, str | None] = {}

    def version(self, name: str, number: int) -> list[Any] | None:
        key = (name, number)
        if key not in self.versions:
            row = self.conn.execute(
                f"SELECT {', '.join(_V_COLUMNS)} FROM versions WHERE workspace = ? AND number = ?",
                key).fetchone()
            if row is None:
                return None
            self.versions[key] = list(row)
        return self.versions[key]

    def flush(self) -> None:
        c = self.conn
        c.executemany(
            f"INSERT OR REPLACE INTO workspaces ({', '.join(_WS_COLUMNS)}) "
            f"VALUES ({placeholders(len(_WS_COLUMNS))})",
            [tuple(self.ws[n][k] for k in _WS_COLUMNS) for n in sorted(self.touched)])
        c.executemany(
            f"INSERT OR REPLACE INTO versions ({', '.join(_V_COLUMNS)}) "
            f"VALUES ({placeholders(len(_V_COLUMNS))})", self.versions.values())
        c.executemany("DELETE FROM version_tags WHERE workspace = ?",
                      [(n,) for n in sorted(self.cleared)])
        c.executemany("DELETE FROM version_tags WHERE workspace = ? AND tag = ?",
                      [k for k, n in self.tags.items() if n is None])
        c.executemany("INSERT OR REPLACE INTO version_tags (workspace, tag, number) VALUES (?,?,?)",
                      [(*k, n) for k, n in self.tags.items() if n is not None])
        c.executemany("INSERT OR REPLACE INTO slots (slot, workspace) VALUES (?, ?)",
                      list(self.slots.items()))


Fold = Callable[[_Page, Row, Any, Folded], None]


def _created(page: _Page, old: Row | None, e: WorkspaceCreated, f: Folded) -> None:
    page.ws[e.workspace] = {
        "name": e.workspace, "incarnation": old["incarnation"] + 1 if old else 1,
        "goal": e.goal, "created_at": f.at, "created_by": e.actor,
        "forked_from": e.forked_from, "from_version": e.from_version, "slot": None,
        "current_number": None, "last_number": old["last_number"] if old else 0,
        "version_count": 0, "deleted": 0, "last_position": f.position}
    page.cleared.add(e.workspace)
    for key in [k for k in page.tags if k[0] == e.workspace]:
        del page.tags[key]


def _saved(page: _Page, ws: Row, e: VersionSaved, f: Folded) -> None:
    page.versions[(e.workspace, e.number)] = [
        e.workspace, e.number, ws["incarnation"], e.message, f.at, e.actor, e.parent,
        e.file_count, e.total_bytes, 0, e.trigger, e.manifest, f.position]
    ws["current_number"] = e.number
    if e.number > ws["last_number"]:
        ws["last_number"] = e.number
    ws["version_count"] += 1


def _pruned(page: _Page, ws: Row, e: VersionPruned | VersionUnpruned, f: Folded) -> None:
    v = page.version(e.workspace, e.number)
    pruned = int(isinstance(e, VersionPruned))
    if v is not None and v[_PRUNED] != pruned:
        v[_PRUNED] = pruned
        ws["version_count"] += -1 if pruned else 1


def _mounted(page: _Page, ws: Row, e: WorkspaceMounted, f: Folded) -> None:
    ws["slot"] = e.slot


def _hibernated(page: _Page, ws: Row, e: WorkspaceHibernated, f: Folded) -> None:
    ws["slot"] = None


def _rolled_back(page: _Page, ws: Row, e: SlotRolledBack, f: Folded) -> None:
    ws["current_number"] = e.number


def _deleted(page: _Page, ws: Row, e: WorkspaceDeleted, f: Folded) -> None:
    ws["deleted"], ws["slot"] = 1, None


def _tag(page: _Page, ws: Row, e: VersionTagged | VersionUntagged, f: Folded) -> None:
    page.tags[(e.workspace, e.tag)] = e.number if isinstance(e, VersionTagged) else None


_WORKSPACE_FOLDS: dict[str, Fold] = {
    VersionSaved.TYPE: _saved,
    WorkspaceMounted.TYPE: _mounted,
    WorkspaceHibernated.TYPE: _hibernated,
    SlotRolledBack.TYPE: _rolled_back,
    WorkspaceDeleted.TYPE: _deleted,
    VersionTagged.TYPE: _tag,
    VersionUntagged.TYPE: _tag,
    VersionPruned.TYPE: _pruned,
    VersionUnpruned.TYPE: _pruned,
}
"""Events that change an existing workspace: each marks it active at its position."""


class WorkspacesView:
    """Folds workspace, version, tag and slot events."""

    name: ClassVar[str] = "workspaces"
    version: ClassVar[int] = 1
    types: ClassVar[frozenset[str]] = frozenset(
        {WorkspaceCreated.TYPE, SlotClaimed.TYPE, SlotReleased.TYPE, *_WORKSPACE_FOLDS})
    tables: ClassVar[tuple[str, ...]] = ("workspaces", "versions", "version_tags", "slots")
    indexes: ClassVar[Indexes] = (("workspaces", ("deleted", "last_position")),)

    def create(self, db: sqlite_utils.Database) -> None:
        """The tables (the versions' primary key serves their queries; no extra index)."""
        db.table("workspaces").create({
            "name": str, "incarnation": int, "goal": str, "created_at": str, "created_by": str,
            "forked_from": str, "from_version": int, "slot": str, "current_number": int,
            "last_number": int, "version_count": int, "deleted": int, "last_position": int,
        }, pk="name")
        db.table("versions").create({
            "workspace": str, "number": int, "incarnation": int, "message": str,
            "created_at": str, "actor": str, "parent": int, "file_count": int,
            "total_bytes": int, "pruned": int, "trigger": str, "manifest": str, "position": int,
        }, pk=("workspace", "number"))
        db.table("version_tags").create({"workspace": str, "tag": str, "number": int},
                                        pk=("workspace", "tag"))
        db.table("slots").create({"slot": str, "workspace": str}, pk="slot")

    def apply(self, conn: sqlite3.Connection, events: Sequence[Folded]) -> None:
        """Fold a page of events."""
        page = _Page(conn, {f.event.__dict__.get("workspace", "") for f in events})
        for f in events:
            e = f.event
            if isinstance(e, SlotClaimed | SlotReleased):
                page.slots[e.slot] = e.workspace if isinstance(e, SlotClaimed) else None
                continue
            name: str = e.workspace  # type: ignore[attr-defined]
            ws = page.ws.get(name)
            if isinstance(e, WorkspaceCreated):
                _created(page, ws, e, f)
            elif ws is None:
                continue  # the aggregate never emits these for an unknown workspace
            else:
                _WORKSPACE_FOLDS[e.TYPE](page, ws, e, f)
                ws["last_position"] = f.position
            page.touched.add(name)
        page.flush()


# --- queries -----------------------------------------------------------------------------------

_WS_SELECT = """
SELECT w.name, w.goal, w.created_at, w.created_by, w.forked_from, w.from_version, w.slot,
       w.current_number, v.manifest, w.version_count, w.deleted, w.incarnation,
       (SELECT MAX(x.number) FROM versions x WHERE x.workspace = w.name
          AND x.incarnation = w.incarnation AND x.pruned = 0) AS latest_number
FROM {source} w
LEFT JOIN versions v ON v.workspace = w.name AND v.number = w.current_number
"""
_RECENT = "ORDER BY w.slot IS NULL, w.last_position DESC, w.name"


def _tags(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {n: {} for n in names}
    for batch in chunks(names):
        for ws, tag, number in conn.execute(
                "SELECT workspace, tag, number FROM version_tags "
                f"WHERE workspace IN ({placeholders(len(batch))}) ORDER BY workspace, tag",
                batch):
            out[ws][tag] = f"v{number}"
    return out


def _ws_dicts(conn: sqlite3.Connection, rows: list[Row]) -> list[dict[str, Any]]:
    tags = _tags(conn, [r["name"] for r in rows])
    return [{
        "name": r["name"], "goal": r["goal"], "created_at": r["created_at"],
        "created_by": r["created_by"], "forked_from": r["forked_from"],
        "from_version": _v(r["from_version"]), "slot": r["slot"],
        "current_version": _v(r["current_number"]), "manifest": r["manifest"],
        "latest_version": _v(r["latest_number"]), "version_count": r["version_count"],
        "tags": tags[r["name"]], "deleted": bool(r["deleted"]),
    } for r in rows]


def workspace(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """One workspace (its live or, if deleted, last incarnation), or None if never created."""
    rows = rows_as_dicts(conn.execute(_WS_SELECT.format(source="workspaces")
                                      + "WHERE w.name = ?", (name,)))
    return _ws_dicts(conn, rows)[0] if rows else None


def workspaces(conn: sqlite3.Connection, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    """Every workspace by name."""
    where = "" if include_deleted else "WHERE w.deleted = 0 "
    cur = conn.execute(_WS_SELECT.format(source="workspaces") + where + "ORDER BY w.name")
    return _ws_dicts(conn, rows_as_dicts(cur))


def recent_workspaces(conn: sqlite3.Connection, *, limit: int) -> list[dict[str, Any]]:
    """Live workspaces, mounted ones first, then the most recently active."""
    # Limit first, so the latest-version subquery runs for the few rows shown, not for all.
    source = f"(SELECT * FROM workspaces w WHERE w.deleted = 0 {_RECENT} LIMIT ?)"
    cur = conn.execute(_WS_SELECT.format(source=source) + _RECENT, (limit,))
    return _ws_dicts(conn, rows_as_dicts(cur))


def workspace_count(conn: sqlite3.Connection) -> int:
    """How many workspaces exist now (deleted ones excluded)."""
    return int(conn.execute("SELECT COUNT(*) FROM workspaces WHERE deleted = 0").fetchone()[0])


def _version_dict(row: Row, tags: list[str]) -> dict[str, Any]:
    return {
        "version": f"v{row['number']}", "number": row["number"], "message": row["message"],
        "created_at": row["created_at"], "actor": row["actor"], "parent": _v(row["parent"]),
        "file_count": row["file_count"], "total_bytes": row["total_bytes"],
        "pruned": bool(row["pruned"]), "tags": tags, "trigger": row["trigger"],
        "manifest": row["manifest"],
    }


def versions(conn: sqlite3.Connection, name: str, *, limit: int = 50, offset: int = 0,
             include_pruned: bool = False) -> tuple[list[dict[str, Any]], int]:
    """A page of the live incarnation's versions, newest first, and how many there are."""
    where = ("WHERE workspace = ? AND incarnation = "
             "(SELECT incarnation FROM workspaces WHERE name = ?)"
             + ("" if include_pruned else " AND pruned = 0"))
    total = int(conn.execute(f"SELECT COUNT(*) FROM versions {where}", (name, name)).fetchone()[0])
    rows = rows_as_dicts(conn.execute(
        f"SELECT * FROM versions {where} ORDER BY number DESC LIMIT ? OFFSET ?",
        (name, name, max(limit, 0), max(offset, 0))))
    tags: dict[int, list[str]] = {r["number"]: [] for r in rows}
    if rows:
        numbers = list(tags)
        for number, tag in conn.execute(
                "SELECT number, tag FROM version_tags WHERE workspace = ? "
                f"AND number IN ({placeholders(len(numbers))}) ORDER BY tag",
                (name, *numbers)):
            tags[number].append(tag)
    return [_version_dict(r, tags[r["number"]]) for r in rows], total


def latest_versions(conn: sqlite3.Connection, name: str, *, limit: int) -> list[dict[str, Any]]:
    """The newest unpruned versions of a workspace (for STATE.md)."""
    return versions(conn, name, limit=limit)[0]


def newest_version(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The most recently saved version of any workspace (``{workspace, number, manifest}``),
    or None before the first save."""
    row = conn.execute("SELECT workspace, number, manifest FROM versions "
                       "ORDER BY position DESC LIMIT 1").fetchone()
    return {"workspace": row[0], "number": row[1], "manifest": row[2]} if row else None


def slots(conn: sqlite3.Connection, slot_names: Sequence[str]) -> list[dict[str, Any]]:
    """Every configured slot in the given order, with its occupant and that one's version."""
    found: dict[str, Row] = {}
    for batch in chunks(list(slot_names)):
        cur = conn.execute(
            "SELECT s.slot, s.workspace, w.current_number, v.manifest FROM slots s "
            "LEFT JOIN workspaces w ON w.name = s.workspace "
            "LEFT JOIN versions v ON v.workspace = w.name AND v.number = w.current_number "
            f"WHERE s.slot IN ({placeholders(len(batch))}) AND s.workspace IS NOT NULL", batch)
        found.update((r["slot"], r) for r in rows_as_dicts(cur))
    out = []
    for name in slot_names:
        r = found.get(name)
        out.append({"slot": name, "workspace": r["workspace"] if r else None,
                    "current_version": _v(r["current_number"]) if r else None,
                    "manifest": r["manifest"] if r else None})
    return out
