"""The during-run monitor: flags a running stage whose metrics go wrong, and may stop it.

``RunMonitor`` follows the run events it needs (requests for the stage name; launches and
adoptions start a watch; ``MetricsRecorded`` and heartbeats feed it; its own
``FindingsRecorded`` and ``StopRequested`` say what it already did; every ending drops the
watch). The rules are ``core.reviews.monitoring``'s. Findings are recorded as
``FindingsRecorded(phase="during_run", source="monitor")``; with ``auto_stop`` an error finding
also records ``StopRequested(requested_by="monitor", finding=...)``, which the executor turns
into the stop file.

Findings are appended only once the monitor has caught up with the log, for runs still
running then: replaying history after a restart never flags runs that have ended since, and a
finding already in the log is not recorded twice.

``window_review`` is the hook for a reviewer that looks at a window of a run every
``window_every`` seconds (the ``llm`` reviewer, once there is one to call): its failures are
counted and it is switched off after ``WINDOW_FAILURES`` in a row.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from quipu.adapters._follow import LogFollower
from quipu.core.errors import QuipuError
from quipu.core.messages import Event
from quipu.core.patterns.detection import ApprovedPattern, match_metrics
from quipu.core.ports import EventStore
from quipu.core.reviews.events import FindingsRecorded, StopRequested
from quipu.core.reviews.findings import MAX_FINDINGS, Finding
from quipu.core.reviews.monitoring import SOURCE, MonitorRules, RunWatch
from quipu.core.runs.events import (
    MetricsRecorded,
    RunAdopted,
    RunCanceled,
    RunExited,
    RunFinalized,
    RunHeartbeat,
    RunLaunched,
    RunLaunchFailed,
    RunLost,
    RunRequested,
)
from quipu.core.runs.handlers import RunService

__all__ = ["WINDOW_FAILURES", "RunMonitor", "WindowReview"]

log = logging.getLogger("quipu.svs.monitor")

WindowReview = Callable[[RunWatch], list[Finding]]
"""Looks at a window of one running run and answers with findings (the llm hook)."""

WINDOW_FAILURES = 3
"""Consecutive failures after which the window review is switched off."""

_ENDINGS = (RunExited, RunLost, RunCanceled, RunFinalized, RunLaunchFailed)


class RunMonitor(LogFollower[None]):
    """Watches every running run's metrics; records findings and, with auto_stop, stops."""

    NAME: ClassVar[str] = "svs monitor"
    LOGGER: ClassVar[str] = "quipu.svs"
    TYPES: ClassVar[tuple[str, ...]] = tuple(e.TYPE for e in (
        RunRequested, RunLaunched, RunAdopted, MetricsRecorded, RunHeartbeat, FindingsRecorded,
        StopRequested, *_ENDINGS))

    def __init__(self, store: EventStore, runs: RunService, rules: MonitorRules, *,
                 now: Callable[[], datetime] | None = None, tick: float = 5.0,
                 window_review: WindowReview | None = None,
                 window_every: float | None = None,
                 patterns: Callable[[str], Sequence[ApprovedPattern]] | None = None,
                 position_file: Path | None = None) -> None:
        super().__init__(store, tick=tick, position_file=position_file)
        self.runs = runs
        self.rules = rules
        self.now = now or runs.svc.clock.now
        self.watches: dict[str, RunWatch] = {}
        self.window_review = window_review
        self.window_every = window_every
        self.window_failures = 0
        self.patterns = patterns  # stage -> the approved failure patterns (metric rules run)
        self._stages: dict[str, str] = {}
        self._pending: dict[str, list[Finding]] = {}
        self._reported: dict[str, set[tuple[str, str]]] = {}
        self._windowed: dict[str, datetime] = {}

    # --- folding ---------------------------------------------------------------------------------

    def fold(self, event: Event) -> None:
        """Learn from one run event."""
        run_id = getattr(event, "run_id", "")
        if isinstance(event, RunRequested):
            self._stages[run_id] = event.stage
        elif isinstance(event, RunLaunched | RunAdopted):
            if run_id not in self.watches:
                self.watches[run_id] = RunWatch(run_id=run_id,
                                                stage=self._stages.get(run_id, ""),
                                                progress_at=event.at)
        elif isinstance(event, _ENDINGS):
            for kept in (self.watches, self._stages, self._pending, self._reported,
                         self._windowed):
                kept.pop(run_id, None)
        elif run_id in self.watches:
            watch = self.watches[run_id]
            if isinstance(event, MetricsRecorded):
                self._pending.setdefault(run_id, []).extend(watch.metrics(
                    self.rules, points=event.points, at=event.at, summaries=event.summaries))
                self._pending[run_id].extend(self._pattern_findings(watch, event.summaries))
            elif isinstance(event, FindingsRecorded) and event.source == SOURCE:
                keys = {_stored_key(f) for f in event.findings}
                watch.flagged |= keys
                self._reported.setdefault(run_id, set()).update(keys)
            elif isinstance(event, StopRequested):
                watch.stop_asked = True
            # A heartbeat only says the stage lives; the stall rule counts metric progress.

    def _pattern_findings(self, watch: RunWatch, summaries: dict[str, Any]) -> list[Finding]:
        """Findings of the approved failure patterns whose detection is a metric rule."""
        if self.patterns is None:
            return []
        try:
            return match_metrics(self.patterns(watch.stage), watch.stage or None, summaries)
        except Exception:  # the pattern store in trouble never stops the monitor
            self.errors += 1
            log.exception("monitor: matching failure patterns for run %s failed", watch.run_id)
            return []

    def state_dict(self) -> dict[str, Any]:
        """The watches, stage names and reported findings (saved with the position)."""
        return {
            "stages": self._stages,
            "reported": {r: sorted(keys) for r, keys in self._reported.items()},
            "watches": {r: {"stage": w.stage, "progress_at": w.progress_at.isoformat(),
                            "points": w.points, "stop_asked": w.stop_asked,
                            "flagged": sorted(w.flagged),
                            "seen": {m: list(v) for m, v in w.seen.items()}}
                        for r, w in self.watches.items()},
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold (all of it parsed before any of it is taken)."""
        stages = dict(data.get("stages", {}))
        reported = {r: {(s, m) for s, m in keys} for r, keys in data.get("reported", {}).items()}
        watches = {}
        for run_id, w in data.get("watches", {}).items():
            watches[run_id] = RunWatch(
                run_id=run_id, stage=w["stage"],
                progress_at=datetime.fromisoformat(w["progress_at"]), points=int(w["points"]),
                stop_asked=bool(w["stop_asked"]), flagged={(s, m) for s, m in w["flagged"]},
                seen={m: deque(v, maxlen=20) for m, v in w["seen"].items()})
        self._stages, self._reported, self.watches = stages, reported, watches

    # --- acting ----------------------------------------------------------------------------------

    def caught_up(self) -> None:
        """Run the time-based rules, then record what was found for runs still running."""
        now = self.now()
        for run_id, watch in list(self.watches.items()):
            found = self._pending.pop(run_id, []) + watch.tick(self.rules, now)
            found += self._window(watch, now)
            reported = self._reported.get(run_id, set())
            fresh = [f for f in found if _key(f) not in reported]
            if fresh:
                try:
                    self._record(watch, fresh)
                except Exception:  # one run's trouble never stops the monitor
                    self.errors += 1
                    log.exception("monitor: recording findings for run %s failed", run_id)

    def _record(self, watch: RunWatch, found: list[Finding]) -> None:
        shown = found[:MAX_FINDINGS]
        self.runs.record_findings(watch.run_id, actor=SOURCE, phase="during_run",
                                  source=SOURCE, findings=[f.as_dict() for f in shown],
                                  omitted=len(found) - len(shown))
        self._reported.setdefault(watch.run_id, set()).update(_key(f) for f in found)
        errors = [f for f in found if f.severity == "error"]
        if not (self.rules.auto_stop and errors) or watch.stop_asked:
            return
        watch.stop_asked = True
        try:
            self.runs.request_stop(watch.run_id, f"monitor (auto_stop): {errors[0].message}",
                                   actor=SOURCE, requested_by="monitor",
                                   finding=errors[0].as_dict())
        except QuipuError as exc:  # it ended meanwhile: nothing left to stop
            log.info("monitor: run %s was not stopped: %s", watch.run_id, exc)

    def _window(self, watch: RunWatch, now: datetime) -> list[Finding]:
        """The window review's findings when one is due (never raises)."""
        if self.window_review is None or not self.window_every:
            return []
        last = self._windowed.get(watch.run_id, watch.progress_at)
        if (now - last).total_seconds() < self.window_every:
            return []
        self._windowed[watch.run_id] = now
        try:
            found = self.window_review(watch)
        except Exception:
            self.window_failures += 1
            log.exception("monitor: the window review failed (%d in a row)",
                          self.window_failures)
            if self.window_failures >= WINDOW_FAILURES:
                log.warning("monitor: the window review is switched off after %d failures",
                            self.window_failures)
                self.window_review = None
            return []
        self.window_failures = 0
        return found


def _key(finding: Finding) -> tuple[str, str]:
    """What makes a monitor finding the same as one already recorded for the run: its signal
    and its metric, or the failure pattern that made it."""
    return (finding.signal, finding.pattern_id or str(finding.evidence.get("metric", "")))


def _stored_key(finding: dict[str, Any]) -> tuple[str, str]:
    """:func:`_key` of a finding as an event stores it."""
    evidence = finding.get("evidence") or {}
    return (str(finding.get("signal", "")),
            str(finding.get("pattern_id") or evidence.get("metric", "")))
