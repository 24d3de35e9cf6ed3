"""Source adapters: local files described from their headers (the default), and ``gs://``
objects (``quipu.adapters.sources.gcs``, imported where a project is opened)."""

from .local import LocalSourceFiles

__all__ = ["LocalSourceFiles"]
