"""Seal keepers: where ``quipu audit seal`` records the log's head, away from the log itself."""

from .auto import AutoSealingStore
from .key import read_key_file
from .local import LocalSealKeeper, open_local_seals

__all__ = ["AutoSealingStore", "LocalSealKeeper", "open_local_seals", "read_key_file"]
