"""Pattern commands: record occurrences (machinery), approve and reject (an agent)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from quipu.core.errors import InvalidInput
from quipu.core.patterns.aggregate import Pattern
from quipu.core.patterns.candidates import occurrences
from quipu.core.patterns.detection import check_detection
from quipu.core.unit_of_work import UnitOfWork

__all__ = ["OUTCOMES", "PatternService", "check_pattern_id"]

OUTCOMES = ("failed", "crashed", "stopped", "blocked")
"""How a run must have gone wrong for its findings to become patterns."""
_TEXT = 1000


def check_pattern_id(pattern_id: Any) -> str:
    """``pattern_id`` if it has the shape of one (``pat-`` + 12 hex digits), else
    ``InvalidInput(invalid_pattern_id)``."""
    if (not isinstance(pattern_id, str) or len(pattern_id) != 16
            or not pattern_id.startswith("pat-")
            or any(c not in "0123456789abcdef" for c in pattern_id[4:])):
        raise InvalidInput(f"{str(pattern_id)[:40]!r} is not a pattern id",
                           code="invalid_pattern_id",
                           hint="pattern ids look like 'pat-3f2a9c01b7de'; list them with "
                           "manage_patterns(action='list')")
    return pattern_id


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT:
        raise InvalidInput(f"{field} must be text of 1-{_TEXT} characters",
                           code="invalid_pattern_text",
                           hint=f"say in a sentence what the {field.replace('_', ' ')} is, or "
                           "leave it out")
    return " ".join(value.split())


class PatternService:
    """Handles every pattern command through the unit of work."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def record_occurrences(self, run: str, stage: str | None, outcome: str, findings: Any,
                           position: int, *, actor: str, error: str | None = None,
                           problems: Any = ()) -> dict[str, Any]:
        """Propose a candidate for each new kind of occurrence of the run, count the known
        ones, all in one transaction. Idempotent: a run or position already recorded for a
        pattern changes nothing, and a rejected pattern is not counted."""
        if outcome not in OUTCOMES:
            raise InvalidInput(f"runs that ended {outcome!r} do not make patterns",
                               code="invalid_outcome", hint=f"one of {', '.join(OUTCOMES)}")
        found = occurrences(stage=stage, findings=_mappings(findings), error=error,
                            problems=[str(p) for p in (problems or ())])
        meta = self.uow.stamp(actor, f"run {run} ended {outcome}")

        def command() -> dict[str, Any]:
            out: dict[str, list[str]] = {"proposed": [], "seen": []}
            touched = []
            for occurrence in found:
                pattern = self.uow.load(Pattern, occurrence.pattern_id)
                what = pattern.occur(meta, occurrence, run=run, outcome=outcome,
                                     position=position)
                if what != "ignored":
                    out[what].append(occurrence.pattern_id)
                    touched.append(pattern)
            if touched:
                self.uow.commit(*touched)
            return out

        return self.uow.attempt(command)

    def approve(self, pattern_id: str, reason: str, *, actor: str, detection: Any = None,
                root_cause: str | None = None,
                prevention: str | None = None) -> dict[str, Any]:
        """Approve the pattern; ``detection`` is validated first (nothing is written when it
        is refused)."""
        check_pattern_id(pattern_id)
        rule = None if detection is None else check_detection(detection)
        cause, fix = _text(root_cause, "root_cause"), _text(prevention, "prevention")
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            pattern = self.uow.load(Pattern, pattern_id)
            pattern.approve(meta, detection=rule, root_cause=cause, prevention=fix)
            position = self.uow.commit(pattern)[-1]
            return {"pattern_id": pattern_id, "status": "approved", "detection": rule,
                    "machine_checkable": rule is not None, "position": position}

        return self.uow.attempt(command)

    def reject(self, pattern_id: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Reject the pattern (rejecting it again changes nothing)."""
        check_pattern_id(pattern_id)
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            pattern = self.uow.load(Pattern, pattern_id)
            changed = pattern.reject(meta)
            position = self.uow.commit(pattern)[-1] if changed else None
            return {"pattern_id": pattern_id, "status": "rejected", "changed": changed,
                    "position": position}

        return self.uow.attempt(command)


def _mappings(findings: Any) -> Iterable[Mapping[str, Any]]:
    if not isinstance(findings, list | tuple):
        return []
    return [f for f in findings if isinstance(f, Mapping)]
