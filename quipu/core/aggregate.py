"""What every aggregate shares: who/why/when of a command, and folding a stream.

An aggregate is a consistency boundary rebuilt from its own stream. It decides (guards raise
typed errors, decisions ``trigger`` events) and folds (``apply``); it never does I/O. The unit of
work (``core.unit_of_work``) loads aggregates and commits their pending events atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from quipu.core.log import stream_id
from quipu.core.messages import Event

__all__ = ["Aggregate", "Meta"]


@dataclass(frozen=True)
class Meta:
    """Who is acting, why, and when: stamped on every event a command emits."""

    actor: str
    reason: str
    at: datetime

    def fields(self) -> dict[str, object]:
        """The base-event fields."""
        return {"actor": self.actor, "reason": self.reason, "at": self.at}


class Aggregate:
    """A consistency boundary rebuilt from its own stream."""

    KIND: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = 0
        self.pending: list[Event] = []

    @property
    def stream(self) -> UUID:
        """This aggregate's stream id."""
        return stream_id(self.KIND, self.name)

    def replay(self, event: Event) -> None:
        """Fold a stored event (advances the version)."""
        self.apply(event)
        self.version += 1

    def trigger(self, event: Event) -> None:
        """Record a new event: fold it now, append it when the command commits."""
        self.apply(event)
        self.pending.append(event)

    def apply(self, event: Event) -> None:  # pragma: no cover - overridden
        """Fold one event into the state."""
        raise NotImplementedError
