"""The Cursor aggregate: one reader's "seen up to here" position, moved only by ``mark_seen``."""

from __future__ import annotations

from typing import Any

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.messages import Event
from quipu.core.project.events import CursorMoved

__all__ = ["Cursor"]


class Cursor(Aggregate):
    """What one consumer (an agent, a dashboard) has seen of the log."""

    KIND = "cursor"
    SNAPSHOT_SCHEMA = 1

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.position = 0

    def move(self, meta: Meta, position: int) -> None:
        """Record that the consumer has seen everything up to ``position`` (back is allowed)."""
        self.trigger(CursorMoved(**meta.fields(), consumer=self.name, position=position))

    def state_dict(self) -> dict[str, Any]:
        """The folded state as JSON values (a snapshot)."""
        return {"position": self.position}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a snapshot's state."""
        self.position = int(data["position"])

    def apply(self, event: Event) -> None:
        """Fold one event of the cursor's stream."""
        if isinstance(event, CursorMoved):
            self.position = event.position
