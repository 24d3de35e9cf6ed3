"""What the log records about the project itself: its initialisation and the hosts that joined.

The project's stream holds a handful of events, so reading it whole is cheap on any log.
"""

from __future__ import annotations

from quipu.core.log import decode, stream_id
from quipu.core.ports import EventStore
from quipu.core.project.events import HostJoined, ProjectInitialized

__all__ = ["PROJECT_STREAM", "project_record"]

PROJECT_STREAM = stream_id("project", "project")


def project_record(store: EventStore) -> tuple[ProjectInitialized | None, list[HostJoined]]:
    """The log's ``ProjectInitialized`` (None on an empty log) and every ``HostJoined``."""
    events = [decode(r).event for r in store.load(PROJECT_STREAM)]
    first = next((e for e in events if isinstance(e, ProjectInitialized)), None)
    return first, [e for e in events if isinstance(e, HostJoined)]
