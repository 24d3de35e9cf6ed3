"""Commands on workspaces, slots and versions."""

from __future__ import annotations

from dataclasses import dataclass

from quipu.core.messages import Command

__all__ = ["CreateWorkspace", "DeleteWorkspace", "Hibernate", "Mount", "PruneVersions",
           "Rollback", "SaveVersion", "TagVersion", "UntagVersion"]


@dataclass(frozen=True, kw_only=True)
class CreateWorkspace(Command):
    """Create a workspace, empty or forked from another workspace's version."""

    name: str
    goal: str
    reason: str
    actor: str
    from_workspace: str | None = None
    from_version: int | str | None = None


@dataclass(frozen=True, kw_only=True)
class Mount(Command):
    """Copy a workspace's current version into a free slot."""

    workspace: str
    slot: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class Hibernate(Command):
    """Save the slot's edits (if any), then free the slot."""

    slot: str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class SaveVersion(Command):
    """Snapshot the slot as a new version (an unchanged slot keeps its version)."""

    slot: str
    message: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class Rollback(Command):
    """Make the slot exactly a version's tree (unsaved edits are saved first)."""

    slot: str
    version: int | str
    reason: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class TagVersion(Command):
    """Name a version (protects it from pruning)."""

    workspace: str
    version: int | str
    tag: str
    reason: str | None
    actor: str


@dataclass(frozen=True, kw_only=True)
class UntagVersion(Command):
    """Remove a version's tag."""

    workspace: str
    tag: str
    reason: str | None
    actor: str


@dataclass(frozen=True, kw_only=True)
class PruneVersions(Command):
    """Soft-prune (or unprune) one version or an inclusive range."""

    workspace: str
    reason: str
    actor: str
    version: int | str | None = None
    from_version: int | str | None = None
    to_version: int | str | None = None
    unprune: bool = False


@dataclass(frozen=True, kw_only=True)
class DeleteWorkspace(Command):
    """Retire an unmounted workspace (its history stays in the log)."""

    workspace: str
    reason: str
    actor: str
