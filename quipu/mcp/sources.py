"""The source tools: register a dataset, and list, read, verify, update, retire or delete one.

Each one parses its arguments, calls one ``Quipu`` method and returns its dict; refusals are tool
errors (``_errors.guarded``). Nothing here decides anything.

No ``from __future__ import annotations``: fastmcp reads these signatures at runtime.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastmcp import FastMCP
from pydantic import Field

from ._errors import WRITE, guarded

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

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


def register_source_tools(mcp: FastMCP, q: "Quipu") -> None:
    """Add the source tools to ``mcp``, driving the open project ``q``."""
    n = q.config.reason_min_length
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
        """Register a dataset as a named source, so runs and readers can refer to it by name.

        A local file is checked without loading it: it must be a regular file inside the
        project or its data roots (a symlink leading out is refused), and its size, format, npy
        shape and dtype, npz arrays, or csv header, delimiter, column and row counts must match
        the metadata. It is referenced by its sha256 (not copied): if the file later changes,
        using the source is refused naming both hashes. A gs:// URI is recorded unverified
        (checked once a GCS blob store exists). Every metadata problem is listed at once with
        its field path, what was expected and what was found.
        Returns {source, uri, path, sha256, size_bytes, format, verified, position}.
        Errors: invalid_metadata, metadata_mismatch, source_exists, invalid_name,
        path_outside_roots, symlink_escapes_roots, source_file_missing, source_not_a_file,
        unsupported_uri, path_missing, reason_too_short, reason_missing.
        """
        return guarded("register_source", lambda: q.register_source(
            name, path_or_uri, description, reason, metadata, format=format,
            size_bytes=size_bytes))

    @mcp.tool(annotations=WRITE)
    async def promote_artifact(
        run_id: Annotated[str, Field(description="The succeeded run (stage-...).")],
        output_name: Annotated[str, Field(description="One of the run's recorded outputs.")],
        source_name: Name,
        reason: Reason,
        metadata: Annotated[dict[str, Any], Field(description=METADATA_DOC)],
        description: Annotated[str | None, Field(description="Optional; must equal "
                               "metadata.description.")] = None,
        format: Annotated[Literal["npy", "npz", "csv", "file"] | None, Field(
            description="Optional; must equal metadata.source.format.")] = None,
        size_bytes: Annotated[int | None, Field(description="Optional; must equal "
                              "metadata.source.size_bytes.")] = None,
    ) -> dict[str, Any]:
        """Make an output of a succeeded run a named source other runs can consume by name.

        The output's stored content is referenced, not copied, and checked against the
        metadata like a registered file (size, npy shape and dtype, npz arrays, csv columns
        and rows). Its lineage is recorded with it: the run, its workspace, stage and version,
        and the exact inputs the run read. Returns {source, uri, sha256, size_bytes, format,
        promoted_from: {run_id, output, workspace, version}, position}.
        Errors: unknown_run, run_not_succeeded, unknown_output, artifact_is_a_directory,
        invalid_metadata, metadata_mismatch, source_exists, invalid_name, unknown_blob,
        blob_corrupt, reason_too_short, reason_missing.
        """
        return guarded("promote_artifact", lambda: q.promote_artifact(
            run_id, output_name, source_name, reason, metadata, description=description,
            format=format, size_bytes=size_bytes))

    @mcp.tool(annotations={**WRITE, "destructiveHint": True})
    async def manage_sources(
        action: Annotated[Literal["list", "get", "verify", "update", "retire", "delete"], Field(
            description="list: page through sources; get: one source with its metadata; "
            "verify: check its file still has the registered hash (records nothing); update: "
            "replace its metadata (the format never changes); retire: no new run may use it; "
            "delete: only a source no run consumed.")],
        name: Annotated[str | None, Field(description="The source: for every action but "
                        "list.")] = None,
        status: Annotated[Literal["active", "retired", "deleted"] | None, Field(
            description="list: only sources with this status (default: all but "
            "deleted).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="update: the whole new "
                            "metadata document.")] = None,
        reason: Annotated[str | None, Field(description=f"Why (at least {n} characters): for "
                          "update, retire and delete.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="list: how many.")] = 50,
        offset: Annotated[int, Field(ge=0, description="list: skip this many.")] = 0,
    ) -> dict[str, Any]:
        """List, read, verify, update, retire or delete registered sources.

        list returns {sources: [{name, status, format, size_bytes, sha256, uri, verified, runs
        (how many runs consumed it), description (cut at 160 characters), created_at,
        created_by}], total, has_more}; get
        returns one source with its metadata (long lists elided past 20,000 characters:
        metadata_elided); verify returns {source, sha256, verified, unchanged}.
        Errors: unknown_source, source_name_missing, unknown_action, invalid_status,
        metadata_missing, invalid_metadata, metadata_mismatch, source_format_immutable,
        source_retired, source_changed, source_file_missing, source_in_use,
        reason_too_short, reason_missing.
        """
        return guarded("manage_sources", lambda: q.manage_sources(
            action, name=name, status=status, metadata=metadata, reason=reason, limit=limit,
            offset=offset))
