"""Project-wide events: the project itself, thoughts, and readers' cursors."""

from __future__ import annotations

from typing import Any

from quipu.core.messages import Event, register, upcaster

__all__ = [
    "CursorMoved",
    "HostJoined",
    "ProjectInitialized",
    "ThoughtLogged",
]


# --- project -----------------------------------------------------------------------------------


@register("ProjectInitialized")
class ProjectInitialized(Event):
    """A project was set up; its name and research goal head STATE.md."""

    name: str
    goal: str
    host: str | None = None
    slots: list[str] | None = None
    """The host that created the project and its slot names (None in logs written before
    hosts were recorded)."""


@register("HostJoined")
class HostJoined(Event):
    """Another project directory (usually on another machine) joined the shared log and blob
    store. Its slots are its own: a slot's stream is shared by every host on the log, so no
    two hosts may use the same slot name."""

    host: str
    slots: list[str]
    blobs: str


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


# --- readers -----------------------------------------------------------------------------------


@register("CursorMoved")
class CursorMoved(Event):
    """A reader (an agent, a person's terminal) has seen everything up to ``position``.

    Reading never changes state, so "new since you last looked" needs this explicit event: the
    dashboard shows what is newer than the consumer's latest cursor.
    """

    consumer: str
    position: int
