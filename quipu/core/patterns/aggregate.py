"""The Pattern aggregate: one failure pattern, its own stream keyed by its id.

A pattern is proposed once (``PatternProposed``), counted each time a run goes wrong the same
way again (``PatternSeen``), and decided by an agent: approved (with a validated detection and
what the approver knows of the root cause and prevention) or rejected. A rejected pattern is
final: it is not approved later and new occurrences of it are not recorded.
"""

from __future__ import annotations

from typing import Any

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.errors import Conflict, NotFound
from quipu.core.messages import Event
from quipu.core.patterns.candidates import Occurrence
from quipu.core.patterns.events import (
    PatternApproved,
    PatternProposed,
    PatternRejected,
    PatternSeen,
)

__all__ = ["RECENT_RUNS", "Pattern"]

RECENT_RUNS = 20
"""Runs a pattern remembers by id (the newest); ``count`` counts them all."""


class Pattern(Aggregate):
    """A failure pattern: candidate, approved or rejected, and how often it was seen."""

    KIND = "pattern"
    SNAPSHOT_SCHEMA = 1
    """A pattern seen in thousands of runs has a long stream: snapshot it like a workspace."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.status: str | None = None  # candidate | approved | rejected
        self.count = 0
        self.runs: list[str] = []
        self.last_position = 0
        self.detection: dict[str, Any] | None = None

    # --- guards --------------------------------------------------------------------------------

    def check_exists(self) -> None:
        """Raise ``unknown_pattern`` unless the pattern was proposed."""
        if self.status is None:
            raise NotFound(f"there is no failure pattern {self.name!r}", code="unknown_pattern",
                           hint="list them with manage_patterns(action='list') or "
                           "`quipu pattern list`")

    def check_not_rejected(self) -> None:
        """Raise ``pattern_rejected``: a rejected pattern stays rejected."""
        if self.status == "rejected":
            raise Conflict(f"failure pattern {self.name!r} was rejected", code="pattern_rejected",
                           hint="a rejection is final; if the failure is real after all, it "
                           "is proposed again under a new id only if its symptom differs — "
                           "log_thought() what you learned instead")

    # --- decisions -----------------------------------------------------------------------------

    def occur(self, meta: Meta, occurrence: Occurrence, *, run: str, outcome: str,
              position: int) -> str:
        """Record that ``run`` went wrong this way: ``proposed`` (new candidate), ``seen``
        (counted again) or ``ignored`` (rejected, or this run / position already recorded)."""
        if self.status is None:
            self.trigger(PatternProposed(
                **meta.fields(), pattern_id=self.name, key=occurrence.key,
                signal=occurrence.signal, source=occurrence.source, stage=occurrence.stage,
                symptom=occurrence.symptom, severity=occurrence.severity,
                prevention=occurrence.prevention, first_run=run, outcome=outcome,
                finding=occurrence.finding, source_position=position))
            return "proposed"
        if self.status == "rejected" or position <= self.last_position or run in self.runs:
            return "ignored"
        self.trigger(PatternSeen(**meta.fields(), pattern_id=self.name, runs=[run],
                                 outcome=outcome, source_position=position))
        return "seen"

    def approve(self, meta: Meta, *, detection: dict[str, Any] | None,
                root_cause: str | None, prevention: str | None) -> None:
        """Approve (again: replace the detection and texts); refused when rejected."""
        self.check_exists()
        self.check_not_rejected()
        self.trigger(PatternApproved(**meta.fields(), pattern_id=self.name,
                                     detection=detection, root_cause=root_cause,
                                     prevention=prevention))

    def reject(self, meta: Meta) -> bool:
        """Reject it; False (nothing recorded) when it already was."""
        self.check_exists()
        if self.status == "rejected":
            return False
        self.trigger(PatternRejected(**meta.fields(), pattern_id=self.name))
        return True

    # --- folding -------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event of the pattern's stream."""
        if isinstance(event, PatternProposed):
            self.status, self.count = "candidate", 1
            self.runs = [event.first_run]
            self.last_position = event.source_position
        elif isinstance(event, PatternSeen):
            self.count += 1
            self.runs = [*self.runs, *event.runs][-RECENT_RUNS:]
            self.last_position = max(self.last_position, event.source_position)
        elif isinstance(event, PatternApproved):
            self.status, self.detection = "approved", event.detection
        elif isinstance(event, PatternRejected):
            self.status = "rejected"

    _STATE = ("status", "count", "runs", "last_position", "detection")

    def state_dict(self) -> dict[str, Any]:
        """The folded state as plain JSON values."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Set the folded state from ``state_dict``'s output."""
        for key in self._STATE:
            setattr(self, key, data[key])
