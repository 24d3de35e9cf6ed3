"""The facade's lineage reads: the graph around any node, and the exports of the log.

``quipu.app.facade.Quipu`` inherits it. ``get_lineage`` reads the lineage view (caught up
first); the exports fold the log itself (``quipu.exports``), so they can be asked as of any
past position. Nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quipu.core.ports import EventStore
    from quipu.projections import Views

__all__ = ["LineageQueries"]


class LineageQueries:
    """Lineage queries over ``views`` and the log ``store`` (set by the facade)."""

    views: Views
    store: EventStore

    def get_lineage(self, ref: str, *, direction: str = "upstream", depth: int = 5,
                    kinds: Sequence[str] | None = None, limit: int = 60) -> dict[str, Any]:
        """The lineage graph around what ``ref`` names (a run id, ``ws@v3``, a workspace,
        ``@tag`` / ``ws@tag``, a content hash or its prefix): nodes nearest first with one-line
        labels, edges ``[from, kind, to, name?]`` from upstream to downstream, counts, and
        whether anything was left out. ``direction`` is upstream (what it came from),
        downstream (what used it) or both; ``kinds`` keeps the walk to those node kinds."""
        self.views.catch_up()
        return self.views.lineage(ref, direction=direction, depth=depth, kinds=kinds,
                                  limit=limit)
