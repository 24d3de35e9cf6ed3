"""Commands on sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quipu.core.messages import Command

__all__ = ["DeleteSource", "PromoteArtifact", "RegisterSource", "RetireSource", "UpdateSource"]


@dataclass(frozen=True, kw_only=True)
class RegisterSource(Command):
    """Register a dataset under a name: a local file (checked, hashed) or a ``gs://`` URI."""

    name: str
    path_or_uri: str
    description: str
    reason: str
    metadata: Any
    actor: str
    format: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class UpdateSource(Command):
    """Replace a source's metadata (the format and the content stay)."""

    name: str
    metadata: Any
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class RetireSource(Command):
    """Retire a source: no new run may consume it."""

    name: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class DeleteSource(Command):
    """Delete a source no run consumed (refused, naming the runs, otherwise)."""

    name: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class PromoteArtifact(Command):
    """Make a succeeded run's output a named source, by reference, with its lineage."""

    run_id: str
    output_name: str
    source_name: str
    reason: str
    metadata: Any
    actor: str
    description: str | None = None
    format: str | None = None
    size_bytes: int | None = None
