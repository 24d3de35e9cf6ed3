"""Following the log from an adapter's own saved position, woken by appends.

Several adapters (the review worker, the failure-pattern follower, the during-run monitor and
the post-run review) follow the log the same way; ``LogFollower`` is that one way:

* **Reading.** ``poll_once`` reads the event types the adapter cares about (``TYPES``) in pages
  of ``page`` after its position, up to the head it saw when it began, and folds each one
  (``fold``; ``position`` is that event's position meanwhile). Then the position is the head,
  so the next read never scans the other events again. After every catch-up the adapter acts
  once on what it learned (``caught_up``), and whatever that returns ``poll_once`` returns.
* **Faults.** An event the fold cannot take (it raises) is logged with its position, counted
  in ``errors`` and skipped: one bad event never stops a follower. A fault of the outside world
  (``Unavailable``, ``OSError``: the log or the disk in trouble) is not the event's fault, so it
  stops the catch-up *before* that event and the next step reads it again.
* **Waking.** ``start`` runs the steps in a daemon thread that blocks in
  ``EventStore.wait_for_append`` between them, at most ``tick`` seconds, so an append wakes it
  at once and time-based rules still run while the log is quiet. A step that fails is logged
  and retried a tick later.
* **The saved position.** With ``position_file``, the position and the fold (``state_dict``)
  are saved after a catch-up that moved (at most every ``save_every`` seconds) and on ``stop``,
  anchored to the log's chain hash at that position, written to a temporary file and renamed
  into place. A restarted follower restores them on its first step and reads only what came
  after. The file is a cache, never a record: one that does not parse, has another ``FORMAT``,
  names a position the log does not reach, or another history there (a log restored from an
  older copy, another project's file) is ignored, and the follower folds the log from 0 (every
  adapter is idempotent, so reading again records nothing twice).

The file is ``{"format", "position", "hash"}`` plus the fold: under ``"state"``, or, for an
adapter whose ``STATE_KEY`` is None, beside those three keys (the layout the review worker's and
the pattern follower's files had before this base existed, kept so that their files load).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from quipu.core.errors import Unavailable
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.ports import EventStore

__all__ = ["ANCHOR_KEYS", "RETRIED", "LogFollower"]

T = TypeVar("T")

ANCHOR_KEYS = ("format", "position", "hash")
"""The keys of a position file that are not the fold."""

RETRIED: tuple[type[BaseException], ...] = (Unavailable, OSError)
"""Faults of the outside world: the event that met one is read again on the next step."""

_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError)
"""What reading a damaged or foreign position file can raise (it is then ignored)."""


class LogFollower(Generic[T]):
    """Base of the log-following adapters: ``fold`` each event of ``TYPES``, then ``caught_up``.

    A subclass sets ``TYPES`` (the event types it folds), ``NAME`` (its thread and log name)
    and ``LOGGER``, implements ``fold`` and ``caught_up``, and, when it saves a fold,
    ``state_dict``/``load_state_dict``.
    """

    TYPES: ClassVar[tuple[str, ...]] = ()
    NAME: ClassVar[str] = "follower"
    LOGGER: ClassVar[str] = "quipu.follow"

    FORMAT: ClassVar[int] = 1
    """The saved file's shape; a file with another number is ignored (fold from 0)."""
    STATE_KEY: ClassVar[str | None] = "state"
    """Where the fold sits in the saved file; None: beside ``format``, ``position``, ``hash``."""

    def __init__(self, store: EventStore, *, tick: float = 1.0, page: int = 500,
                 position_file: Path | None = None, save_every: float = 1.0,
                 name: str | None = None) -> None:
        self.store = store
        self.tick = tick
        self.page = page
        self.position = 0
        self.position_file = position_file
        self.save_every = save_every
        self.name = name or self.NAME
        self.log = logging.getLogger(self.LOGGER)
        self.errors = 0
        """Events or steps that raised (logged and skipped): a bad event never stops it."""
        self.read_events = 0
        """Events folded since this follower was made (tests and logs)."""
        self._restored = False
        self._saved = (0, 0.0)  # (position, monotonic time) of the last save
        # One step at a time: stop() saves while a step may still be running, and tests drive
        # poll_once() by hand beside the thread. Re-entrant: a step saves under it.
        self._step = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what a subclass says --------------------------------------------------------------------

    def fold(self, event: Event) -> None:  # pragma: no cover - overridden
        """Learn from one event (``position`` is its position). No I/O besides reading."""
        raise NotImplementedError

    def caught_up(self) -> T:  # pragma: no cover - overridden
        """Act on what the events folded so far say; what it returns ``poll_once`` returns."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What was folded up to ``position``, as JSON values (saved with it)."""
        return {}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a saved fold (the inverse of ``state_dict``).

        It raises (``KeyError``, ``ValueError``, ``TypeError``) *before* it changes anything
        when ``data`` does not fit; the follower then folds the log from 0.
        """

    # --- the thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the log in a background daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
        self._thread.start()

    def stop(self) -> None:
        """Stop following the log, wait for the thread and save the position."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._thread = None
        self.save(force=True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # a failed step is retried a tick later, never the end
                self.errors += 1
                self.log.exception("%s: a step failed", self.name)
                self._stopping.wait(self.tick)
                continue
            self._wait(self.position)

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
                self.log.exception("%s: waiting for the log failed", self.name)
                self._stopping.wait(min(left, 1.0))

    # --- following the log -----------------------------------------------------------------------

    def poll_once(self) -> T:
        """Read every new event of ``TYPES``, fold them, act once, save; ``caught_up``'s answer."""
        with self._step:
            if not self._restored:
                self._restore()
                self._restored = True
            self.catch_up()
            result = self.caught_up()
            self.save()
            return result

    def catch_up(self) -> int:
        """Fold every new event of ``TYPES`` up to the head seen now; return that head."""
        head = self.store.head()
        while self.position < head:
            records = self.store.read(after=self.position, limit=self.page, until=head,
                                      types=self.TYPES)
            for record in records:
                before, self.position = self.position, record.position
                self.read_events += 1
                try:
                    self.fold(decode(record).event)
                except RETRIED:
                    self.position = before  # not the event's fault: read it again next step
                    raise
                except Exception:
                    self.errors += 1
                    self.log.exception("%s: event at position %d skipped", self.name,
                                       record.position)
            if len(records) < self.page:
                self.position = head
        return head

    # --- the saved position ----------------------------------------------------------------------

    def _anchor(self, position: int) -> str | None:
        """The log's chain hash at ``position``; None where the log does not reach."""
        if position <= 0 or position > self.store.head():
            return None
        return self.store.hash_at(position)

    def _restore(self) -> None:
        """Continue from the saved position and fold when they still match the log."""
        if self.position_file is None or self.position:
            return
        try:
            body = json.loads(self.position_file.read_text())
            position = int(body["position"])
            if body.get("format") != self.FORMAT:
                raise ValueError(f"format {body.get('format')!r} is not {self.FORMAT}")
            if self._anchor(position) != body["hash"]:
                raise ValueError("it does not match the log")
            self.load_state_dict(body if self.STATE_KEY is None else body[self.STATE_KEY])
        except FileNotFoundError:
            return
        except _UNREADABLE as exc:
            self.log.warning("%s: ignoring %s (%s); reading the log from 0", self.name,
                             self.position_file, exc)
            return
        self.position = position
        self._saved = (position, time.monotonic())
        self.log.info("%s: continuing from position %d of the log", self.name, position)

    def save(self, force: bool = False) -> None:
        """Save the position and the fold (throttled unless ``force``); never raises."""
        with self._step:
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
                state = self.state_dict()
                body: dict[str, Any] = {"format": self.FORMAT, "position": self.position,
                                        "hash": anchor}
                if self.STATE_KEY is None:
                    body.update({k: v for k, v in state.items() if k not in ANCHOR_KEYS})
                else:
                    body[self.STATE_KEY] = state
                _write_atomically(self.position_file, json.dumps(body, separators=(",", ":")))
                self._saved = (self.position, now)
            except Exception:  # a cache that cannot be written only costs a longer restart
                self.log.exception("%s: the position was not saved", self.name)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place: a reader (or a
    restart after a ``kill -9``) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
