"""Following the log from an adapter's own position, woken by appends.

A follower reads the event types it cares about in pages after its position, folds each one
(a failure with one event is logged and counted, never fatal), and after every catch-up acts
once on what it learned (``caught_up``). Its thread blocks in ``EventStore.wait_for_append``
between steps, at most ``tick`` seconds, so time-based rules still run while the log is quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import ClassVar

from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.ports import EventStore

__all__ = ["LogFollower"]

log = logging.getLogger("quipu.svs")


class LogFollower:
    """Base of the SVS adapters: ``fold`` each event of ``TYPES``, then ``caught_up``."""

    TYPES: ClassVar[tuple[str, ...]] = ()
    NAME: ClassVar[str] = "follower"

    def __init__(self, store: EventStore, *, tick: float = 1.0, page: int = 500) -> None:
        self.store = store
        self.tick = tick
        self.page = page
        self.position = 0
        self.errors = 0
        """Events or steps that raised (logged and skipped): a bad event never stops it."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def fold(self, event: Event) -> None:  # pragma: no cover - overridden
        """Learn from one event (no I/O besides reading)."""
        raise NotImplementedError

    def caught_up(self) -> None:  # pragma: no cover - overridden
        """Act on what the events folded so far say (append findings, suggestions)."""
        raise NotImplementedError

    def start(self) -> None:
        """Follow the log in a background daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.NAME)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the log and wait for the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            head = self.position
            try:
                head = self.poll_once()
            except Exception:  # a failed step is retried on the next one
                self.errors += 1
                log.exception("%s: a step failed", self.NAME)
            self._wait(head)

    def _wait(self, head: int) -> None:
        """Until the log grows past ``head``, ``stop``, or ``tick`` seconds pass."""
        deadline = time.monotonic() + self.tick
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:  # short slices, so that stop() is noticed soon
                if self.store.wait_for_append(after=head, timeout=min(left, 0.25)) > head:
                    return
            except Exception:
                log.exception("%s: waiting for the log failed", self.NAME)
                self._stopping.wait(min(left, 1.0))

    def poll_once(self) -> int:
        """Read every new event of ``TYPES``, fold them, act once; return the head read to."""
        head = self.store.head()
        while self.position < head:
            records = self.store.read(after=self.position, limit=self.page, until=head,
                                      types=self.TYPES)
            for record in records:
                self.position = record.position
                try:
                    self.fold(decode(record).event)
                except Exception:
                    self.errors += 1
                    log.exception("%s: event at position %d skipped", self.NAME,
                                  record.position)
            if len(records) < self.page:
                self.position = head
        self.caught_up()
        return head
