"""Seal keepers: where ``quipu audit seal`` records the log's head, away from the log itself."""

from .local import LocalSealKeeper, open_local_seals

__all__ = ["LocalSealKeeper", "open_local_seals"]
