"""``gs://`` objects as sources, through the google-cloud-storage client.

``stat`` asks for one object's metadata (a single ``objects.get``, no download): its size,
generation, crc32c and md5. ``stage`` streams exactly that generation (``ifGenerationMatch``)
into a temporary file beside the blob store, computing sha256 and crc32c on the way; the crc32c
must equal the one the metadata gave (else the object changed meanwhile: ``source_changed``),
and the file is then moved into the content-addressed blob store (``adopt_file``: no second
copy), whatever store that is (local or a bucket).

The client is built as the GCS blob store builds its own: ``blobs.endpoint`` points it at an
emulator with anonymous credentials; otherwise the application default credentials, and
``STORAGE_EMULATOR_HOST`` is honoured as by every google-cloud-storage client. Failures are
typed with the codes the blob store uses (``gcs_bucket_not_found``, ``gcs_access_denied``,
``gcs_credentials_missing``, ``gcs_unreachable``, ``gcs_error``) plus
``source_object_missing``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from quipu.adapters._gcs import gcs_client, gcs_errors
from quipu.adapters._storage import storage_errors, temporary_name
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound
from quipu.core.ports import BlobStore, RemoteObject

if TYPE_CHECKING:
    from google.cloud import storage

__all__ = ["GCSSourceObjects", "split_gs_uri"]

# The google client is imported on first use, not with this module: a project that never
# names a gs:// source does not pay for importing it on every command.


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/path/to/object`` -> (``bucket``, ``path/to/object``)."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not bucket or not name:
        raise InvalidInput(f"{uri!r} is not a gs://bucket/object URI", code="unsupported_uri",
                           hint="write gs://<bucket>/<path to the object>")
    return bucket, name


class _Sink:
    """A write-only file that hashes what passes through it (sha256 and crc32c)."""

    def __init__(self, out: IO[bytes]) -> None:
        import google_crc32c

        self.out = out
        self.sha256 = hashlib.sha256()
        self.crc = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.crc.update(data)  # type: ignore[no-untyped-call]
        self.size += len(data)
        return self.out.write(data)

    def crc32c(self) -> str:
        return base64.b64encode(self.crc.digest()).decode()  # type: ignore[no-untyped-call]


class GCSSourceObjects:
    """The ``RemoteSources`` port over Google Cloud Storage; staged objects go to ``blobs``
    through ``staging`` (a directory on the blob store's file system)."""

    def __init__(self, blobs: BlobStore, staging: Path, *, endpoint: str | None = None,
                 project: str | None = None, retry_seconds: float = 60.0,
                 timeout: float = 60.0) -> None:
        """Nothing is sent until the first call."""
        self.blobs = blobs
        self.staging = Path(staging)
        self.endpoint = endpoint
        self.project = project
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        self._retry: Any = None
        self._client: storage.Client | None = None
        self._lock = threading.Lock()

    def _bucket(self, name: str, uri: str) -> storage.Bucket:
        from google.cloud.storage.retry import DEFAULT_RETRY

        with self._lock:
            if self._client is None:
                self._retry = DEFAULT_RETRY.with_timeout(self.retry_seconds)
                with self._errors("connecting for", uri):
                    self._client = gcs_client(self.endpoint, self.project)
            return self._client.bucket(name)

    def _errors(self, doing: str, uri: str) -> contextlib.AbstractContextManager[None]:
        """Translate the client's errors into Quipu's (``doing`` reads "reading"); a 404
        passes through (the caller tells a missing object from a missing bucket)."""
        return gcs_errors(
            doing, uri, retry_seconds=self.retry_seconds, pass_not_found=True,
            access_hint="grant the account Quipu runs as roles/storage.objectViewer on bucket "
            f"{split_gs_uri(uri)[0]!r}; nothing was recorded",
            credentials_hint="run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file; for an emulator "
            "set blobs.endpoint or STORAGE_EMULATOR_HOST; nothing was recorded")

    def _missing(self, bucket: storage.Bucket, uri: str) -> NotFound:
        """What a 404 meant: the bucket is missing, or only the object."""
        with self._errors("looking up the bucket of", uri):
            found = bucket.exists(retry=self._retry, timeout=self.timeout)
        if not found:
            return NotFound(f"the bucket gs://{bucket.name} does not exist (source {uri})",
                            code="gcs_bucket_not_found",
                            hint="check the bucket's name in the URI, or create it "
                            f"(`gcloud storage buckets create gs://{bucket.name}`)")
        return NotFound(f"there is no object {uri}", code="source_object_missing",
                        hint="check the object's path (`gcloud storage ls "
                        f"gs://{bucket.name}/...` lists what is there); nothing was recorded")

    # --- the port ------------------------------------------------------------------------------

    def stat(self, uri: str) -> RemoteObject:
        """The object's metadata: size, generation, crc32c, md5 (one request, no download)."""
        bucket_name, name = split_gs_uri(uri)
        bucket = self._bucket(bucket_name, uri)
        from google.api_core import exceptions as api_exceptions

        with self._errors("reading the metadata of", uri):
            try:
                blob = bucket.get_blob(name, retry=self._retry, timeout=self.timeout)
            except api_exceptions.NotFound:
                blob = None
        if blob is None or blob.size is None or blob.generation is None:
            raise self._missing(bucket, uri)
        return RemoteObject(uri=uri, size=int(blob.size), generation=str(blob.generation),
                            crc32c=blob.crc32c, md5=blob.md5_hash)

    def stage(self, expected: RemoteObject) -> tuple[str, int]:
        """Stream that generation of the object into the blob store; (sha256, size)."""
        bucket_name, name = split_gs_uri(expected.uri)
        bucket = self._bucket(bucket_name, expected.uri)
        from google.api_core import exceptions as api_exceptions

        with storage_errors(self.staging, "staging a source in"):
            self.staging.mkdir(parents=True, exist_ok=True)
        tmp = self.staging / temporary_name(".quipu-stage-")
        try:
            with storage_errors(self.staging, "staging a source in"), open(tmp, "xb") as out:
                sink = _Sink(out)
                with self._errors("downloading", expected.uri):
                    try:
                        bucket.blob(name).download_to_file(
                            sink, if_generation_match=int(expected.generation),
                            retry=self._retry, timeout=self.timeout, checksum=None,
                            raw_download=True)
                    except (api_exceptions.PreconditionFailed, api_exceptions.NotFound):
                        raise self._changed(expected, "it was replaced or deleted while it "
                                            "was being staged") from None
            if sink.size != expected.size or (expected.crc32c is not None
                                              and sink.crc32c() != expected.crc32c):
                raise self._changed(expected, f"the bytes that arrived are {sink.size} bytes "
                                    f"with crc32c {sink.crc32c()}")
            digest, size = self.blobs.adopt_file(tmp)
            if digest != sink.sha256.hexdigest():
                raise IntegrityFailure(f"{expected.uri} changed while it was stored",
                                       code="source_changed",
                                       hint="run again; nothing was recorded")
            return digest, size
        finally:
            with contextlib.suppress(OSError):
                tmp.chmod(0o600)
            tmp.unlink(missing_ok=True)

    def _changed(self, expected: RemoteObject, how: str) -> IntegrityFailure:
        return IntegrityFailure(
            f"the object {expected.uri} is no longer generation {expected.generation} "
            f"(crc32c {expected.crc32c}, {expected.size} bytes): {how}", code="source_changed",
            hint="something rewrote the object: put the registered content back, or register "
            "the new object under a new name; nothing was recorded")

    def has_blob(self, digest: str) -> bool:
        """Whether the blob store holds ``digest``."""
        return self.blobs.exists(digest)

    def verify_blob(self, digest: str) -> None:
        """Check the stored blob against its hash."""
        self.blobs.verify(digest)
