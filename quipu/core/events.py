"""Every domain event Quipu records.

Events are small frozen pydantic models with no behaviour. Each is registered under a stable
type name (never a module path) and a ``schema_version``. When an event's shape changes, its
``SCHEMA_VERSION`` goes up by one and an upcaster from the old version is registered next to it;
the stored log is never rewritten, old events are upcast when they are read.

Every event records who acted (``actor``), why (``reason``) and when (``at``, from the injected
clock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Event",
    "ProjectInitialized",
    "SlotClaimed",
    "SlotReleased",
    "SlotRolledBack",
    "ThoughtLogged",
    "VersionPruned",
    "VersionSaved",
    "VersionTagged",
    "VersionUnpruned",
    "VersionUntagged",
    "WorkspaceCreated",
    "WorkspaceDeleted",
    "WorkspaceHibernated",
    "WorkspaceMounted",
    "decode_event",
    "event_type",
    "known_types",
    "register",
    "upcaster",
]


class Event(BaseModel):
    """Base of every domain event: who acted, why, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    actor: str
    reason: str
    at: datetime


E = TypeVar("E", bound=type[Event])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register(name: str, *, schema_version: int = 1) -> Callable[[E], E]:
    """Register an event class under a stable type name and its current schema version."""

    def decorate(cls: E) -> E:
        if name in _TYPES:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.TYPE = name
        cls.SCHEMA_VERSION = schema_version
        _TYPES[name] = cls
        return cls

    return decorate


def upcaster(name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns version ``from_version`` of an event into the next one."""

    def decorate(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(name, from_version)] = fn
        return fn

    return decorate


def event_type(name: str) -> type[Event]:
    """The class registered under ``name``; ``KeyError`` if there is none."""
    return _TYPES[name]


def known_types() -> frozenset[str]:
    """All registered event type names."""
    return frozenset(_TYPES)


def decode_event(name: str, schema_version: int, data: dict[str, Any]) -> Event:
    """Build the current model of an event stored at ``schema_version``, upcasting as needed."""
    cls = _TYPES[name]
    version = schema_version
    while version < cls.SCHEMA_VERSION:
        data = _UPCASTERS[(name, version)](data)
        version += 1
    return cls.model_validate(data)


# --- project -----------------------------------------------------------------------------------


@register("ProjectInitialized")
class ProjectInitialized(Event):
    """A project was set up; its name and research goal head STATE.md."""

    name: str
    goal: str


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


# --- thoughts ----------------------------------------------------------------------------------


@register("ThoughtLogged", schema_version=2)
class ThoughtLogged(Event):
    """An agent wrote down what it was thinking, optionally about a workspace or run."""

    thought: str
    workspace: str | None = None
    run_id: str | None = None


@upcaster("ThoughtLogged", from_version=1)
def _thought_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 called the text "text" and could only attach a thought to a workspace.
    new = dict(data)
    new["thought"] = new.pop("text")
    new.setdefault("run_id", None)
    return new
