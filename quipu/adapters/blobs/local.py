"""The default blob store: a content-addressed directory, ``.quipu/blobs/ab/cdef...``.

Writes go to a temporary file in the store's root and are renamed into place after an fsync,
so a crash never leaves a blob whose name does not match its content. Temporaries are named
after their writer (host and pid, see ``quipu.adapters._storage``); opening the store deletes
the ones whose writer died (a ``kill -9`` mid-write) and never the ones a live process is still
writing.

Every read checks the bytes against their name while it streams them (``get_bytes``,
``copy_to``, ``verify``): a blob damaged on disk is refused with
``IntegrityFailure(code="blob_corrupt")`` naming the digest and the file, and nothing is
written. Every ``OSError`` on the way is typed (``disk_full``, ``storage_read_only``, ...).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from quipu.adapters._storage import (
    remove_stale_temporaries,
    storage_error,
    storage_errors,
    temporary_name,
)
from quipu.core.errors import IntegrityFailure, NotFound

__all__ = ["TEMP_PREFIX", "LocalBlobStore"]

TEMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class LocalBlobStore:
    """Content-addressed blobs under one root directory."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        """Open (creating) the store at ``root`` and delete temporaries whose writer is gone."""
        self.root = Path(root)
        with storage_errors(self.root, "creating the blob directory"):
            self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self.removed_temporaries = remove_stale_temporaries(self.root, TEMP_PREFIX)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (it may be absent): for readers that must read a
        header in place, such as a promoted artifact's check. Reads through here are not
        verified against the digest; ``verify`` does that."""
        return self._path(digest)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"{digest!r} is not a sha256 digest", code="unknown_blob",
                           hint="blob names are 64 lowercase hex characters")
        return self.root / digest[:2] / digest[2:]

    def _missing(self, digest: str) -> NotFound:
        return NotFound(f"blob {digest[:12]} is not in the store at {self.root}",
                        code="unknown_blob",
                        hint="the blob directory may have been moved or pruned by hand; "
                        "restore .quipu/blobs from a backup")

    def _corrupt(self, digest: str, path: Path, actual: str) -> IntegrityFailure:
        return IntegrityFailure(
            f"blob {digest} at {path} does not match its hash (its bytes hash to "
            f"{actual[:12]}); nothing was written",
            code="blob_corrupt",
            hint=f"the file was changed on disk: restore {path} from a backup, or store the "
            "original content again")

    def _open(self, digest: str) -> tuple[Path, io.BufferedReader]:
        path = self._path(digest)
        try:
            return path, open(path, "rb")
        except FileNotFoundError:
            raise self._missing(digest) from None
        except OSError as exc:
            raise storage_error(exc, path, "reading the blob") from exc

    def _new_temporary(self) -> tuple[Path, BinaryIO]:
        tmp = self.root / temporary_name(TEMP_PREFIX)
        return tmp, open(tmp, "xb")

    def _finish(self, out: BinaryIO) -> None:
        if self._fsync:
            out.flush()
            os.fsync(out.fileno())

    def _commit(self, tmp: Path, digest: str) -> None:
        # Replacing an existing blob with freshly hashed bytes costs one rename and repairs a
        # blob that was damaged on disk.
        final = self._path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; return their sha256. Bytes already stored are not written again."""
        digest = hashlib.sha256(data).hexdigest()
        if self._path(digest).exists():
            return digest
        tmp: Path | None = None
        try:
            with storage_errors(self.root, "storing a blob in"):
                tmp, out = self._new_temporary()
                with out:
                    out.write(data)
                    self._finish(out)
                self._commit(tmp, digest)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return digest

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a file in while hashing it; return (sha256, size).

        ``FileNotFoundError`` if the file vanishes (the caller decides what that means); any
        other ``OSError`` is typed. A blob that was damaged on disk is replaced (repaired).
        """
        digest = hashlib.sha256()
        size = 0
        tmp: Path | None = None
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed just below
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, path, "reading") from exc
        try:
            with src, storage_errors(self.root, "storing a blob in"):
                tmp, out = self._new_temporary()
                with out:
                    size = _stream(src, out, digest)
                    self._finish(out)
                name = digest.hexdigest()
                self._commit(tmp, name)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        return name, size

    def get_bytes(self, digest: str) -> bytes:
        """The stored bytes, verified against their name (``blob_corrupt`` if they differ)."""
        path, src = self._open(digest)
        with src, storage_errors(path, "reading the blob"):
            data = src.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise self._corrupt(digest, path, actual)
        return data

    def verify(self, digest: str) -> None:
        """Check the stored bytes against their name; ``NotFound`` or ``blob_corrupt`` if not."""
        path, src = self._open(digest)
        with src, storage_errors(path, "reading the blob"):
            actual = hashlib.file_digest(src, "sha256").hexdigest()
        if actual != digest:
            raise self._corrupt(digest, path, actual)

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write the blob to ``dest`` atomically, verifying its hash in the same pass.

        The bytes go to a temporary next to ``dest`` and are renamed over it only once their
        sha256 matched: a damaged blob raises ``blob_corrupt`` and leaves ``dest`` as it was.
        """
        path, src = self._open(digest)
        dest = Path(dest)
        tmp = dest.parent / temporary_name(".quipu-tmp-")
        try:
            with src, storage_errors(dest, "writing"):
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "xb") as out:
                    hashed = hashlib.sha256()
                    _stream(src, out, hashed)
                    actual = hashed.hexdigest()
                    if actual != digest:
                        raise self._corrupt(digest, path, actual)
                # No fsync: what is restored is derived from the store and the log.
                os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored (its content is not read: see ``verify``)."""
        return self._path(digest).exists()


def _stream(src: io.BufferedReader, out: BinaryIO, digest: hashlib._Hash) -> int:
    """Copy ``src`` to ``out`` in chunks, feeding ``digest``; return the byte count."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    size = 0
    while n := src.readinto(buffer):
        digest.update(view[:n])
        out.write(view[:n])
        size += n
    return size

