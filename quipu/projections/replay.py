"""The views as they were: at a past log position, or at a past moment.

An audit asks "what did the agent see at position N (or at 14:02)?". ``replay_views`` folds the
log up to that position into a fresh file; ``position_at`` finds the position for a time.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from quipu.core.ports import EventStore

from ._base import PAGE_SIZE
from .views import Views

__all__ = ["position_at", "replay_views"]


def replay_views(store: EventStore, until_position: int, workdir: Path) -> Views:
    """Views folded up to ``until_position``, in a new temporary directory under ``workdir``.

    The caller closes the returned views and owns ``workdir`` (a ``TemporaryDirectory`` works).
    """
    directory = Path(tempfile.mkdtemp(prefix="quipu-replay-", dir=workdir))
    views = Views(directory / "views.db", store, until=until_position)
    views.catch_up()
    return views


def _stamp(state: bytes) -> datetime:
    data = json.loads(state[state.index(b"\n") + 1 :])
    at = datetime.fromisoformat(data["at"])
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def position_at(store: EventStore, iso_time: datetime) -> int:
    """The head of the log as it stood at ``iso_time``: the last position before the first
    event stamped later (0 if the log starts later). A naive time is taken as UTC.

    With one clock this is the last position whose event's ``at`` is <= the time; should clocks
    disagree, the scan still stops at the first later stamp, so the answer is a prefix of the log.
    """
    when = iso_time if iso_time.tzinfo is not None else iso_time.replace(tzinfo=UTC)
    position = 0
    while True:
        page = store.read(after=position, limit=PAGE_SIZE)
        for record in page:
            if _stamp(record.state) > when:
                return position
            position = record.position
        if len(page) < PAGE_SIZE:
            return position
