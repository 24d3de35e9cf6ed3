"""Blobs in a Google Cloud Storage bucket (``gs://bucket/prefix``) behind a local read-through
cache.

Objects are named by content, ``<prefix>/sha256/<digest>``, so a blob is uploaded once: a
small one is sent with the precondition "create only" (``ifGenerationMatch=0``) and a 412 means
it is there already; a large one (past ``resumable_threshold``) first asks for the object's
metadata and is sent as a resumable upload in ``chunk_size`` pieces only when it is absent. An
object whose size or crc32c does not match the bytes being stored (it was overwritten by hand)
is replaced, which repairs it. Every upload is checked against the crc32c the server reports.

Reads are verified: the bytes fetched are hashed while they stream into the cache and refused
with ``blob_corrupt`` (naming the ``gs://`` object) when they do not hash to their name; nothing
damaged is cached or returned. The cache is a ``LocalBlobStore`` under ``.quipu/blobcache``
bounded to ``cache_bytes`` (least recently read evicted first), so a repeated read costs no
network; a cached file that was damaged is dropped and fetched again. Outputs adopted by the
executor are moved into the cache and uploaded from there: the cache is the only local copy.

Every call is retried with exponential backoff for ``retry_seconds`` (uploads by content are
idempotent, so always safe to retry), then raised as a typed error with a hint:
``gcs_bucket_not_found``, ``gcs_access_denied``, ``gcs_credentials_missing``,
``gcs_unreachable``, ``gcs_error``. An upload that failed leaves no object behind that a
reader could take for the blob (a resumable upload is only visible once complete) and the
caller records nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import google_crc32c
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from quipu.adapters._gcs import gcs_client, gcs_errors
from quipu.adapters._storage import storage_errors, temporary_name
from quipu.adapters.blobs.local import TEMP_PREFIX, LocalBlobStore, is_sealed
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound, Unavailable

__all__ = ["DEFAULT_CACHE_BYTES", "GCSBlobStore", "parse_gs_url"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 20 << 30
_CHUNK = 1 << 20


_T = TypeVar("_T")


def _copy_verified(source: Path, dest: Path) -> None:
    """Copy a file that was just verified to ``dest`` atomically (no second hash)."""
    tmp = dest.parent / temporary_name(".quipu-tmp-")
    try:
        with storage_errors(dest, "writing"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); ``InvalidInput`` if not."""
    if not url.startswith("gs://") or not url[5:].split("/", 1)[0]:
        raise InvalidInput(f"{url!r} is not a gs:// URL", code="invalid_blobs_url",
                           hint="write blobs.url as gs://BUCKET or gs://BUCKET/PREFIX, or local")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class _Hashing:
    """A write-only file that hashes what passes through it (sha256 and crc32c)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)


class _Crc32c:
    """crc32c as GCS reports it (base64 of the big-endian checksum); the C implementation."""

    def __init__(self, data: bytes = b"") -> None:
        self._crc = google_crc32c.Checksum(data)  # type: ignore[no-untyped-call]

    def update(self, data: bytes) -> None:
        self._crc.update(data)  # type: ignore[no-untyped-call]

    def b64(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()  # type: ignore[no-untyped-call]


class GCSBlobStore:
    """Content-addressed blobs in a GCS bucket, with a bounded local read-through cache."""

    def __init__(self, url: str, cache_dir: Path, *, cache_bytes: int = DEFAULT_CACHE_BYTES,
                 endpoint: str | None = None, project: str | None = None,
                 retry_seconds: float = 60.0, chunk_size: int = 16 << 20,
                 resumable_threshold: int = 8 << 20, timeout: float = 60.0) -> None:
        """Open the store at ``url``; nothing is sent until the first call.

        ``endpoint`` points the client at an emulator (anonymous credentials); without it the
        client uses the application default credentials (``STORAGE_EMULATOR_HOST`` is also
        honoured, as by every google-cloud-storage client).
        """
        self.url = url
        self.bucket_name, self.prefix = parse_gs_url(url)
        self.cache = LocalBlobStore(Path(cache_dir), fsync=False)
        self.cache_bytes = cache_bytes
        self.endpoint = endpoint
        self.project = project
        self.retry_seconds = retry_seconds
        self.chunk_size = max(256 << 10, chunk_size // (256 << 10) * (256 << 10))
        self.resumable_threshold = resumable_threshold
        self.timeout = timeout
        self._retry: Retry = DEFAULT_RETRY.with_timeout(retry_seconds)
        self._client: storage.Client | None = None
        self._lock = threading.Lock()
        self._known: set[str] = set()  # digests this process saw in the bucket
        self._cached_total: int | None = None

    # --- the client and its errors ---------------------------------------------------------

    def _bucket(self) -> storage.Bucket:
        with self._lock:
            if self._client is None:
                with self._errors("connecting to"):
                    self._client = gcs_client(self.endpoint, self.project)
            return self._client.bucket(self.bucket_name)

    def _object(self, digest: str) -> str:
        self.cache.path(digest)  # refuses a name that is not a digest (unknown_blob)
        return f"{self.prefix}sha256/{digest}"

    def _where(self, digest: str) -> str:
        return f"gs://{self.bucket_name}/{self._object(digest)}"

    def _errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """Translate the client's errors into Quipu's (``doing`` reads "uploading to")."""
        return gcs_errors(
            doing, f"gs://{self.bucket_name}/{self.prefix}", retry_seconds=self.retry_seconds,
            access_hint=f"grant the account Quipu runs as roles/storage.objectAdmin on bucket "
            f"{self.bucket_name!r} (objects are created and read, never listed)",
            credentials_hint="run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file; for an emulator "
            "set STORAGE_EMULATOR_HOST")

    def _check_bucket(self) -> None:
        """Raise ``gcs_bucket_not_found`` if the bucket is missing (asked only after a 404)."""
        bucket = self._bucket()
        with self._errors("looking up"):
            found = bucket.exists(retry=self._retry, timeout=self.timeout)
        if not found:
            raise self.bucket_missing()

    def bucket_missing(self) -> NotFound:
        """The error for a bucket that does not exist."""
        return NotFound(f"the bucket gs://{self.bucket_name} does not exist",
                        code="gcs_bucket_not_found",
                        hint=f"create it (`gcloud storage buckets create gs://"
                        f"{self.bucket_name}`) or fix blobs.url in quipu.yaml / "
                        "QUIPU_BLOBS_URL")

    def check(self) -> str:
        """Prove the store is usable: the bucket exists and a blob can be written and read
        back; return a one-line summary (for ``quipu doctor``)."""
        self._check_bucket()
        probe = b"quipu blob store check\n"
        digest = self.put_bytes(probe)
        self._known.discard(digest)
        with self._errors("reading from"):
            data = self._bucket().blob(self._object(digest)).download_as_bytes(
                retry=self._retry, timeout=self.timeout, checksum=None)
        if data != probe:
            raise IntegrityFailure(f"{self._where(digest)} did not read back as written",
                                   code="blob_corrupt", hint="check the bucket's contents")
        return f"gs://{self.bucket_name}/{self.prefix} is writable and readable"

    # --- writes ------------------------------------------------------------------------------

    def _stored_matches(self, blob: storage.Blob | None, size: int, crc: str) -> bool:
        return blob is not None and blob.size == size and blob.crc32c == crc

    def _upload(self, digest: str, size: int, crc: str, source: IO[bytes]) -> None:
        """Send ``source`` as the object for ``digest`` unless the bucket already has it."""
        if digest in self._known:
            return
        bucket = self._bucket()
        name = self._object(digest)
        generation: int | None = 0
        with self._errors("uploading to"):
            if size > self.resumable_threshold:
                existing = bucket.get_blob(name, retry=self._retry, timeout=self.timeout)
                if self._stored_matches(existing, size, crc):
                    self._known.add(digest)
                    return
                generation = existing.generation if existing is not None else 0
            resumable = size > self.resumable_threshold
            for _attempt in range(2):
                blob = bucket.blob(name, chunk_size=self.chunk_size if resumable else None)
                blob.metadata = {"sha256": digest}
                source.seek(0)
                try:
                    # Without a size the client always uploads in resumable chunks.
                    blob.upload_from_file(source, size=None if resumable else size,
                                          if_generation_match=generation,
                                          checksum=None, retry=self._retry,
                                          timeout=self.timeout)
                except api_exceptions.PreconditionFailed:
                    existing = bucket.get_blob(name, retry=self._retry, timeout=self.timeout)
                    if self._stored_matches(existing, size, crc):
                        break
                    generation = existing.generation if existing is not None else 0
                    continue  # damaged or replaced by hand: write it again (a repair)
                except api_exceptions.NotFound:
                    self._check_bucket()
                    raise
                if blob.crc32c is not None and blob.crc32c != crc:
                    raise IntegrityFailure(
                        f"{self._where(digest)} arrived damaged (crc32c {blob.crc32c}, "
                        f"sent {crc})", code="blob_upload_corrupt",
                        hint="retry; if it repeats, the network or the store corrupts data")
                break
            else:
                raise Unavailable(f"{self._where(digest)} kept changing while it was stored",
                                  code="gcs_error",
                                  hint="another writer replaces the object; retry")
        self._known.add(digest)

    def put_bytes(self, data: bytes) -> str:
        """Store bytes (uploaded once; also cached); return their sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._known:
            crc = _Crc32c(data).b64()
            self._upload(digest, len(data), crc, io.BytesIO(data))
        if not self.cache.exists(digest):
            self._cache_in(self.cache.put_bytes(data), len(data))
        return digest

    def put_file(self, path: Path) -> tuple[str, int]:
        """Stream a file to the bucket (resumable past the threshold); return (sha256, size).

        The file is read twice (hashed, then sent) and not cached. ``FileNotFoundError`` if it
        is missing.
        """
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed just below
        except FileNotFoundError:
            raise
        with src:
            with storage_errors(path, "reading"):
                sha, crc, size = hashlib.sha256(), _Crc32c(), 0
                buffer = bytearray(_CHUNK)
                view = memoryview(buffer)
                while n := src.readinto(buffer):
                    sha.update(view[:n])
                    crc.update(bytes(view[:n]))
                    size += n
                digest = sha.hexdigest()
            self._upload(digest, size, crc.b64(), src)
        return digest, size

    def adopt_file(self, path: Path) -> tuple[str, int]:
        """Move the file into the cache (its only local copy), leave a read-only hard link at
        ``path``, and stream it to the bucket; return (sha256, size)."""
        digest, size = self.cache.adopt_file(path)
        self._cache_in(digest, size)
        cached = self.cache.path(digest)
        with open(cached, "rb") as src:
            crc = _Crc32c()
            while chunk := src.read(_CHUNK):
                crc.update(chunk)
            self._upload(digest, size, crc.b64(), src)
        return digest, size

    # --- the cache -----------------------------------------------------------------------------

    def _cache_in(self, digest: str, size: int) -> None:
        """Account for a file just cached; evict the least recently read past the bound."""
        self._touch(self.cache.path(digest))
        with self._lock:
            if self._cached_total is None:
                self._cached_total = sum(p.stat().st_size for p in self.cache.root.rglob("*")
                                         if p.is_file() and not p.name.startswith(TEMP_PREFIX))
            else:
                self._cached_total += size
            if self._cached_total <= self.cache_bytes:
                return
            keep = self.cache.path(digest)
            files = []
            for p in self.cache.root.glob("??/*"):
                with contextlib.suppress(FileNotFoundError):
                    stat = p.stat()
                    files.append((stat.st_atime_ns, stat.st_size, p))
            total = sum(size for _, size, _ in files)
            for _, size_, p in sorted(files, key=lambda f: f[0]):
                if total <= self.cache_bytes * 0.9:
                    break
                if p != keep:
                    p.unlink(missing_ok=True)
                    total -= size_
            self._cached_total = total

    def _touch(self, path: Path) -> None:
        """Mark a cached file as read now (the atime orders eviction; the seal is kept)."""
        with contextlib.suppress(OSError):
            stat = path.stat()
            os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))

    def _download(self, digest: str, out: IO[bytes]) -> str:
        """Stream the object into ``out``; return the sha256 of what arrived."""
        bucket = self._bucket()
        hashing = _Hashing(out)
        with self._errors("downloading from"):
            try:
                bucket.blob(self._object(digest)).download_to_file(
                    hashing, retry=self._retry, timeout=self.timeout, checksum=None,
                    raw_download=True)
            except api_exceptions.NotFound:
                self._check_bucket()
                raise NotFound(f"blob {digest[:12]} is not in {self.url}", code="unknown_blob",
                               hint="it was never uploaded from the machine that made it, or "
                               "the bucket was pruned; store it again there") from None
        return hashing.sha256.hexdigest()

    def _corrupt(self, digest: str, actual: str) -> IntegrityFailure:
        return IntegrityFailure(
            f"blob {digest} at {self._where(digest)} does not match its hash (its bytes hash "
            f"to {actual[:12]}); nothing was written", code="blob_corrupt",
            hint="the object was overwritten in the bucket: store the original content again "
            "(it replaces the damaged object)")

    def _fetch(self, digest: str) -> tuple[Path, bool]:
        """A cached, verified local copy of the blob, and whether it was just downloaded (and
        so hashed on the way in)."""
        path = self.cache.path(digest)
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None:
            if is_sealed(stat):
                self._touch(path)
                return path, False
            try:
                self.cache.verify(digest)
                self._touch(path)
                return path, True
            except IntegrityFailure as exc:
                log.warning("dropping a damaged cached blob and fetching it again: %s", exc)
                path.unlink(missing_ok=True)
        tmp = self.cache.root / temporary_name(TEMP_PREFIX)
        try:
            with storage_errors(self.cache.root, "caching a blob in"), open(tmp, "xb") as out:
                actual = self._download(digest, out)
            if actual != digest:
                raise self._corrupt(digest, actual)
            size = tmp.stat().st_size
            self.cache._commit(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._known.add(digest)
        self._cache_in(digest, size)
        return path, True

    def _read_cached(self, digest: str, read: Callable[[str], _T],
                     fresh: Callable[[Path], _T] | None = None) -> _T:
        """``read(digest)`` on the cache (``fresh(path)`` instead right after a verified
        download: no second hash); a damaged cached file is dropped and fetched again."""
        path, downloaded = self._fetch(digest)
        if downloaded and fresh is not None:
            return fresh(path)
        try:
            return read(digest)
        except IntegrityFailure as exc:
            log.warning("dropping a damaged cached blob and fetching it again: %s", exc)
            self.cache.path(digest).unlink(missing_ok=True)
            path, _ = self._fetch(digest)
            return fresh(path) if fresh is not None else read(digest)

    # --- reads ---------------------------------------------------------------------------------

    def get_bytes(self, digest: str) -> bytes:
        """The blob's bytes, from the cache or the bucket, verified (``blob_corrupt``)."""
        self._object(digest)
        try:
            data = self.cache.get_bytes(digest)
        except NotFound:
            pass
        except IntegrityFailure as exc:
            log.warning("dropping a damaged cached blob and fetching it again: %s", exc)
            self.cache.path(digest).unlink(missing_ok=True)
        else:
            self._touch(self.cache.path(digest))
            return data
        buffer = io.BytesIO()
        actual = self._download(digest, buffer)
        if actual != digest:
            raise self._corrupt(digest, actual)
        data = buffer.getvalue()
        self._known.add(digest)
        with contextlib.suppress(Unavailable):  # a full cache disk must not fail a read
            self._cache_in(self.cache.put_bytes(data), len(data))
        return data

    def local_path(self, digest: str) -> Path:
        """The cached, verified local file holding the blob (fetched if absent): for readers
        that must read it in place. Do not write to it."""
        return self._fetch(digest)[0]

    def verify(self, digest: str) -> None:
        """Check the copy this store serves (cached, else fetched) against ``digest``."""
        self._read_cached(digest, self.cache.verify, lambda path: None)

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write the blob to ``dest`` atomically, verified on the way (``blob_corrupt``)."""
        self._read_cached(digest, lambda d: self.cache.copy_to(d, dest),
                          lambda path: _copy_verified(path, Path(dest)))

    def link_to(self, digest: str, dest: Path) -> None:
        """Hard-link the cached copy (fetched and verified if absent) read-only at ``dest``."""
        self._read_cached(digest, lambda d: self.cache.link_to(d, dest))

    def exists(self, digest: str) -> bool:
        """Whether the bucket holds the blob (one metadata request; remembered once seen)."""
        name = self._object(digest)
        if digest in self._known:
            return True
        with self._errors("looking up"):
            blob = self._bucket().get_blob(name, retry=self._retry, timeout=self.timeout)
        if blob is None:
            return False
        self._known.add(digest)
        return True

    def size(self, digest: str) -> int:
        """The blob's size: from the cache, else from the object's metadata."""
        name = self._object(digest)
        if self.cache.exists(digest):
            return self.cache.size(digest)
        with self._errors("looking up"):
            blob = self._bucket().get_blob(name, retry=self._retry, timeout=self.timeout)
        if blob is None or blob.size is None:
            self._check_bucket()
            raise NotFound(f"blob {digest[:12]} is not in {self.url}", code="unknown_blob",
                           hint="it was never uploaded; store it again")
        return int(blob.size)
