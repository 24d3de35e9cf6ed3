"""Commands about the project itself, thoughts and readers' cursors."""

from __future__ import annotations

from dataclasses import dataclass

from quipu.core.messages import Command

__all__ = ["InitProject", "JoinProject", "LogThought", "MarkSeen"]


@dataclass(frozen=True, kw_only=True)
class InitProject(Command):
    """Record the project's name and goal (once)."""

    name: str
    goal: str
    actor: str
    host: str | None = None
    slots: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class JoinProject(Command):
    """Record that ``host`` (with its own ``slots``) joins the project on this log."""

    host: str
    slots: tuple[str, ...]
    blobs: str
    actor: str


@dataclass(frozen=True, kw_only=True)
class LogThought(Command):
    """Write down a thought, optionally about a workspace or a run (it is its own reason)."""

    thought: str
    actor: str
    workspace: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class MarkSeen(Command):
    """Move a reader's cursor: it has seen everything up to ``position``."""

    consumer: str
    position: int
    actor: str
