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
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.ports import BlobStore, EventStore, Reviewer
from quipu.core.reviews.events import ReviewCompleted, ReviewStarted
from quipu.core.reviews.review import ReviewContext, ReviewVerdict, combine, failed
from quipu.core.runs.events import RunCanceled, RunExited, RunQueued, RunRequested
from quipu.core.runs.handlers import RunService

from ._context import build_context

__all__ = ["FOLLOWED", "PatternSource", "ReviewWorker", "no_patterns"]

log = logging.getLogger("quipu.reviewer")

FOLLOWED: tuple[str, ...] = (RunRequested.TYPE, ReviewStarted.TYPE, ReviewCompleted.TYPE,
                             RunQueued.TYPE, RunCanceled.TYPE, RunExited.TYPE)
"""The run events the review adapter folds (the others never concern it)."""

_FORMAT = 1
"""The shape of the position file; another number is ignored (the worker reads from 0)."""

PatternSource = Callable[[str, str], Sequence[Mapping[str, Any]]]
"""(workspace, stage) -> the approved failure patterns the reviewers are shown."""


def no_patterns(workspace: str, stage: str) -> Sequence[Mapping[str, Any]]:
    """The approved-pattern hook until the failure-pattern store is wired: none."""
    return []


class ReviewWorker:
    """Reviews requested runs in the background (see the module docstring)."""

    def __init__(self, store: EventStore, blobs: BlobStore, runs: RunService,
                 reviewers: Sequence[Reviewer], *, worker_id: str, fail_open: bool = True,
                 timeout: float = 120.0, max_parallel: int = 2,
                 patterns: PatternSource = no_patterns, idle_interval: float = 0.25,
                 on_change: Callable[[], None] | None = None,
                 position_file: Path | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.runs = runs
        self.reviewers = list(reviewers)
        self.worker_id = f"reviewer:{worker_id}"
        self.fail_open = fail_open
        self.timeout = timeout
        self.patterns = patterns
        self.idle_interval = idle_interval
        self.on_change = on_change
        self.position = 0
        self.position_file = position_file
        self.reviewed = 0  # reviews this worker recorded (for tests and status)
        self.read_events = 0  # events folded since this worker started (for tests)
        self._pending: dict[str, None] = {}  # requested runs awaiting a reviewer, in log order
        self._manifests: dict[str, tuple[str, str, str]] = {}  # run -> (workspace, stage, manifest)
        self._last_ok: dict[tuple[str, str], str] = {}  # (workspace, stage) -> manifest
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="quipu-review")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle of the worker ---------------------------------------------------------------

    def start(self) -> None:
        """Follow the log in a background daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"reviewer {self.worker_id}")
        self._thread.start()

    def stop(self) -> None:
        """Stop following the log. Reviews in progress are abandoned (their runs' review
        deadline applies); a reviewer's own timeout ends what it started."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.save_position()

    def _loop(self) -> None:
        seen = 0
        while not self._stopping.is_set():
            try:
                self.poll_once()
                seen = self.position
                self.store.wait_for_append(after=seen, timeout=self.idle_interval)
            except Exception:  # one bad step must not end the worker; the next one retries
                log.exception("reviewer step failed")
                self._stopping.wait(self.idle_interval)

    # --- following the log ---------------------------------------------------------------------

    def poll_once(self) -> list[str]:
        """Read new events and take every run waiting for review; return the runs taken."""
        if self.position == 0:
            self._restore()
        head = self.store.head()
        start = self.position
        while self.position < head:
            records = self.store.read(after=self.position, limit=1000, until=head,
                                      types=FOLLOWED)
            for record in records:
                self.position = record.position
                self.read_events += 1
                self._on_event(decode(record).event)
            if len(records) < 1000:
                self.position = head
        taken = []
        for run_id in list(self._pending):
            self._pending.pop(run_id)
            if self._take(run_id):
                taken.append(run_id)
        if self.position != start:
            self.save_position()
        return taken

    # --- the saved position --------------------------------------------------------------------

    def save_position(self) -> None:
        """Save the position and the fold (``position_file``), anchored to the log's chain hash
        there, so a restarted worker reads only what came after. A cache: never required."""
        if self.position_file is None or self.position <= 0:
            return
        try:
            body = {"format": _FORMAT, "position": self.position,
                    "hash": self.store.hash_at(self.position), "pending": list(self._pending),
                    "manifests": self._manifests,
                    "last_ok": [[w, s, m] for (w, s), m in self._last_ok.items()]}
            tmp = self.position_file.with_name(
                f".{self.position_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            self.position_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.position_file)
        except Exception:
            log.exception("reviewer: could not save its position (it reads from 0 next time)")

    def _restore(self) -> None:
        if self.position_file is None:
            return
        try:
            body = json.loads(self.position_file.read_text())
            position = int(body["position"])
            if body.get("format") != _FORMAT or not 0 < position <= self.store.head() or \
                    self.store.hash_at(position) != body["hash"]:
                log.warning("reviewer: %s does not match the log; reading it from 0",
                            self.position_file)
                return
            pending = {str(r): None for r in body["pending"]}
            manifests = {str(r): (str(w), str(s), str(m))
                         for r, (w, s, m) in body["manifests"].items()}
            last_ok = {(str(w), str(s)): str(m) for w, s, m in body["last_ok"]}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("reviewer: ignoring unreadable %s (%s)", self.position_file, exc)
            return
        self.position, self._pending = position, pending
        self._manifests, self._last_ok = manifests, last_ok

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RunRequested):
            self._manifests[event.run_id] = (event.workspace, event.stage, event.manifest)
            if not event.skip_review:
                self._pending[event.run_id] = None
            return
        run_id = getattr(event, "run_id", "")
        self._pending.pop(run_id, None)  # it moved on: queued, taken by a reviewer, canceled
        if isinstance(event, RunExited):
            known = self._manifests.pop(run_id, None)
            if known is not None and event.state == "succeeded":
                self._last_ok[known[0], known[1]] = known[2]
        elif isinstance(event, RunCanceled) or (
                isinstance(event, ReviewCompleted) and event.decision == "block"):
            self._manifests.pop(run_id, None)

    # --- reviewing -----------------------------------------------------------------------------

    def _take(self, run_id: str) -> bool:
        names = [r.name for r in self.reviewers]
        try:
            if not self.runs.record_review_started(run_id, actor=self.worker_id,
                                                   reviewers=names):
                return False
            request = self.runs.load_run(run_id).check_exists()
        except Exception:
            log.exception("reviewer: taking run %s failed", run_id)
            return False
        previous = self._last_ok.get((request.workspace, request.stage))
        self._pool.submit(self._review, request, previous)
        return True

    def _review(self, request: RunRequested, previous: str | None) -> None:
        """Review one run and record the decision, whatever happens (a worker thread)."""
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
                                    omitted=outcome.omitted)
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
