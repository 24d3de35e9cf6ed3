"""The source tools: register a dataset, and list, read, verify, update, retire or delete one.

Each one parses its arguments, calls one ``Quipu`` method and returns its dict; refusals are tool
errors (``_errors.guarded``). Nothing here decides anything.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from ._errors import WRITE, guarded
from .workspaces import wording

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["SOURCE_TOOL_NAMES", "register_source_tools"]

SOURCE_TOOL_NAMES = ("register_source", "manage_sources", "promote_artifact")

METADATA_DOC = (
    "The strict metadata document: {schema_version: 1, description (20-4000 characters, the "
    "same text as the description argument), source: {format: npy|npz|csv|file, size_bytes, "
    "created_at: '2024-05-01T12:00:00Z', format_params: {delimiter} for csv only}, schema: "
    "{kind: tensor, arrays: {NAME: {role, shape, dtype, feature_names: {kind: list (names, as "
    "many as the last dimension) | pattern (template with {i}) | none (scalars) | sequence}}}, "
    "primary_array} for npy/npz, {kind: tabular, row_count, columns, dtypes} for csv, {kind: "
    "file, content_type} for file}. docs/sources.md has a full example of each.")


def register_source_tools(mcp: FastMCP, engine: "Engine") -> None:
    """Add the source tools to ``mcp``, driving ``engine``'s project."""
    n = wording(engine)[1]
    Reason = Annotated[str, Field(description=f"Why you register it, at least {n} characters "
                                  "(recorded in the log forever).")]
    Name = Annotated[str, Field(description="The source's name (1-64 letters, digits, '_', "
                                "'-' or '.'); unique among sources.")]

    @mcp.tool(annotations=WRITE)
    async def register_source(
        name: Name,
        path_or_uri: Annotated[str, Field(description="A file inside the project or its data "
                               "roots (relative paths start at the project root), or a "
                               "gs://bucket/object URI.")],
        description: Annotated[str, Field(description="What the data is, 20-4000 characters; "
                               "must equal metadata.description.")],
        reason: Reason,
        metadata: Annotated[dict[str, Any], Field(description=METADATA_DOC)],
        format: Annotated[Literal["npy", "npz", "csv", "file"] | None, Field(
            description="Optional; must equal metadata.source.format.")] = None,
        size_bytes: Annotated[int | None, Field(description="Optional; must equal "
                              "metadata.source.size_bytes.")] = None,
    ) -> dict[str, Any]:
        """Register a dataset (a file in the project or its data roots, or a gs:// URI) as a
        named source runs can consume. The file is checked from its headers against the
        metadata (every problem listed at its path) and referenced by sha256: if it later
        changes, using the source is refused naming both hashes. gs:// is staged at first use.
        Returns {source, uri, path, sha256, size_bytes, format, verified, position}."""
        return guarded("register_source", lambda: engine.q.register_source(
            name, path_or_uri, description, reason, metadata, format=format,
            size_bytes=size_bytes))

    @mcp.tool(annotations=WRITE)
    async def promote_artifact(
        run_id: Annotated[str, Field(description="The succeeded run (stage-...).")],
        output_name: Annotated[str, Field(description="One of the run's recorded outputs.")],
        source_name: Name,
        reason: Reason,
        metadata: Annotated[dict[str, Any], Field(description="The metadata document, as "
                            "for register_source.")],
        description: Annotated[str | None, Field(description="Optional; must equal "
                               "metadata.description.")] = None,
        format: Annotated[Literal["npy", "npz", "csv", "file"] | None, Field(
            description="Optional; must equal metadata.source.format.")] = None,
        size_bytes: Annotated[int | None, Field(description="Optional; must equal "
                              "metadata.source.size_bytes.")] = None,
    ) -> dict[str, Any]:
        """Make an output of a succeeded run a named source (its stored content referenced,
        checked against the metadata as register_source does; the run, version and inputs
        recorded as its lineage). Returns {source, uri, sha256, promoted_from, position}."""
        return guarded("promote_artifact", lambda: engine.q.promote_artifact(
            run_id, output_name, source_name, reason, metadata, description=description,
            format=format, size_bytes=size_bytes))

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def manage_sources(
        action: Annotated[Literal["list", "get", "lineage", "verify", "update", "retire",
                                  "delete"], Field(
            description="lineage: its consumers and origin; update: new metadata (never a new "
            "format); retire: no new run may use it; delete: only if no run consumed it.")],
        name: Annotated[str | None, Field(description="The source (all but list).")] = None,
        status: Annotated[Literal["active", "retired", "deleted"] | None, Field(
            description="list: only this status (default: all but deleted).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="update: the whole new "
                            "metadata document.")] = None,
        reason: Annotated[str | None, Field(description=f"Why (at least {n} characters): for "
                          "update, retire and delete.")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 50,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> dict[str, Any]:
        """List, read, trace, verify, update, retire or delete registered sources. list: {sources,
        total, has_more}; get: one source with its metadata; verify: {sha256, unchanged}."""
        return guarded("manage_sources", lambda: engine.q.manage_sources(
            action, name=name, status=status, metadata=metadata, reason=reason, limit=limit,
            offset=offset))
