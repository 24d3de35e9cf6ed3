"""Commands about the project itself, thoughts and readers' cursors."""

from __future__ import annotations

from dataclasses import dataclass

from quipu.core.messages import Command

__all__ = ["InitProject", "LogThought", "MarkSeen"]


@dataclass(frozen=True, kw_only=True)
class InitProject(Command):
    """Record the project's name and goal (once)."""

    name: str
    goal: str
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
