"""Executors: where stage runs execute. ``LocalExecutor`` (subprocesses) is the default.

The package imports lazily: every stage process starts through
``quipu.adapters.executors._wrapper``, which must not pay for the executor's own imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local import LocalExecutor

__all__ = ["LocalExecutor"]


def __getattr__(name: str) -> Any:
    if name == "LocalExecutor":
        from .local import LocalExecutor

        return LocalExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
