"""The pre-run review as data: what a reviewer is shown, what it answers, how answers combine.

A reviewer (``core.ports.Reviewer``) is handed a :class:`ReviewContext` (the stage's code and
config, the diff since the stage last succeeded, the structured reason, the results spec and
the approved failure patterns) and answers a :class:`ReviewVerdict`. The review adapter runs
the configured reviewers (``static`` first) and :func:`combine` turns their verdicts into the
one decision ``ReviewCompleted`` records. A reviewer that failed (down, slow, a reply that is
not the JSON asked for) answers :func:`failed` instead: a ``reviewer_failed`` finding, and the
project's fail-open/fail-closed setting decides what it does to the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from quipu.core.reviews.findings import MAX_FINDINGS, MAX_TEXT, Finding, severity_rank

__all__ = [
    "REVIEWER_FAILED",
    "Decision",
    "Outcome",
    "ReviewContext",
    "ReviewVerdict",
    "combine",
    "decision_for",
    "failed",
]

Decision = Literal["approve", "warn", "block"]

REVIEWER_FAILED = "reviewer_failed"
"""The signal of a finding that says a reviewer could not give an answer."""

_DECISION_RANK: dict[str, int] = {"approve": 0, "warn": 1, "block": 2}


@dataclass(frozen=True)
class ReviewContext:
    """Everything a reviewer looks at for one run (JSON-able through :meth:`as_json`).

    ``files`` maps workspace-relative paths to the text of the version's reviewable files
    (Python modules, ``pipeline.yaml``, configs); ``pipeline`` is ``pipeline.yaml``'s text.
    ``diff`` is a unified diff of those files since the stage's last succeeded run (None when
    it never succeeded). ``patterns`` are the approved failure patterns for the stage.
    """

    run_id: str
    workspace: str
    stage: str
    version: int
    entrypoint: str
    files: Mapping[str, str]
    pipeline: str | None
    config: Mapping[str, Any]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    results_spec: Mapping[str, Any]
    reason: Mapping[str, str]
    diff: str | None = None
    patterns: Sequence[Mapping[str, Any]] = ()

    def as_json(self) -> dict[str, Any]:
        """The context as plain JSON values (what the llm and command reviewers are sent)."""
        return {
            "run_id": self.run_id, "workspace": self.workspace, "stage": self.stage,
            "version": self.version, "entrypoint": self.entrypoint, "files": dict(self.files),
            "pipeline": self.pipeline, "config": dict(self.config),
            "inputs": dict(self.inputs), "outputs": dict(self.outputs),
            "results_spec": dict(self.results_spec), "reason": dict(self.reason),
            "diff": self.diff, "patterns": [dict(p) for p in self.patterns],
        }


@dataclass(frozen=True)
class ReviewVerdict:
    """One reviewer's answer: its decision, its findings and what to change."""

    reviewer: str
    decision: Decision
    findings: tuple[Finding, ...] = ()
    fix: str | None = None

    @property
    def reviewer_failed(self) -> bool:
        """Whether this is the record of a reviewer that gave no real answer."""
        return any(f.signal == REVIEWER_FAILED for f in self.findings)


@dataclass(frozen=True)
class Outcome:
    """The combined review: what ``ReviewCompleted`` records."""

    decision: Decision
    reviewers: list[str]
    findings: list[dict[str, Any]] = field(default_factory=list)
    fix: str | None = None
    omitted: int = 0


def decision_for(findings: Iterable[Finding]) -> Decision:
    """The decision the findings call for: block on an error, warn on a warning."""
    rank = max((severity_rank(f.severity) for f in findings), default=0)
    return "block" if rank >= 2 else "warn" if rank == 1 else "approve"


def failed(reviewer: str, message: str, *, stage: str | None = None,
           evidence: Mapping[str, Any] | None = None) -> ReviewVerdict:
    """The verdict of a reviewer that failed: one ``reviewer_failed`` finding.

    Its decision is ``warn``; :func:`combine` applies fail-open or fail-closed to it.
    """
    finding = Finding(signal=REVIEWER_FAILED, severity="warning", message=message,
                      phase="pre_run", source=reviewer, stage=stage,
                      fix="check the reviewer's configuration and that it is reachable",
                      evidence=dict(evidence or {}))
    return ReviewVerdict(reviewer=reviewer, decision="warn", findings=(finding,))


def combine(verdicts: Sequence[ReviewVerdict], *, fail_open: bool) -> Outcome:
    """One decision from several reviewers: the strictest wins.

    A failed reviewer counts as ``warn`` when the project fails open and as ``block`` when it
    fails closed (its finding is then an error, so the run's record says why it was blocked).
    Findings are ordered most severe first and capped at ``MAX_FINDINGS``; the fixes of the
    reviewers that did not approve are joined.
    """
    decision: Decision = "approve"
    findings: list[Finding] = []
    fixes: list[str] = []
    for verdict in verdicts:
        said = verdict.decision
        these = list(verdict.findings)
        if verdict.reviewer_failed and not fail_open:
            said = "block"
            these = [f.model_copy(update={"severity": "error"})
                     if f.signal == REVIEWER_FAILED else f for f in these]
        if _DECISION_RANK[said] > _DECISION_RANK[decision]:
            decision = said
        findings.extend(these)
        if said != "approve" and verdict.fix and verdict.fix not in fixes:
            fixes.append(verdict.fix)
    if decision == "block" and not fixes:
        errors = [f.fix for f in findings if f.severity == "error" and f.fix]
        fixes.extend(dict.fromkeys(errors))
    findings.sort(key=lambda f: -severity_rank(f.severity))
    kept = findings[:MAX_FINDINGS]
    fix = "; ".join(fixes[:5]) or None
    if fix is not None and len(fix) > MAX_TEXT:
        fix = fix[:MAX_TEXT - 1] + "…"
    return Outcome(decision=decision, reviewers=[v.reviewer for v in verdicts],
                   findings=[f.as_dict() for f in kept], fix=fix,
                   omitted=len(findings) - len(kept))
