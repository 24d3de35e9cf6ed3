"""The Source aggregate: one registered dataset, its own stream, keyed by its name.

Keying the stream by name makes names unique the way workspace names are: a second
registration under a taken name loads the same stream and is refused (``source_exists``);
two racing registrations both write version 1 of it and one loses (optimistic concurrency).
A deleted source frees its name; a retired one keeps it.
"""

from __future__ import annotations

from typing import Any

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.errors import Conflict, NotFound
from quipu.core.messages import Event
from quipu.core.sources.events import (
    ArtifactPromoted,
    SourceConsumed,
    SourceDeleted,
    SourceMetadataUpdated,
    SourceRegistered,
    SourceRetired,
    SourceStaged,
)

__all__ = ["Source"]


class Source(Aggregate):
    """A registered dataset: where it is, its content hash, its metadata, and its status."""

    KIND = "source"
    SNAPSHOT_SCHEMA = 2
    """Every run that consumes a source appends to its stream, so a much-used source is
    snapshotted like a workspace (loading costs the same at any history length)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.exists = False
        self.retired = False
        self.uri = ""
        self.path: str | None = None
        self.sha256: str | None = None
        self.size_bytes = 0
        self.format = ""
        self.metadata: dict[str, Any] = {}
        self.consumers: list[str] = []
        """Runs that consumed this source, oldest first."""
        self.run_id: str | None = None
        self.output: str | None = None
        """For a promoted artifact: the run and the output whose blob is the content."""
        self.remote: dict[str, Any] | None = None
        """For a ``gs://`` source: the object's fingerprint when it was registered (or first
        staged, for one registered before objects could be read): generation, crc32c, md5,
        size."""
        self.staged: dict[str, Any] | None = None
        """For a ``gs://`` source: the generation last staged and its blob (sha256, size)."""

    @property
    def is_remote(self) -> bool:
        """Whether the content is a remote object (``gs://``), not a file or a run's output."""
        return self.path is None and self.run_id is None

    # --- guards --------------------------------------------------------------------------------

    def check_exists(self) -> None:
        """Raise NotFound unless the source exists now."""
        if not self.exists:
            raise NotFound(f"there is no source {self.name!r}", code="unknown_source",
                           hint="list sources with manage_sources(action='list') or "
                           "`quipu source list`; register it with register_source()")

    def check_active(self) -> None:
        """Raise unless the source exists and is not retired."""
        self.check_exists()
        if self.retired:
            raise Conflict(f"source {self.name!r} is retired", code="source_retired",
                           hint="register the data again under a new name if it is needed "
                           "again; a retired source keeps its record and its name")

    def check_unused(self) -> None:
        """Raise ``source_in_use`` naming the runs that consumed it."""
        if self.consumers:
            shown = ", ".join(self.consumers[:20])
            more = len(self.consumers) - 20
            raise Conflict(
                f"source {self.name!r} was consumed by {len(self.consumers)} run(s): {shown}"
                + (f" and {more} more" if more > 0 else ""),
                code="source_in_use",
                hint="deleting it would cut those runs' lineage; retire it instead "
                "(manage_sources(action='retire')) so no new run uses it")

    # --- decisions -----------------------------------------------------------------------------

    def register(self, meta: Meta, *, uri: str, path: str | None, sha256: str | None,
                 size_bytes: int, fmt: str, metadata: dict[str, Any],
                 remote: dict[str, Any] | None = None) -> None:
        """Record the source (``remote``: a ``gs://`` object's fingerprint); refused when the
        name is taken."""
        self.check_free()
        self.trigger(SourceRegistered(
            **meta.fields(), source=self.name, uri=uri, path=path, sha256=sha256,
            size_bytes=size_bytes, format=fmt, description=str(metadata["description"]),
            metadata=metadata, verified=sha256 is not None or remote is not None,
            remote=remote))

    def record_staged(self, meta: Meta, facts: dict[str, Any], *, sha256: str,
                      size_bytes: int) -> None:
        """Record that the object with fingerprint ``facts`` (generation, crc32c, md5) is now
        the blob ``sha256``; nothing when that generation is already recorded so."""
        self.check_active()
        if (self.staged is not None and self.staged["generation"] == facts["generation"]
                and self.staged["sha256"] == sha256):
            return
        self.trigger(SourceStaged(
            **meta.fields(), source=self.name, uri=self.uri, generation=str(facts["generation"]),
            crc32c=facts.get("crc32c"), md5=facts.get("md5"), sha256=sha256,
            size_bytes=size_bytes))

    def check_free(self) -> None:
        """Raise ``source_exists`` when the name is taken."""
        if self.exists:
            raise Conflict(f"a source named {self.name!r} already exists ({self.uri})",
                           code="source_exists",
                           hint="pick another name, or update its metadata with "
                           "manage_sources(action='update')")

    def promote(self, meta: Meta, lineage: dict[str, Any], *, sha256: str, size_bytes: int,
                metadata: dict[str, Any]) -> None:
        """Record a run's output as this source (``lineage``: run_id, output, workspace, stage,
        version, manifest, inputs); refused when the name is taken."""
        self.check_free()
        self.trigger(ArtifactPromoted(
            **meta.fields(), source=self.name, **lineage, sha256=sha256, size_bytes=size_bytes,
            format=metadata["source"]["format"], description=str(metadata["description"]),
            metadata=metadata))

    def update(self, meta: Meta, metadata: dict[str, Any]) -> None:
        """Replace the metadata; the format can never change."""
        self.check_active()
        new_format = metadata["source"]["format"]
        if new_format != self.format:
            raise Conflict(f"source {self.name!r} is {self.format}; its format cannot become "
                           f"{new_format}", code="source_format_immutable",
                           hint="a source's format is part of what it is: register the data "
                           "in the other format under a new name")
        self.trigger(SourceMetadataUpdated(**meta.fields(), source=self.name,
                                           description=str(metadata["description"]),
                                           metadata=metadata))

    def consume(self, meta: Meta, *, run_id: str, workspace: str,
                input: str | None = None) -> None:
        """Record that ``run_id`` reads this source as its input ``input`` (refused when
        retired or deleted)."""
        self.check_active()
        self.trigger(SourceConsumed(**meta.fields(), source=self.name, run_id=run_id,
                                    workspace=workspace, sha256=self.sha256, input=input))

    def retire(self, meta: Meta) -> None:
        """Retire the source (a second retire changes nothing)."""
        self.check_exists()
        if not self.retired:
            self.trigger(SourceRetired(**meta.fields(), source=self.name))

    def delete(self, meta: Meta) -> None:
        """Delete the source, unless runs consumed it."""
        self.check_exists()
        self.check_unused()
        self.trigger(SourceDeleted(**meta.fields(), source=self.name))

    # --- folding -------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event."""
        if isinstance(event, SourceRegistered):
            self.exists, self.retired = True, False
            self.uri, self.path, self.sha256 = event.uri, event.path, event.sha256
            self.size_bytes, self.format = event.size_bytes, event.format
            self.metadata = dict(event.metadata)
            self.consumers = []
            self.run_id = self.output = None
            self.remote = dict(event.remote) if event.remote is not None else None
            self.staged = None
        elif isinstance(event, SourceStaged):
            self.staged = {"generation": event.generation, "crc32c": event.crc32c,
                           "md5": event.md5, "sha256": event.sha256, "size": event.size_bytes}
            self.sha256 = event.sha256
            if self.remote is None:  # registered before objects could be read
                self.remote = {"generation": event.generation, "crc32c": event.crc32c,
                               "md5": event.md5, "size": event.size_bytes}
        elif isinstance(event, ArtifactPromoted):
            self.exists, self.retired = True, False
            self.uri, self.path, self.sha256 = f"run:{event.run_id}/{event.output}", None, \
                event.sha256
            self.size_bytes, self.format = event.size_bytes, event.format
            self.metadata = dict(event.metadata)
            self.consumers = []
            self.run_id, self.output = event.run_id, event.output
            self.remote = self.staged = None
        elif isinstance(event, SourceMetadataUpdated):
            self.metadata = dict(event.metadata)
        elif isinstance(event, SourceRetired):
            self.retired = True
        elif isinstance(event, SourceDeleted):
            self.exists = False
        elif isinstance(event, SourceConsumed):
            self.consumers.append(event.run_id)

    _STATE = ("exists", "retired", "uri", "path", "sha256", "size_bytes", "format", "metadata",
              "consumers", "run_id", "output", "remote", "staged")

    def state_dict(self) -> dict[str, Any]:
        """The folded state as plain JSON values."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Set the folded state from ``state_dict``'s output."""
        for key in self._STATE:
            setattr(self, key, data[key])
