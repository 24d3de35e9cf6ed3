"""Following the log from an adapter's own position, woken by appends.

A follower reads the event types it cares about in pages after its position, folds each one
(a failure with one event is logged and counted, never fatal), and after every catch-up acts
once on what it learned (``caught_up``). Its thread blocks in ``EventStore.wait_for_append``
between steps, at most ``tick`` seconds, so time-based rules still run while the log is quiet.

With ``position_file`` the position and the fold (``state_dict``) are saved after a catch-up
(at most every ``save_every`` seconds, and on ``stop``), anchored to the log's chain hash there,
so a restarted follower reads only what came after. A file that does not parse, names a
position the log does not reach or another history there is ignored: the follower folds from 0.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.ports import EventStore

__all__ = ["LogFollower"]

log = logging.getLogger("quipu.svs")


class LogFollower:
    """Base of the SVS adapters: ``fold`` each event of ``TYPES``, then ``caught_up``."""

    TYPES: ClassVar[tuple[str, ...]] = ()
    NAME: ClassVar[str] = "follower"

    FORMAT: ClassVar[int] = 1
    """The saved file's shape; another number is ignored (fold from 0)."""

    def __init__(self, store: EventStore, *, tick: float = 1.0, page: int = 500,
                 position_file: Path | None = None, save_every: float = 1.0) -> None:
        self.store = store
        self.tick = tick
        self.page = page
        self.position = 0
        self.position_file = position_file
        self.save_every = save_every
        self._restored = False
        self._saved = (0, 0.0)  # (position, monotonic time) of the last save
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

    def state_dict(self) -> dict[str, Any]:
        """What was folded up to ``position``, as JSON values (saved with it)."""
        return {}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold (the inverse of ``state_dict``)."""

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
        self.save(force=True)

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
        if not self._restored:
            self._restore()
            self._restored = True
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
        self.save()
        return head

    # --- the saved position ----------------------------------------------------------------------

    def _anchor(self, position: int) -> str | None:
        if position <= 0 or position > self.store.head():
            return None
        return self.store.hash_at(position)

    def _restore(self) -> None:
        if self.position_file is None or self.position:
            return
        try:
            body = json.loads(self.position_file.read_text())
            if body.get("format") != self.FORMAT:
                return
            if self._anchor(int(body["position"])) != body["hash"]:
                log.warning("%s: %s does not match the log; reading it from 0", self.NAME,
                            self.position_file)
                return
            self.load_state_dict(body["state"])
            self.position = int(body["position"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: ignoring %s (%s); reading the log from 0", self.NAME,
                        self.position_file, exc)
            self.load_state_dict({})  # whatever a half-read file left behind is dropped

    def save(self, force: bool = False) -> None:
        """Save the position and the fold (throttled unless ``force``); never raises."""
        if self.position_file is None or not self._restored:
            return
        last, at = self._saved
        now = time.monotonic()
        if self.position == last or (not force and now - at < self.save_every):
            return
        try:
            anchor = self._anchor(self.position)
            if anchor is None:
                return
            body = {"format": self.FORMAT, "position": self.position, "hash": anchor,
                    "state": self.state_dict()}
            path = self.position_file
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(json.dumps(body, separators=(",", ":")))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._saved = (self.position, now)
        except Exception:  # a cache that cannot be written only costs a longer restart
            log.exception("%s: the position was not saved", self.NAME)
