"""Where the executor left off: its position in the log and what it had folded up to there.

What the executor knows is a pure fold of the run events up to its position: the ``RunBook``
(every run that is not finalized: state, time of its latest event, upstream runs) and the queued
runs in log order. Saving both with the position lets a restarted executor read only what came
after, instead of the whole log from position 0.

The file (``.quipu/executor.json``) is a cache of the log, and it defends itself like one: it
names the position AND the log's chain hash there (``EventStore.hash_at``, what the views anchor
their position to as well). On load the log is asked again; if the position is past its head (a
log restored from an older copy, a lost WAL) or the hash differs (another history), the file is
ignored and the executor folds from 0. A file that does not parse is ignored the same way. It
is written to a unique temporary name and renamed over the old one, so a ``kill -9`` leaves the
old file or the new one, never half of either; several executors of one project may share it,
because any consistent fold of a prefix of the log is a correct place to continue from.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from quipu.core.ports import EventStore
from quipu.core.runs.lifecycle import State

from ._supervisor import BookEntry

__all__ = ["FORMAT", "Saved", "anchor_at", "load_position", "save_position"]

log = logging.getLogger("quipu.executor")

FORMAT = 2
"""Bumped when the file's shape changes; another number is ignored (the executor folds from 0)."""


@dataclass
class Saved:
    """A validated saved position: where to continue and what was folded up to there."""

    position: int
    runs: dict[str, BookEntry]
    pending: list[str]


def anchor_at(store: EventStore, position: int) -> str | None:
    """The log's chain hash at ``position``; None when the log does not reach it."""
    if position <= 0 or position > store.head():
        return None
    return store.hash_at(position)


def save_position(path: Path, store: EventStore, position: int, runs: dict[str, BookEntry],
                  pending: list[str]) -> bool:
    """Write the position and the fold atomically; False when there is nothing to anchor it to.

    Position 0 needs no file (that is where a fresh executor starts anyway).
    """
    anchor = anchor_at(store, position)
    if anchor is None:
        return False
    body = {
        "format": FORMAT,
        "position": position,
        "hash": anchor,
        "runs": {run_id: {"state": e.state.value, "at": e.at.isoformat(),
                          "depends_on": list(e.depends_on)} for run_id, e in runs.items()},
        "pending": list(pending),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and thread: two executors saving at once must not share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(body, separators=(",", ":")))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def load_position(path: Path, store: EventStore) -> Saved | None:
    """The saved position if it still matches the log, else None (fold from 0)."""
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("executor: ignoring unreadable %s (%s); reading the log from 0", path, exc)
        return None
    try:
        saved = _parse(body)
        expected = str(body["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("executor: ignoring malformed %s (%s); reading the log from 0", path, exc)
        return None
    found = anchor_at(store, saved.position)
    if found != expected:
        log.warning("executor: %s names position %d, which the log %s; reading the log from 0",
                    path, saved.position,
                    "does not hold" if found is None else "holds with other content")
        return None
    return saved


def _parse(body: Any) -> Saved:
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("not a saved executor position of this format")
    position = body["position"]
    if not isinstance(position, int) or isinstance(position, bool) or position <= 0:
        raise ValueError(f"bad position {position!r}")
    runs = {str(run_id): BookEntry(State(e["state"]), datetime.fromisoformat(e["at"]),
                                   tuple(str(d) for d in e["depends_on"]))
            for run_id, e in body["runs"].items()}
    pending = [str(run_id) for run_id in body["pending"]]
    return Saved(position, runs, pending)
