"""Source events: a dataset registered, its metadata updated, retired, deleted."""

from __future__ import annotations

from typing import Any

from quipu.core.messages import Event, register

__all__ = ["ArtifactPromoted", "SourceConsumed", "SourceDeleted", "SourceMetadataUpdated",
           "SourceRegistered", "SourceRetired", "SourceStaged"]


@register("SourceRegistered")
class SourceRegistered(Event):
    """A dataset became a named source.

    ``uri`` is what the caller gave (a path as written, or ``gs://...``); ``path`` the resolved
    local file (None for a remote URI). A local file is referenced by ``sha256`` (not copied):
    a later use re-hashes the file and refuses it if the hash differs.

    A ``gs://`` source has no ``path`` and no ``sha256`` until it is staged (``SourceStaged``).
    ``remote`` (added later with a default) is the object's fingerprint read from its metadata
    at registration, without a download: ``{generation, crc32c, md5, size}``; ``verified`` is
    then True (its size was checked). A remote source registered before objects could be read
    has ``remote`` None and ``verified`` False: its first use fixes its fingerprint.
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
    remote: dict[str, Any] | None = None


@register("SourceStaged")
class SourceStaged(Event):
    """A ``gs://`` source's object was copied once into the content-addressed blob store
    (appended with the first run that read it): that generation of the object is the blob
    ``sha256``. A later use whose object still has this ``generation`` (and ``crc32c``) reads
    the blob without downloading again; an object that changed is refused naming both."""

    source: str
    uri: str
    generation: str
    crc32c: str | None
    md5: str | None
    sha256: str
    size_bytes: int


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
