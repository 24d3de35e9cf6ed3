"""The facade's failure-pattern commands and reads (``manage_patterns``) and the read the
reviewers use (``approved_patterns``). ``quipu.app.facade.Quipu`` inherits them; commands go
through its ``_write``, reads through the views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.patterns.commands import ApprovePattern, RejectPattern
from quipu.core.patterns.detection import ApprovedPattern
from quipu.core.patterns.handlers import check_pattern_id
from quipu.core.validation import did_you_mean

if TYPE_CHECKING:
    from quipu.core.messages import Command
    from quipu.projections import Views

__all__ = ["MAX_PATTERNS_LISTED", "PATTERN_ACTIONS", "PATTERN_STATUSES", "PatternCommands"]

PATTERN_ACTIONS = ("list", "get", "approve", "reject")
PATTERN_STATUSES = ("candidate", "approved", "rejected")
MAX_PATTERNS_LISTED = 50
"""Most patterns one ``list`` answer holds (a row is about 300 characters)."""


class PatternCommands:
    """``manage_patterns`` over ``views`` and ``_write`` (the facade's)."""

    actor: str
    views: Views

    def _write(self, command: Command) -> dict[str, Any]:  # pragma: no cover - the facade's
        raise NotImplementedError

    def manage_patterns(self, action: str, *, pattern_id: str | None = None,
                        reason: str | None = None, detection: Any = None,
                        root_cause: str | None = None, prevention: str | None = None,
                        status: str | None = None, stage: str | None = None,
                        limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """List, show, approve or reject failure patterns.

        ``list`` pages them (``status`` candidate|approved|rejected, ``stage``), most recently
        seen first; ``get`` shows one in full; ``approve`` (``reason``; optional
        ``detection``, ``root_cause``, ``prevention``) validates the detection before
        anything is written; ``reject`` (``reason``) ends its use.
        """
        if action not in PATTERN_ACTIONS:
            raise InvalidInput(f"unknown action {action!r}", code="unknown_action",
                               hint=f"{did_you_mean(str(action), PATTERN_ACTIONS)}use one of: "
                               f"{', '.join(PATTERN_ACTIONS)}")
        if action == "list":
            return self._list_patterns(status, stage, limit, offset)
        if not pattern_id:
            raise InvalidInput(f"{action} needs a pattern_id", code="pattern_id_required",
                               hint="list them with manage_patterns(action='list')")
        check_pattern_id(pattern_id)
        self.views.catch_up()
        row = self.views.pattern(pattern_id)
        if row is None:
            raise self._unknown_pattern(pattern_id)
        if action == "get":
            return {"pattern": row}
        if action == "approve":
            return self._write(ApprovePattern(
                pattern_id=pattern_id, reason=reason or "", actor=self.actor,
                detection=detection, root_cause=root_cause, prevention=prevention))
        return self._write(RejectPattern(pattern_id=pattern_id, reason=reason or "",
                                         actor=self.actor))

    def _list_patterns(self, status: str | None, stage: str | None, limit: int,
                       offset: int) -> dict[str, Any]:
        if status is not None and status not in PATTERN_STATUSES:
            raise InvalidInput(f"unknown status {status!r}", code="invalid_status",
                               hint=f"{did_you_mean(str(status), PATTERN_STATUSES)}use one of: "
                               f"{', '.join(PATTERN_STATUSES)}")
        limit = max(0, min(int(limit), MAX_PATTERNS_LISTED))
        offset = max(0, int(offset))
        self.views.catch_up()
        rows, total = self.views.patterns(status=status, stage=stage, limit=limit,
                                          offset=offset)
        nxt = offset + len(rows)
        return {"patterns": rows, "total": total,
                "next_offset": nxt if nxt < total else None}

    def _unknown_pattern(self, pattern_id: str) -> NotFound:
        known = self.views.pattern_ids()
        prefix = [k for k in known if k.startswith(pattern_id[:8])]
        hint = did_you_mean(pattern_id, known) or (
            f"did you mean {prefix[0]!r}? " if len(prefix) == 1 else "")
        return NotFound(f"there is no failure pattern {pattern_id!r}", code="unknown_pattern",
                        hint=f"{hint}list them with manage_patterns(action='list')")

    def approved_patterns(self, stage: str | None = None) -> list[ApprovedPattern]:
        """The approved patterns that apply to ``stage`` (all when None), ready for
        ``core.patterns.detection.match_code`` / ``match_statistics`` / ``match_metrics``
        and, through ``ApprovedPattern.context()``, for an llm review's context."""
        return [ApprovedPattern.from_row(r) for r in self.views.approved_patterns(stage=stage)]
