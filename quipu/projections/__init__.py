"""Read models folded from the log: workspaces, versions, slots, thoughts, the audit trail, runs
(history, metrics, tags, the unfinalized queue), dashboard cursors and STATE.md. Each projection
tracks its own log position in the same SQLite transaction as its rows, so the views can be
thrown away and rebuilt, or replayed as of any past position."""

import sys


def _import_sqlite_utils_without_dataframes() -> None:
    """Import sqlite-utils without letting it import pandas and numpy.

    sqlite-utils imports both at import time, when installed, only to map their value types to
    column types. The views never store such values, and the two (pandas brings pyarrow) cost
    most of a command's start-up: ``quipu status`` would spend its time importing them. If
    another module imported them already, nothing is hidden.
    """
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import pandas" raises ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


_import_sqlite_utils_without_dataframes()

from .replay import position_at, replay_views  # noqa: E402
from .views import Views  # noqa: E402

__all__ = ["Views", "position_at", "replay_views"]
