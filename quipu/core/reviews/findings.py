"""A finding: one thing a checker noticed about a run, in one shape for every checker.

Output contracts, output statistics, the pre-run reviewers (static, llm, command), the
during-run monitor and the post-run review all speak in findings, so an agent reads one format
and the failure-pattern loop can deduplicate across them. A finding is small by construction
(its text fields are capped) because findings travel in events and in tool answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_FINDINGS",
    "MAX_TEXT",
    "Finding",
    "Phase",
    "Severity",
    "severity_rank",
    "worst",
]

Severity = Literal["info", "warning", "error"]
"""``error`` is what blocks (a blocking contract, a pre-run block); ``warning`` is recorded and
the run goes on; ``info`` is context."""

Phase = Literal["contract", "statistics", "pre_run", "during_run", "post_run"]
"""When the finding was made: an output contract or statistic checked as the output was saved,
a review before the run was queued, the monitor while it ran, the review after it ended."""

MAX_TEXT = 500
"""Characters kept of a finding's message and fix (longer text is cut with an ellipsis)."""

MAX_FINDINGS = 50
"""Findings one event carries at most; the rest are counted in the event, not listed."""

_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


class Finding(BaseModel):
    """One observation about a run.

    ``signal`` names what was checked in snake_case (``zero_variance``, ``undefined_name``,
    ``nan_metric``, ``reviewer_failed``, ...), ``source`` who checked it (``contract``,
    ``statistics``, ``static``, ``llm``, ``command``, ``monitor``, ``post_run``). ``stage``,
    ``output``, ``file`` and ``line`` locate it when they apply; ``fix`` says what to do;
    ``pattern_id`` names the approved failure pattern that detected it; ``evidence`` holds the
    few numbers behind it (a statistic and its threshold, a metric value).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    severity: Severity
    message: str = Field(min_length=1)
    phase: Phase
    source: str = Field(min_length=1, max_length=64)
    stage: str | None = None
    output: str | None = None
    file: str | None = None
    line: int | None = Field(default=None, ge=1)
    fix: str | None = None
    pattern_id: str | None = None
    evidence: dict[str, Any] = {}

    @field_validator("message", "fix")
    @classmethod
    def _capped(cls, value: str | None) -> str | None:
        return None if value is None else _cut(value)

    def key(self) -> tuple[str, str, str | None, str | None, str | None]:
        """What makes two findings the same observation (for deduplication)."""
        return (self.signal, self.source, self.stage, self.output, self.file)

    def as_dict(self) -> dict[str, Any]:
        """The finding as stored in an event: fields that are None or empty are left out."""
        return self.model_dump(exclude_none=True, exclude_defaults=False,
                               exclude={"evidence"} if not self.evidence else set())


def severity_rank(severity: str) -> int:
    """0 for info, 1 for warning, 2 for error (for sorting and thresholds)."""
    return _RANK[severity]


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most severe severity among ``findings``; None when there are none."""
    found: Severity | None = None
    for finding in findings:
        if found is None or _RANK[finding.severity] > _RANK[found]:
            found = finding.severity
    return found
