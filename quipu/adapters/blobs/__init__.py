"""Blob store adapters: a local content-addressed directory (the default)."""

from .local import LocalBlobStore

__all__ = ["LocalBlobStore"]
