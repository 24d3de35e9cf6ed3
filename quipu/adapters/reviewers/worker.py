"""The review adapter: follows the log and answers each requested run with a review.

``ReviewWorker`` reads run events in pages from its own position (never the projections) and
wakes when the log grows (``EventStore.wait_for_append``), as the executor does:

* ``RunRequested`` (not ``skip_review``) -> ``RunService.record_review_started`` (exactly one
  reviewer wins the run, like a claim) -> ``ReviewStarted``;
* in a worker thread: build the context (code, config, diff since the stage last succeeded,
  reason, results spec, approved patterns), run the reviewers in order (``static`` first; a
  block by one stops the rest), each bounded by what is left of the review's deadline;
* ``RunService.record_review`` -> ``ReviewCompleted(decision, findings, fix)``: ``approve`` and
  ``warn`` queue the run, ``block`` ends it ``blocked``.

A reviewer that raises, hangs past the deadline or answers garbage is a ``reviewer_failed``
finding; the project's ``fail_open`` decides whether the run then goes on (``warn``) or is
blocked. Nothing a reviewer does can stop the loop or lose the run: whatever happens, a
decision is recorded, and if even that fails the lifecycle's review deadline queues the run
(or, failing closed, blocks it).

With ``leases`` (a directory; the engine's is ``.quipu/reviewers``) the worker holds a lease
while it runs, and a run left ``reviewing`` by a worker whose lease is free (its engine was
killed mid-review) is reviewed again at once; the decision records ``resumed_from`` (see
``_leases``). The worker follows the log through the shared ``LogFollower``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from quipu.adapters._follow import LogFollower
from quipu.core.messages import Event
from quipu.core.ports import BlobStore, EventStore, Reviewer
from quipu.core.reviews.events import ReviewCompleted, ReviewStarted
from quipu.core.reviews.review import ReviewContext, ReviewVerdict, combine, failed
from quipu.core.runs.events import RunCanceled, RunExited, RunQueued, RunRequested
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State

from ._context import build_context
from ._leases import Leases

__all__ = ["FOLLOWED", "PatternSource", "ReviewWorker", "no_patterns"]

log = logging.getLogger("quipu.reviewer")

FOLLOWED: tuple[str, ...] = (RunRequested.TYPE, ReviewStarted.TYPE, ReviewCompleted.TYPE,
                             RunQueued.TYPE, RunCanceled.TYPE, RunExited.TYPE)
"""The run events the review adapter folds (the others never concern it)."""

PatternSource = Callable[[str, str], Sequence[Mapping[str, Any]]]
"""(workspace, stage) -> the approved failure patterns the reviewers are shown."""


def no_patterns(workspace: str, stage: str) -> Sequence[Mapping[str, Any]]:
    """The approved-pattern hook until the failure-pattern store is wired: none."""
    return []


class ReviewWorker(LogFollower[list[str]]):
    """Reviews requested runs in the background (see the module docstring)."""

    NAME: ClassVar[str] = "reviewer"
    LOGGER: ClassVar[str] = "quipu.reviewer"
    TYPES: ClassVar[tuple[str, ...]] = FOLLOWED
    # The fold sits beside the position in reviewer.json (its layout before the shared base).
    STATE_KEY: ClassVar[str | None] = None

    def __init__(self, store: EventStore, blobs: BlobStore, runs: RunService,
                 reviewers: Sequence[Reviewer], *, worker_id: str, fail_open: bool = True,
                 timeout: float = 120.0, max_parallel: int = 2,
                 patterns: PatternSource = no_patterns, idle_interval: float = 0.25,
                 on_change: Callable[[], None] | None = None,
                 position_file: Path | None = None, leases: Path | None = None) -> None:
        # Saved after every step that moved (save_every=0): a review taken is worth keeping.
        super().__init__(store, tick=idle_interval, page=1000, position_file=position_file,
                         save_every=0.0, name=f"reviewer:{worker_id}")
        self.blobs = blobs
        self.runs = runs
        self.reviewers = list(reviewers)
        self.worker_id = f"reviewer:{worker_id}"
        self.fail_open = fail_open
        self.timeout = timeout
        self.patterns = patterns
        self.on_change = on_change
        self.reviewed = 0  # reviews this worker recorded (for tests and status)
        self._pending: dict[str, None] = {}  # requested runs awaiting a reviewer, in log order
        self._manifests: dict[str, tuple[str, str, str]] = {}  # run -> (workspace, stage, manifest)
        self._last_ok: dict[tuple[str, str], str] = {}  # (workspace, stage) -> manifest
        self._reviewing: dict[str, str] = {}  # run in review -> the actor that started it
        self._mine: set[str] = set()  # runs this worker is reviewing (taken or resumed)
        # With a lease directory, runs whose reviewer is gone are reviewed again (``_leases``).
        self._leases = None if leases is None else Leases(leases, self.worker_id)
        self._swept = False
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="quipu-review")

    def stop(self) -> None:
        """Stop following the log. Reviews in progress are abandoned (their runs' review
        deadline applies); a reviewer's own timeout ends what it started."""
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._leases is not None:
            self._leases.release_all()

    # --- the fold --------------------------------------------------------------------------------

    def fold(self, event: Event) -> None:
        """Learn which runs wait for a review and what each stage last succeeded with."""
        if isinstance(event, RunRequested):
            self._manifests[event.run_id] = (event.workspace, event.stage, event.manifest)
            if not event.skip_review:
                self._pending[event.run_id] = None
            return
        run_id = getattr(event, "run_id", "")
        self._pending.pop(run_id, None)  # it moved on: queued, taken by a reviewer, canceled
        if isinstance(event, ReviewStarted):
            self._reviewing[run_id] = event.actor
            return
        self._reviewing.pop(run_id, None)  # decided, queued by its deadline, canceled, ended
        self._mine.discard(run_id)
        if isinstance(event, RunExited):
            known = self._manifests.pop(run_id, None)
            if known is not None and event.state == "succeeded":
                self._last_ok[known[0], known[1]] = known[2]
        elif isinstance(event, RunCanceled) or (
                isinstance(event, ReviewCompleted) and event.decision == "block"):
            self._manifests.pop(run_id, None)

    def caught_up(self) -> list[str]:
        """Take every run waiting for review, and review again every run whose reviewer is
        gone (with leases); return the runs taken."""
        # The lease first: from the moment this worker may record ReviewStarted, another
        # worker must be able to tell it lives.
        leased = self._leases is not None and self._leases.hold_own()
        taken = []
        for run_id in list(self._pending):
            self._pending.pop(run_id)
            if self._take(run_id):
                taken.append(run_id)
        if leased:
            taken += self._resume_abandoned()
        return taken

    def state_dict(self) -> dict[str, Any]:
        """The runs awaiting a reviewer or in review, and the manifests (saved with the
        position)."""
        return {"pending": list(self._pending), "manifests": self._manifests,
                "last_ok": [[w, s, m] for (w, s), m in self._last_ok.items()],
                "reviewing": self._reviewing}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold (all of it parsed before any of it is taken)."""
        pending = {str(r): None for r in data["pending"]}
        manifests = {str(r): (str(w), str(s), str(m))
                     for r, (w, s, m) in data["manifests"].items()}
        last_ok = {(str(w), str(s)): str(m) for w, s, m in data["last_ok"]}
        # Files saved before reviews could be resumed have no "reviewing": a review left open
        # then is left to its deadline, as it was.
        reviewing = {str(r): str(a) for r, a in data.get("reviewing", {}).items()}
        self._pending, self._manifests, self._last_ok = pending, manifests, last_ok
        self._reviewing = reviewing

    # --- reviewing -----------------------------------------------------------------------------

    def _take(self, run_id: str) -> bool:
        names = [r.name for r in self.reviewers]
        try:
            if not self.runs.record_review_started(run_id, actor=self.worker_id,
                                                   reviewers=names):
                return False
            self._mine.add(run_id)
            request = self.runs.load_run(run_id).check_exists()
        except Exception:
            log.exception("reviewer: taking run %s failed", run_id)
            return False
        previous = self._last_ok.get((request.workspace, request.stage))
        self._pool.submit(self._review, request, previous)
        return True

    def _resume_abandoned(self) -> list[str]:
        """Review again the runs in review whose reviewer is gone (its lease is free)."""
        assert self._leases is not None
        started_by = set(self._reviewing.values())
        for actor in self._leases.taken_over():
            if actor not in started_by:  # every run it left is decided now
                self._leases.let_go(actor)
        if not self._swept:
            self._leases.sweep(keep=started_by)
            self._swept = True
        resumed = []
        for run_id, actor in list(self._reviewing.items()):
            if run_id in self._mine:
                continue
            # Its own actor, not among its runs: left by an earlier worker of this process.
            if actor != self.worker_id and not self._leases.take_over(actor):
                continue  # it lives, or nothing here can tell: the review deadline applies
            if self._resume(run_id, actor):
                resumed.append(run_id)
        return resumed

    def _resume(self, run_id: str, actor: str) -> bool:
        try:
            run = self.runs.load_run(run_id)
            if run.current is not State.REVIEWING:
                self._reviewing.pop(run_id, None)  # it moved on; the fold will see why
                return False
            request = run.check_exists()
        except Exception:
            log.exception("reviewer: resuming the review of run %s failed", run_id)
            return False
        log.warning("reviewer: %s started reviewing run %s and is gone; reviewing it again",
                    actor, run_id)
        self._mine.add(run_id)
        previous = self._last_ok.get((request.workspace, request.stage))
        self._pool.submit(self._review, request, previous, actor)
        return True

    def _review(self, request: RunRequested, previous: str | None,
                resumed_from: str | None = None) -> None:
        """Review one run and record the decision, whatever happens (a worker thread);
        ``resumed_from``: the reviewer that started it and is gone."""
        deadline = time.monotonic() + self.timeout
        verdicts: list[ReviewVerdict] = []
        try:
            context = build_context(self.blobs, request, previous_manifest=previous,
                                    patterns=self._patterns(request))
            for reviewer in self.reviewers:
                verdict = self._bounded(reviewer, context, deadline)
                verdicts.append(verdict)
                if verdict.decision == "block" and not verdict.reviewer_failed:
                    break  # refused already; asking the others would only cost time
        except Exception as exc:
            log.exception("reviewer: preparing the review of %s failed", request.run_id)
            verdicts.append(failed("review", f"the review could not be prepared: "
                                   f"{type(exc).__name__}: {exc}", stage=request.stage))
        outcome = combine(verdicts, fail_open=self.fail_open)
        try:
            self.runs.record_review(request.run_id, actor=self.worker_id,
                                    decision=outcome.decision, reviewers=outcome.reviewers,
                                    findings=outcome.findings, fix=outcome.fix,
                                    omitted=outcome.omitted, resumed_from=resumed_from)
            self.reviewed += 1
        except Exception:
            log.exception("reviewer: recording the review of %s failed; its deadline applies",
                          request.run_id)
            return
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("reviewer: on_change failed")

    def _patterns(self, request: RunRequested) -> list[Mapping[str, Any]]:
        try:
            return list(self.patterns(request.workspace, request.stage))
        except Exception:
            log.exception("reviewer: reading the approved patterns failed; reviewing without")
            return []

    def _bounded(self, reviewer: Reviewer, context: ReviewContext,
                 deadline: float) -> ReviewVerdict:
        """The reviewer's verdict, or a failure when it raises or outlives the deadline.

        The call runs in its own daemon thread: a reviewer that hangs is abandoned there (its
        own timeouts end what it started) and never holds up the review or the engine.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return failed(reviewer.name, "no time was left for this reviewer before the "
                          f"review's deadline ({self.timeout:g} s)", stage=context.stage)
        answer: list[ReviewVerdict] = []
        problem: list[BaseException] = []

        def call() -> None:
            try:
                answer.append(reviewer.review(context))
            except BaseException as exc:
                problem.append(exc)

        thread = threading.Thread(target=call, daemon=True,
                                  name=f"review {context.run_id} by {reviewer.name}")
        thread.start()
        thread.join(remaining)
        if answer:
            verdict = answer[0]
            if not isinstance(verdict, ReviewVerdict):
                return failed(reviewer.name, f"the reviewer answered a "
                              f"{type(verdict).__name__}, not a verdict", stage=context.stage)
            return verdict
        if problem:
            exc = problem[0]
            return failed(reviewer.name, f"the reviewer crashed: {type(exc).__name__}: {exc}",
                          stage=context.stage)
        return failed(reviewer.name, f"the reviewer did not answer within the review's "
                      f"deadline ({self.timeout:g} s)", stage=context.stage,
                      evidence={"timeout_seconds": self.timeout})
