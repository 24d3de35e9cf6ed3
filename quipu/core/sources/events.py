"""Source events: a dataset registered, its metadata updated, retired, deleted."""

from __future__ import annotations

from typing import Any

from quipu.core.messages import Event, register

__all__ = ["ArtifactPromoted", "SourceConsumed", "SourceDeleted", "SourceMetadataUpdated",
           "SourceRegistered", "SourceRetired"]


@register("SourceRegistered")
class SourceRegistered(Event):
    """A dataset became a named source.

    ``uri`` is what the caller gave (a path as written, or ``gs://...``); ``path`` the resolved
    local file (None for a remote URI). A local file is referenced by ``sha256`` (not copied):
    a later use re-hashes the file and refuses it if the hash differs. A remote source is
    recorded unverified (``sha256`` None, ``verified`` False) until a blob store can read it.
    """

    source: str
    uri: str
    path: str | None
    sha256: str | None
    size_bytes: int
    format: str
    description: str
    metadata: dict[str, Any]
    verified: bool


@register("SourceMetadataUpdated")
class SourceMetadataUpdated(Event):
    """A source's metadata (and so its description) was replaced; its format and content
    never change."""

    source: str
    description: str
    metadata: dict[str, Any]


@register("SourceRetired")
class SourceRetired(Event):
    """A source was retired: new runs may not consume it; runs that did keep their record."""

    source: str


@register("SourceDeleted")
class SourceDeleted(Event):
    """A source no run consumed was deleted; its name is free again, its history stays."""

    source: str


@register("SourceConsumed")
class SourceConsumed(Event):
    """A run was requested with this source as an input (appended in the same transaction as
    the run's ``RunRequested``): the lineage edge that keeps the source from being deleted.

    ``input`` is the run's input that named the source (added later with a default: older
    events have None; the run's ``RunRequested.inputs`` still say it).
    """

    source: str
    run_id: str
    workspace: str
    sha256: str | None
    input: str | None = None


@register("ArtifactPromoted")
class ArtifactPromoted(Event):
    """A succeeded run's output became a named source, by reference: the output's blob
    (``sha256``) is the source's content, nothing is copied. Its lineage is recorded with it:
    the run, its workspace, stage and version (and that version's manifest), and the exact
    inputs the run was given (``inputs``: name -> {sha256, and source or producer run})."""

    source: str
    run_id: str
    output: str
    workspace: str
    stage: str
    version: int
    manifest: str
    inputs: dict[str, dict[str, Any]]
    sha256: str
    size_bytes: int
    format: str
    description: str
    metadata: dict[str, Any]
