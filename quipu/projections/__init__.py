"""Read models folded from the log: workspaces, versions, slots, thoughts, the audit trail, runs
(history, metrics, tags, the unfinalized queue), dashboard cursors and STATE.md. Each projection
tracks its own log position in the same SQLite transaction as its rows, so the views can be
thrown away and rebuilt, or replayed as of any past position."""

from .replay import position_at, replay_views
from .views import Views

__all__ = ["Views", "position_at", "replay_views"]
