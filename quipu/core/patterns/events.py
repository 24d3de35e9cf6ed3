"""Failure-pattern events: each pattern has its own stream (kind ``pattern``, keyed by its id).

These events are about patterns, not about one run, so they never carry a ``run_id`` field
(the executor's run book keys on ``run_id``): the runs a pattern came from are ``first_run``
and ``runs``. ``source_position`` is the log position of the run event that revealed the
occurrence; the follower that records occurrences reads the log in order, so a re-delivered
event (a position already recorded) changes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from quipu.core.messages import Event, register

__all__ = ["PatternApproved", "PatternProposed", "PatternRejected", "PatternSeen"]


@register("PatternProposed")
class PatternProposed(Event):
    """A new candidate pattern, from a finding (or the error) of a run that went wrong.

    ``key`` is the deduplication key (signal, source, stage and the normalised message);
    ``symptom`` the message as first seen; ``prevention`` the finding's fix, if any;
    ``finding`` the finding it came from (``Finding.as_dict()`` shape, or the run's error);
    ``outcome`` how the run went wrong (``failed``, ``crashed``, ``stopped``, ``blocked``).
    """

    pattern_id: str
    key: str
    signal: str
    source: str
    stage: str | None
    symptom: str
    severity: Literal["info", "warning", "error"]
    prevention: str | None = None
    first_run: str
    outcome: str
    finding: dict[str, Any]
    source_position: int


@register("PatternSeen")
class PatternSeen(Event):
    """A candidate or approved pattern occurred again (``runs``: the run it occurred in)."""

    pattern_id: str
    runs: list[str]
    outcome: str
    source_position: int


@register("PatternApproved")
class PatternApproved(Event):
    """An agent approved the pattern; ``detection`` (validated) makes it machine-checkable.

    ``root_cause`` and ``prevention`` are what the approver knows now (None keeps the
    candidate's). Approving an approved pattern again replaces its detection and texts.
    """

    pattern_id: str
    detection: dict[str, Any] | None = None
    root_cause: str | None = None
    prevention: str | None = None


@register("PatternRejected")
class PatternRejected(Event):
    """An agent rejected the pattern (a candidate, or an approved one that proved wrong): it
    is no longer used, and new occurrences of it are not recorded."""

    pattern_id: str
