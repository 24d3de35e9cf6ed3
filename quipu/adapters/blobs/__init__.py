"""Blob store adapters: a local content-addressed directory (the default) and a GCS bucket
(``quipu.adapters.blobs.gcs``, imported only when ``blobs.url`` names one: the client library
is slow to import)."""

from .local import LocalBlobStore

__all__ = ["LocalBlobStore"]
