"""The facade's source commands and reads: register, promote, list, get, lineage, verify,
update, retire, delete. ``quipu.app.facade.Quipu`` inherits them; commands go through its ``_write``
(the bus, then catch-up and STATE.md), reads through the views.
"""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Any

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.sources.commands import (
    DeleteSource,
    PromoteArtifact,
    RegisterSource,
    RetireSource,
    UpdateSource,
)

if TYPE_CHECKING:
    from quipu.core.messages import Command
    from quipu.core.sources.handlers import SourceService
    from quipu.projections import Views

__all__ = ["MAX_SOURCES_LISTED", "MAX_SOURCE_METADATA_CHARS", "SourceCommands"]

SOURCE_STATUSES = ("active", "retired", "deleted")
MAX_SOURCES_LISTED = 100
"""Most sources one ``list`` answer holds (a row is a few hundred characters)."""
MAX_SOURCE_METADATA_CHARS = 20_000
"""Most characters of metadata ``get`` returns whole; past it long lists are elided."""
_KEPT_ITEMS = 20
MAX_LINEAGE_RUNS = 50
"""Most consuming runs ``lineage`` lists (its count covers all)."""
MAX_LINEAGE_ORIGIN = 40
"""Most nodes of a promoted artifact's upstream ``lineage`` shows (nearest first)."""
ORIGIN_KINDS = ("output", "run", "source", "version")
"""What a promoted artifact's origin walks through: the runs, their inputs and versions and
the sources they read (not workspaces or pipeline runs, which ``get_lineage`` shows)."""


def _bounded_source(row: dict[str, Any]) -> dict[str, Any]:
    """A source as ``get`` answers it: metadata whole when small, else with every list longer
    than ``_KEPT_ITEMS`` cut (``metadata_elided`` says so; the log holds it whole)."""
    metadata = row["metadata"]
    row["metadata_elided"] = False
    if len(json.dumps(metadata)) > MAX_SOURCE_METADATA_CHARS:
        metadata = _elide(metadata)
        if len(json.dumps(metadata)) > MAX_SOURCE_METADATA_CHARS:
            metadata = {"schema_version": metadata.get("schema_version"),
                        "source": metadata.get("source"),
                        "schema": {"kind": (metadata.get("schema") or {}).get("kind")}}
        row["metadata"] = metadata
        row["metadata_elided"] = True
    return row


def _elide(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _elide(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > _KEPT_ITEMS:
        return [*map(_elide, value[:_KEPT_ITEMS]), f"… {len(value) - _KEPT_ITEMS} more"]
    if isinstance(value, str) and len(value) > 1000:
        return value[:1000] + "…"
    return value


class SourceCommands:
    """Source commands and reads over ``sources``, ``views`` and ``_write`` (the facade's)."""

    actor: str
    views: Views
    sources: SourceService

    def _write(self, command: Command) -> dict[str, Any]:  # pragma: no cover - the facade's
        raise NotImplementedError

    def register_source(self, name: str, path_or_uri: str, description: str, reason: str,
                        metadata: Any, *, format: str | None = None,
                        size_bytes: int | None = None) -> dict[str, Any]:
        """See ``SourceService.register``."""
        return self._write(RegisterSource(
            name=name, path_or_uri=path_or_uri, description=description, reason=reason,
            metadata=metadata, actor=self.actor, format=format, size_bytes=size_bytes))

    def promote_artifact(self, run_id: str, output_name: str, source_name: str, reason: str,
                         metadata: Any, *, description: str | None = None,
                         format: str | None = None,
                         size_bytes: int | None = None) -> dict[str, Any]:
        """See ``SourceService.promote``."""
        return self._write(PromoteArtifact(
            run_id=run_id, output_name=output_name, source_name=source_name, reason=reason,
            metadata=metadata, actor=self.actor, description=description, format=format,
            size_bytes=size_bytes))

    def manage_sources(self, action: str, *, name: str | None = None,
                       status: str | None = None, metadata: Any = None,
                       reason: str | None = None, limit: int = 50,
                       offset: int = 0) -> dict[str, Any]:
        """list | get | lineage | verify | update | retire | delete registered sources."""
        if action == "list":
            if status is not None and status not in SOURCE_STATUSES:
                raise InvalidInput(f"unknown status {status!r}", code="invalid_status",
                                   hint=f"use one of: {', '.join(SOURCE_STATUSES)}")
            self.views.catch_up()
            limit = max(1, min(limit, MAX_SOURCES_LISTED))
            rows, total = self.views.sources(status=status, limit=limit, offset=offset)
            return {"sources": rows, "total": total, "has_more": offset + len(rows) < total}
        if action not in ("get", "lineage", "verify", "update", "retire", "delete"):
            raise InvalidInput(f"unknown action {action!r}", code="unknown_action",
                               hint="use one of: list, get, lineage, verify, update, retire, "
                               "delete")
        if not name:
            raise InvalidInput(f"{action} needs the source's name", code="source_name_missing",
                               hint=f"manage_sources(action='{action}', name='...')")
        if action == "get":
            self.views.catch_up()
            row = self.views.source(name)
            if row is None:
                raise NotFound(f"there is no source {name!r}", code="unknown_source",
                               hint="list sources with manage_sources(action='list')")
            return _bounded_source(row)
        if action == "lineage":
            return self._source_lineage(name)
        if action == "verify":
            return self.sources.verify(name)
        if action == "update":
            if metadata is None:
                raise InvalidInput("update needs the new metadata", code="metadata_missing",
                                   hint="pass the whole metadata document; the format stays")
            return self._write(UpdateSource(name=name, metadata=metadata, reason=reason or "",
                                            actor=self.actor))
        command = RetireSource if action == "retire" else DeleteSource
        return self._write(command(name=name, reason=reason or "", actor=self.actor))


    def _source_lineage(self, name: str) -> dict[str, Any]:
        """The runs that consumed source ``name`` and, for a promoted artifact, what it came
        from: two walks of the lineage graph (``Views.lineage``), nothing of its own.

        ``{source, status, promoted_from, used_by [{run_id, label}], used_by_count,
        came_from: {nodes, edges, counts, truncated} | None, hint}``."""
        self.views.catch_up()
        row = self.views.source(name)
        if row is None:
            names = [r["name"] for r in self.views.sources(limit=1000, offset=0)[0]]
            close = difflib.get_close_matches(name, names, n=1)
            raise NotFound(f"there is no source {name!r}", code="unknown_source",
                           hint=(f"did you mean {close[0]!r}? " if close else "")
                           + "list sources with manage_sources(action='list')")
        node = f"source:{name}"
        used = self.views.lineage(node, direction="downstream", depth=1, kinds=["run"],
                                  limit=MAX_LINEAGE_RUNS + 1)
        runs = [n for n in used["nodes"] if n["id"] != node]
        origin = row.get("promoted_from")
        came_from = None
        if origin:
            up = self.views.lineage(node, direction="upstream", depth=20, kinds=ORIGIN_KINDS,
                                    limit=MAX_LINEAGE_ORIGIN)
            came_from = {k: up[k] for k in ("nodes", "edges", "counts", "truncated")}
        return {"source": name, "status": row["status"],
                "promoted_from": (f"{origin['run_id']}.{origin['output']}" if origin else None),
                "used_by": [{"run_id": n["id"].partition(":")[2], "label": n["label"]}
                            for n in runs[:MAX_LINEAGE_RUNS]],
                "used_by_count": used["counts"]["nodes"] - 1,
                "came_from": came_from,
                "hint": f"get_lineage(ref='source:{name}', direction='both') walks further"}
