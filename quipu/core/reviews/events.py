"""Review events: they live on the run's stream (the run is what they are about).

``ReviewStarted`` and ``ReviewCompleted`` move a run through the pre-run review
(requested -> reviewing -> queued or blocked, see ``core.runs.lifecycle``). The others are
passive facts that never move a run: findings from output contracts, statistics and the
monitor, a request to stop, and the post-run review's suggested outcome.
"""

from __future__ import annotations

from typing import Any, Literal

from quipu.core.messages import Event, register

__all__ = ["FindingsRecorded", "OutcomeSuggested", "ReviewCompleted", "ReviewStarted",
           "StopRequested"]


@register("ReviewStarted")
class ReviewStarted(Event):
    """A pre-run reviewer picked the run up; ``reviewers`` are the ones that will look."""

    run_id: str
    reviewers: list[str]


@register("ReviewCompleted")
class ReviewCompleted(Event):
    """The pre-run review's decision with its findings (``Finding.as_dict()`` each).

    ``approve`` and ``warn`` queue the run, ``block`` ends it ``blocked``; ``fix`` says what to
    change before running again. A reviewer that failed (down, slow, wrong answer) is a
    finding with signal ``reviewer_failed``; the decision then follows the project's
    fail-open/fail-closed setting. ``omitted`` counts findings beyond those listed.

    ``resumed_from`` names the reviewer (the actor of the run's ``ReviewStarted``) that was
    gone before it decided, its engine killed mid-review: this decision is the review done
    again by another (``actor``). None, as in every event written before the field existed,
    when the reviewer that started the review decided it.
    """

    run_id: str
    decision: Literal["approve", "warn", "block"]
    reviewers: list[str]
    findings: list[dict[str, Any]]
    fix: str | None = None
    omitted: int = 0
    resumed_from: str | None = None


@register("FindingsRecorded")
class FindingsRecorded(Event):
    """Findings made outside the pre-run review: ``phase`` is ``contract``, ``statistics``,
    ``during_run`` or ``post_run``; ``source`` the checker that made them."""

    run_id: str
    phase: Literal["contract", "statistics", "during_run", "post_run"]
    source: str
    findings: list[dict[str, Any]]
    omitted: int = 0


@register("StopRequested")
class StopRequested(Event):
    """Someone asked the running stage to stop: an agent (``request_stop``) or the monitor
    with ``auto_stop`` on (``finding`` is then the finding that triggered it). The executor
    writes the stop file; the stage sees ``should_stop()``; a clean exit ends it ``stopped``."""

    run_id: str
    requested_by: Literal["agent", "monitor"]
    finding: dict[str, Any] | None = None


@register("OutcomeSuggested")
class OutcomeSuggested(Event):
    """The post-run review's suggested ML outcome with its evidence; only the agent's
    ``finalize_run`` decides."""

    run_id: str
    outcome: str
    evidence: list[str]
    reviewers: list[str]
