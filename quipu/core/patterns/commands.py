"""Commands on failure patterns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quipu.core.messages import Command

__all__ = ["ApprovePattern", "RecordPatternOccurrences", "RejectPattern"]


@dataclass(frozen=True, kw_only=True)
class RecordPatternOccurrences(Command):
    """A run went wrong: propose or count a pattern for each of its occurrences (machinery:
    the pattern follower; ``position`` is the log position of the run event that showed it)."""

    run: str
    stage: str | None
    outcome: str
    findings: Any
    position: int
    actor: str
    error: str | None = None
    problems: Any = ()


@dataclass(frozen=True, kw_only=True)
class ApprovePattern(Command):
    """Approve a candidate pattern, optionally with a machine-checkable detection."""

    pattern_id: str
    reason: str
    actor: str
    detection: Any = None
    root_cause: str | None = None
    prevention: str | None = None


@dataclass(frozen=True, kw_only=True)
class RejectPattern(Command):
    """Reject a pattern: it is no longer used or counted."""

    pattern_id: str
    reason: str
    actor: str
