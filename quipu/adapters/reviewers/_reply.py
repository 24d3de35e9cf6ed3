"""The JSON a remote reviewer (llm, command) must answer, validated strictly.

A reply that is not valid JSON for :class:`ReviewReply` is a reviewer failure: it is never read
as free text, so a model that chats instead of deciding cannot approve (or block) a run.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quipu.core.reviews.findings import Finding
from quipu.core.reviews.review import ReviewContext, ReviewVerdict, failed

__all__ = ["REPLY_SCHEMA", "ReplyFinding", "ReviewReply", "verdict_from"]


class ReplyFinding(BaseModel):
    """One problem the reviewer found."""

    model_config = ConfigDict(extra="forbid")

    severity: Literal["info", "warning", "error"]
    message: str = Field(min_length=1, max_length=2000)
    file: str | None = Field(default=None, max_length=500)
    line: int | None = Field(default=None, ge=1)
    fix: str | None = Field(default=None, max_length=2000)


class ReviewReply(BaseModel):
    """The reviewer's whole answer: a decision, its findings, and what to change."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "warn", "block"]
    findings: list[ReplyFinding] = Field(default_factory=list, max_length=200)
    fix: str | None = Field(default=None, max_length=2000)


REPLY_SCHEMA = ReviewReply.model_json_schema()
"""The JSON schema the reviewer is told to answer with."""


def verdict_from(source: str, text: str | bytes, context: ReviewContext) -> ReviewVerdict:
    """The verdict in ``text``, or a ``reviewer_failed`` verdict when it is not valid JSON
    for ``ReviewReply`` (the reason names what was wrong, never the text itself)."""
    try:
        reply = ReviewReply.model_validate(json.loads(text))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the reply"
            why = f"the reply does not fit the review schema ({where}: {first['msg']})"
        else:
            why = f"the reply is not JSON ({str(exc).splitlines()[0][:200]})"
        return failed(source, why, stage=context.stage)
    findings = tuple(
        Finding(signal=f"{source}_finding", severity=f.severity, message=f.message,
                phase="pre_run", source=source, stage=context.stage, file=f.file,
                line=f.line, fix=f.fix)
        for f in reply.findings)
    return ReviewVerdict(reviewer=source, decision=reply.decision, findings=findings,
                         fix=reply.fix)
