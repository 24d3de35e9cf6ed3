"""The post-run review: every run that ends gets a suggested ML outcome with its evidence.

``PostRunReviewer`` follows run endings and, once caught up with the log, loads each ended
run (its aggregate: results spec, hypothesis, metric summaries, outputs with their statistics,
the stop request that preceded a stop) and records ``OutcomeSuggested`` from the deterministic
review (``core.reviews.post_run.review_run``). A run gets one suggestion (the aggregate
refuses a second), so a restart that replays the log suggests nothing twice. ``finalize_run``
and ``list_unfinalized_runs`` show it; only the agent's verdict decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from quipu.adapters._follow import LogFollower
from quipu.core.messages import Event
from quipu.core.ports import EventStore
from quipu.core.reviews.events import OutcomeSuggested
from quipu.core.reviews.post_run import MAX_EVIDENCE, REVIEWER, review_run
from quipu.core.runs import lifecycle
from quipu.core.runs.events import RunExited, RunFinalized, RunLaunchFailed, RunLost
from quipu.core.runs.handlers import RunService

__all__ = ["PostRunReviewer"]

log = logging.getLogger("quipu.svs.post_run")


SecondOpinion = Callable[[dict[str, Any]], "tuple[str, list[str]] | str"]
"""The llm post-run review: the run's facts -> (outcome, evidence lines), or why it gave none."""


class PostRunReviewer(LogFollower[None]):
    """Suggests an ML outcome for every run that ends and holds its workspace's gate."""

    NAME: ClassVar[str] = "svs post-run review"
    LOGGER: ClassVar[str] = "quipu.svs"
    TYPES: ClassVar[tuple[str, ...]] = (RunExited.TYPE, RunLost.TYPE, RunLaunchFailed.TYPE,
                                        RunFinalized.TYPE, OutcomeSuggested.TYPE)

    def __init__(self, store: EventStore, runs: RunService, *, tick: float = 5.0,
                 second_opinion: SecondOpinion | None = None,
                 position_file: Path | None = None) -> None:
        super().__init__(store, tick=tick, position_file=position_file)
        self.runs = runs
        # The llm post-run review, when configured: facts -> (outcome, evidence), or why not.
        self.second_opinion = second_opinion
        self.due: dict[str, None] = {}  # ended runs without a suggestion yet, in log order

    def fold(self, event: Event) -> None:
        """An ending makes a run due; a suggestion or a verdict settles it."""
        run_id = getattr(event, "run_id", "")
        if isinstance(event, RunExited | RunLost | RunLaunchFailed):
            self.due[run_id] = None
        else:
            self.due.pop(run_id, None)

    def state_dict(self) -> dict[str, Any]:
        """The runs still due (saved with the position)."""
        return {"due": list(self.due)}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold."""
        self.due = dict.fromkeys(data.get("due", []))

    def caught_up(self) -> None:
        """Review every due run (one failing run never holds up the others)."""
        for run_id in list(self.due):
            self.due.pop(run_id, None)
            try:
                self.review(run_id)
            except Exception:
                self.errors += 1
                log.exception("post-run review of run %s failed", run_id)

    def review(self, run_id: str) -> None:
        """Suggest an outcome for one ended run (nothing if it has one or is not ended)."""
        run = self.runs.load_run(run_id)
        if run.suggestion is not None or not lifecycle.is_ended(run.current):
            return
        request = run.check_exists()
        stop = run.stop
        outcome, evidence = review_run(
            state=run.current, spec=run.results_spec,
            hypothesis=request.detail.get("hypothesis"),
            summaries=run.metrics.summaries if run.metrics else {},
            outputs=run.exit.outputs if run.exit else {},
            stopped_by=None if stop is None else {"requested_by": stop.requested_by,
                                                  "reason": stop.reason,
                                                  "finding": stop.finding},
            error=run.exit.error if run.exit else run.lost_why)
        reviewers = [REVIEWER]
        if self.second_opinion is not None:
            facts = {"run_id": run_id, "stage": request.stage, "state": run.current.value,
                     "hypothesis": request.detail.get("hypothesis"),
                     "results_spec": run.results_spec,
                     "metrics": run.metrics.summaries if run.metrics else {},
                     "outputs": {name: out.get("stats") for name, out in
                                 (run.exit.outputs if run.exit else {}).items()},
                     "deterministic": {"outcome": outcome, "evidence": evidence}}
            try:
                answer = self.second_opinion(facts)
            except Exception as exc:  # the second opinion in trouble never loses the first
                log.exception("llm post-run review of run %s failed", run_id)
                answer = f"{type(exc).__name__}"
            if isinstance(answer, str):
                evidence = [*evidence[:MAX_EVIDENCE - 1], f"llm post-run review failed: {answer}"]
            else:
                outcome = answer[0]  # type: ignore[assignment]
                evidence = [*answer[1], *evidence][:MAX_EVIDENCE]
                reviewers.append("llm")
        self.runs.record_suggestion(run_id, actor=REVIEWER, outcome=outcome, evidence=evidence,
                                    reviewers=reviewers)
