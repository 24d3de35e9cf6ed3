"""``PatternFollower``: follows the log and turns runs that went wrong into pattern occurrences.

It reads the log in pages from its own position (only the events it needs), blocking in
``EventStore.wait_for_append`` between pages so it wakes on an append instead of polling. When
a run ends ``failed``, ``crashed`` or ``stopped`` (``RunExited``) or review blocks it
(``ReviewCompleted`` with ``block``), it reads that run's stream once and hands its findings
(``FindingsRecorded`` and ``ReviewCompleted``), its error and its exit problems to
``RecordPatternOccurrences``; findings recorded about such a run after it ended (a post-run
review) are handed over as they come. The aggregate makes every step idempotent (a position or
run already recorded changes nothing), so a restart that reads part of the log again, or two
followers on one log, record nothing twice.

With ``position_file`` the position (anchored to the log's chain hash there, like the
executor's) and the runs that went wrong recently are saved, so a restart continues from
there; a file that does not match the log is ignored and the follower reads from 0.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from quipu.adapters._follow import LogFollower
from quipu.core.log import decode, stream_id
from quipu.core.messages import Command, Event
from quipu.core.patterns.commands import RecordPatternOccurrences
from quipu.core.ports import EventStore
from quipu.core.reviews.events import FindingsRecorded, ReviewCompleted
from quipu.core.runs.events import RunExited, RunRequested

__all__ = ["FORMAT", "WRONG_EXITS", "PatternFollower"]

log = logging.getLogger("quipu.patterns")

FORMAT = 1
WRONG_EXITS = ("failed", "crashed", "stopped")
"""``RunExited`` states whose findings become patterns (with review's ``block``)."""
_TYPES = (RunExited.TYPE, ReviewCompleted.TYPE, FindingsRecorded.TYPE)
_REMEMBERED = 1000
"""Runs that went wrong kept in memory (and in the file) for findings that arrive later."""
PAGE = 500


class PatternFollower(LogFollower[int]):
    """Follows the log from its own position; answers with ``RecordPatternOccurrences``."""

    NAME: ClassVar[str] = "patterns"
    LOGGER: ClassVar[str] = "quipu.patterns"
    TYPES: ClassVar[tuple[str, ...]] = _TYPES
    FORMAT: ClassVar[int] = FORMAT
    # The fold sits beside the position in patterns.json (its layout before the shared base).
    STATE_KEY: ClassVar[str | None] = None

    def __init__(self, store: EventStore, handle: Callable[[Command], Any], *,
                 actor: str, position_file: Path | None = None,
                 on_change: Callable[[], None] | None = None, wait: float = 0.5) -> None:
        super().__init__(store, tick=wait, page=PAGE, position_file=position_file,
                         name=f"patterns {actor}")
        self.handle = handle
        self.actor = actor
        self.on_change = on_change
        self.recorded = 0
        """Patterns proposed or counted by this follower (for tests and logs)."""
        self._announced = 0  # self.recorded when the last step ended
        self._wrong: OrderedDict[str, tuple[str | None, str]] = OrderedDict()

    def poll_once(self) -> int:
        """Read everything new; the number of patterns proposed or counted."""
        changed = super().poll_once()
        if changed and self.on_change is not None:
            try:  # outside the step, as the views it refreshes may wait for other work
                self.on_change()
            except Exception:
                log.exception("pattern follower: refreshing the views failed")
        return changed

    def caught_up(self) -> int:
        """How many patterns the events folded since the last step proposed or counted."""
        changed, self._announced = self.recorded - self._announced, self.recorded
        return changed

    def state_dict(self) -> dict[str, Any]:
        """The runs that went wrong recently (saved with the position)."""
        return {"wrong": [[r, s, o] for r, (s, o) in self._wrong.items()]}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold."""
        self._wrong = OrderedDict((str(r), (s, str(o))) for r, s, o in data["wrong"])

    # --- what a run event means ----------------------------------------------------------------

    def fold(self, event: Event) -> None:
        """A run that went wrong, or a finding about one, is recorded at once."""
        position = self.position
        if isinstance(event, RunExited) and event.state in WRONG_EXITS:
            self._ended(event.run_id, event.state, position)
        elif isinstance(event, ReviewCompleted) and event.decision == "block":
            self._ended(event.run_id, "blocked", position)
        elif isinstance(event, FindingsRecorded) and event.run_id in self._wrong:
            stage, outcome = self._wrong[event.run_id]
            self._record(event.run_id, stage, outcome, position, list(event.findings))

    def _ended(self, run_id: str, outcome: str, position: int) -> None:
        stage: str | None = None
        findings: list[dict[str, Any]] = []
        error: str | None = None
        problems: list[str] = []
        for record in self.store.load(stream_id("run", run_id)):
            event = decode(record).event
            if isinstance(event, RunRequested):
                stage = event.stage
            elif isinstance(event, FindingsRecorded | ReviewCompleted):
                findings += event.findings
            elif isinstance(event, RunExited):
                error, problems = event.error, list(event.problems)
        self._wrong[run_id] = (stage, outcome)
        while len(self._wrong) > _REMEMBERED:
            self._wrong.popitem(last=False)
        self._record(run_id, stage, outcome, position, findings, error, problems)

    def _record(self, run_id: str, stage: str | None, outcome: str, position: int,
                findings: list[dict[str, Any]], error: str | None = None,
                problems: list[str] | None = None) -> None:
        try:
            out = self.handle(RecordPatternOccurrences(
                run=run_id, stage=stage, outcome=outcome, findings=findings,
                position=position, actor=self.actor, error=error, problems=problems or []))
        except Exception:
            # Logged with the run and skipped: one run must not stop the loop for the others.
            log.exception("pattern follower: recording the patterns of run %s failed", run_id)
            return
        self.recorded += len(out["proposed"]) + len(out["seen"])
