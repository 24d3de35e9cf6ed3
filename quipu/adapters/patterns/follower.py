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

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quipu.core.log import decode, stream_id
from quipu.core.messages import Command
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


class PatternFollower:
    """Follows the log from its own position; answers with ``RecordPatternOccurrences``."""

    def __init__(self, store: EventStore, handle: Callable[[Command], Any], *,
                 actor: str, position_file: Path | None = None,
                 on_change: Callable[[], None] | None = None, wait: float = 0.5) -> None:
        self.store = store
        self.handle = handle
        self.actor = actor
        self.position_file = position_file
        self.on_change = on_change
        self.wait = wait
        self.position = 0
        self.recorded = 0
        """Patterns proposed or counted by this follower (for tests and logs)."""
        self._wrong: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._restored = False

    # --- the worker ----------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the log in a daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"patterns {self.actor}")
        self._thread.start()

    def stop(self) -> None:
        """Stop following; the position is saved."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        with self._lock:
            self._save()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
                self.store.wait_for_append(after=self.position, timeout=self.wait)
            except Exception:  # one bad step must not end the follower; the next one retries
                log.exception("pattern follower step failed")
                self._stopping.wait(self.wait)

    def poll_once(self) -> int:
        """Read everything new; the number of patterns proposed or counted."""
        with self._lock:
            if not self._restored:
                self._restore()
                self._restored = True
            before = self.recorded
            head = self.store.head()
            while self.position < head:
                records = self.store.read(after=self.position, limit=PAGE, until=head,
                                          types=_TYPES)
                for record in records:
                    self._on_event(record.position, decode(record).event)
                    self.position = record.position
                if len(records) < PAGE:
                    self.position = head
            changed = self.recorded - before
            if changed:
                self._save()
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:
                log.exception("pattern follower: refreshing the views failed")
        return changed

    # --- what a run event means ----------------------------------------------------------------

    def _on_event(self, position: int, event: Any) -> None:
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

    # --- the saved position --------------------------------------------------------------------

    def _save(self) -> None:
        if self.position_file is None or self.position <= 0:
            return
        try:
            body = {"format": FORMAT, "position": self.position,
                    "hash": self.store.hash_at(self.position),
                    "wrong": [[r, s, o] for r, (s, o) in self._wrong.items()]}
            tmp = self.position_file.with_name(
                f".{self.position_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.position_file)
        except OSError as exc:  # a cache: without it the next start reads from 0
            log.warning("pattern follower: could not save %s: %s", self.position_file, exc)

    def _restore(self) -> None:
        if self.position_file is None:
            return
        try:
            body = json.loads(self.position_file.read_text())
            position = int(body["position"])
            if body.get("format") != FORMAT or position <= 0 or position > self.store.head() \
                    or self.store.hash_at(position) != body["hash"]:
                raise ValueError("it does not match the log")
            wrong = OrderedDict((str(r), (s, str(o))) for r, s, o in body["wrong"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("pattern follower: ignoring %s (%s); reading the log from 0",
                        self.position_file, exc)
            return
        self.position, self._wrong = position, wrong
