"""Source file adapters: local files described from their headers (the default)."""

from .local import LocalSourceFiles

__all__ = ["LocalSourceFiles"]
