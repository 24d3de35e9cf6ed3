"""Workspace and slot events, and the finalization-gate events on the workspace's stream."""

from __future__ import annotations

from quipu.core.messages import Event, register

__all__ = [
    "FinalizationCleared",
    "FinalizationRequired",
    "PipelineRunStarted",
    "SlotClaimed",
    "SlotReleased",
    "SlotRolledBack",
    "VersionPruned",
    "VersionSaved",
    "VersionTagged",
    "VersionUnpruned",
    "VersionUntagged",
    "WorkspaceCreated",
    "WorkspaceDeleted",
    "WorkspaceHibernated",
    "WorkspaceMounted",
]


# --- workspaces and slots ----------------------------------------------------------------------


@register("WorkspaceCreated")
class WorkspaceCreated(Event):
    """A workspace came into being, empty or forked from another workspace's version."""

    workspace: str
    goal: str
    forked_from: str | None = None
    from_version: int | None = None


@register("WorkspaceMounted")
class WorkspaceMounted(Event):
    """A workspace's version was copied into a slot for editing."""

    workspace: str
    slot: str
    version: int | None


@register("WorkspaceHibernated")
class WorkspaceHibernated(Event):
    """A workspace left its slot; its edits were saved first (see ``saved_version``)."""

    workspace: str
    slot: str
    saved_version: int | None


@register("SlotClaimed")
class SlotClaimed(Event):
    """The slot's own record that a workspace now occupies it (pairs with WorkspaceMounted)."""

    slot: str
    workspace: str


@register("SlotReleased")
class SlotReleased(Event):
    """The slot's own record that it is free again (pairs with WorkspaceHibernated)."""

    slot: str
    workspace: str


@register("WorkspaceDeleted")
class WorkspaceDeleted(Event):
    """A workspace was retired; its versions stay in the log and the blob store."""

    workspace: str


# --- versions ----------------------------------------------------------------------------------


@register("VersionSaved")
class VersionSaved(Event):
    """A content-addressed snapshot of a workspace's files became version ``number``."""

    workspace: str
    number: int
    manifest: str
    parent: int | None
    file_count: int
    total_bytes: int
    message: str
    trigger: str = "save"


@register("VersionTagged")
class VersionTagged(Event):
    """A tag now names a version and protects it from pruning."""

    workspace: str
    number: int
    tag: str


@register("VersionUntagged")
class VersionUntagged(Event):
    """A tag was removed from a version."""

    workspace: str
    number: int
    tag: str


@register("VersionPruned")
class VersionPruned(Event):
    """A version was hidden from listings; pruning is soft and undone by unprune."""

    workspace: str
    number: int


@register("VersionUnpruned")
class VersionUnpruned(Event):
    """A pruned version was brought back."""

    workspace: str
    number: int


@register("SlotRolledBack")
class SlotRolledBack(Event):
    """A slot's files were replaced by a version's tree."""

    workspace: str
    slot: str
    number: int
    files_changed: int


# --- runs ----------------------------------------------------------------------------------------
# Run events live on the run's own stream; the three "Pipeline/Finalization" events live on the
# workspace's stream, because the finalization gate is the workspace's invariant.


@register("PipelineRunStarted")
class PipelineRunStarted(Event):
    """The agent started stages of a workspace's pipeline on one saved version (workspace stream).

    ``detail`` is the structured reason: description, hypothesis, approach, min_result, goal.
    """

    workspace: str
    pipeline_run_id: str
    version: int
    stages: list[str]
    runs: dict[str, str]
    detail: dict[str, str]
    experiment_group: str | None = None


@register("FinalizationRequired")
class FinalizationRequired(Event):
    """A run of the workspace ended and holds the finalization gate (workspace stream)."""

    workspace: str
    run_id: str
    stage: str
    state: str


@register("FinalizationCleared")
class FinalizationCleared(Event):
    """A run no longer holds the gate: it was finalized, or adopted back to running."""

    workspace: str
    run_id: str
    why: str
