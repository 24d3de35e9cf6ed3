"""The ``llm`` opinions around a run: after it (the post-run review) and while it runs (the
monitor's periodic look at a window of its metrics).

The deterministic post-run review (``core.reviews.post_run``) always runs; with
``svs.reviewer: llm`` the post-run reviewer also asks the same model, through the same HTTP
client as the pre-run review, to judge the run from its facts (the hypothesis, the results spec,
the metric summaries, the outputs' statistics, how it ended, and the deterministic suggestion).
Only a reply that is JSON of :class:`OutcomeReply` counts; anything else is a failure the
suggestion's evidence names, never read as free text. The agent's ``finalize_run`` decides.

While a run runs, with ``svs.monitor.window_review_minutes`` set (and ``svs.reviewer: llm``),
the monitor shows the model the run's recent metric values every so many minutes
(:class:`LlmWindowReview`); what it reports becomes monitor findings (an ``error`` stops the run
when ``auto_stop`` is on), and the monitor switches the review off after repeated failures.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quipu.core.reviews.findings import Finding
from quipu.core.reviews.monitoring import RunWatch

from .llm import LlmReviewer, unfenced

__all__ = ["OUTCOME_PROMPT", "WINDOW_PROMPT", "LlmOutcomeReview", "LlmWindowReview",
           "OutcomeReply", "WindowReply"]

_LINE = 200  # characters kept of one evidence line


class OutcomeReply(BaseModel):
    """What the model must answer: an ML outcome and the evidence lines behind it."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["success", "partial", "miss", "unknown"]
    evidence: list[str] = Field(min_length=1, max_length=6)


OUTCOME_PROMPT = (
    "You judge one finished run of a machine-learning pipeline stage. You are given why the "
    "agent ran it (hypothesis), its results spec (primary metric, direction, goal), its metric "
    "summaries, the statistics of its outputs, how it ended, and a deterministic reviewer's "
    "suggestion. Say whether the run supports the hypothesis: 'success' (the goal is met), "
    "'partial' (it improved but missed the goal), 'miss' (it did not), 'unknown' (the facts "
    "cannot tell, e.g. it crashed or logged no primary metric). Give one to six short evidence "
    "lines citing the numbers. Answer with ONLY one JSON object, no prose, matching this JSON "
    "schema: ")


class LlmOutcomeReview:
    """``facts -> (outcome, evidence)`` from the model, or the reason it gave none (a str)."""

    def __init__(self, llm: LlmReviewer) -> None:
        self.llm = llm

    def __repr__(self) -> str:  # never the key (LlmReviewer's repr shows none)
        return f"LlmOutcomeReview({self.llm!r})"

    def __call__(self, facts: dict[str, Any]) -> tuple[str, list[str]] | str:
        if not self.llm.endpoint or not self.llm.model:
            return "the llm has no endpoint or model"
        system = OUTCOME_PROMPT + json.dumps(OutcomeReply.model_json_schema(),
                                             separators=(",", ":"))
        url, headers, body = self.llm.request(system, json.dumps(facts, separators=(",", ":"),
                                                                 default=str))
        text, why, _ = self.llm.complete(url, headers, body)
        if text is None:
            return why
        try:
            reply = OutcomeReply.model_validate_json(unfenced(text))
        except ValidationError as exc:
            return f"the reply is not JSON of the outcome schema ({exc.error_count()} problem(s))"
        return reply.outcome, [line[:_LINE] for line in reply.evidence]


# --- the window review during a run ------------------------------------------------------------


class WindowFinding(BaseModel):
    """One thing the model noticed in a running run's recent metrics."""

    model_config = ConfigDict(extra="forbid")

    severity: Literal["info", "warning", "error"]
    message: str = Field(min_length=1, max_length=300)
    metric: str | None = None


class WindowReply(BaseModel):
    """What the model must answer about a window: its findings (none is a fine answer)."""

    model_config = ConfigDict(extra="forbid")

    findings: list[WindowFinding] = Field(max_length=5)


WINDOW_PROMPT = (
    "You watch one running stage of a machine-learning pipeline. You are given its recent "
    "metric values per metric (oldest first). Report only what would make the run waste its "
    "compute or produce a meaningless result: divergence, a loss that stopped improving, an "
    "oscillation, a metric stuck at a constant, an impossible value. 'error' means the run "
    "should be stopped. An empty list is the right answer for a healthy run. Answer with ONLY "
    "one JSON object, no prose, matching this JSON schema: ")


class LlmWindowReview:
    """The monitor's periodic llm look at a run's recent metrics: ``watch -> findings``.

    A failure (no answer, not JSON of :class:`WindowReply`) raises, so the monitor counts it
    and switches the review off after repeated failures.
    """

    def __init__(self, llm: LlmReviewer) -> None:
        self.llm = llm

    def __repr__(self) -> str:
        return f"LlmWindowReview({self.llm!r})"

    def __call__(self, watch: RunWatch) -> list[Finding]:
        if not self.llm.endpoint or not self.llm.model:
            raise RuntimeError("the llm has no endpoint or model")
        facts = {"run_id": watch.run_id, "stage": watch.stage, "points": watch.points,
                 "metrics": {name: list(values) for name, values in watch.seen.items()}}
        system = WINDOW_PROMPT + json.dumps(WindowReply.model_json_schema(),
                                            separators=(",", ":"))
        url, headers, body = self.llm.request(system, json.dumps(facts, separators=(",", ":")))
        text, why, _ = self.llm.complete(url, headers, body)
        if text is None:
            raise RuntimeError(f"the llm window review failed: {why}")
        try:
            reply = WindowReply.model_validate_json(unfenced(text))
        except ValidationError as exc:
            raise RuntimeError(f"the llm window review's reply is not JSON of its schema "
                               f"({exc.error_count()} problem(s))") from None
        return [Finding(signal="llm_window", severity=f.severity, message=f.message,
                        phase="during_run", source="llm", stage=watch.stage or None,
                        evidence={"metric": f.metric} if f.metric else {})
                for f in reply.findings]
