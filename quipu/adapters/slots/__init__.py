"""Slot adapters: plain directories under ``workspaces/`` (no git)."""

from .local import LocalSlotFiles

__all__ = ["LocalSlotFiles"]
