"""The default blob store: a content-addressed directory, ``.quipu/blobs/ab/cdef...``.

Writes go to a temporary file in the same directory and are renamed into place after an fsync,
so a crash never leaves a blob whose name does not match its content.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from quipu.core.errors import IntegrityFailure, NotFound

__all__ = ["LocalBlobStore"]

_CHUNK = 1 << 20


class LocalBlobStore:
    """Content-addressed blobs under one root directory."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"{digest!r} is not a sha256 digest", code="unknown_blob",
                           hint="blob names are 64 lowercase hex characters")
        return self.root / digest[:2] / digest[2:]

    def _commit(self, tmp: Path, digest: str) -> None:
        final = self._path(digest)
        if final.exists():
            tmp.unlink()
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)

    def _tmp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        return fd, Path(name)

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; return their sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if self._path(digest).exists():
            return digest
        fd, tmp = self._tmp()
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if self._fsync:
                out.flush()
                os.fsync(out.fileno())
        self._commit(tmp, digest)
        return digest

    def put_file(self, path: Path) -> tuple[str, int]:
        """Copy a file in while hashing it; return (sha256, size). OSError if it vanishes."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp = self._tmp()
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                if self._fsync:
                    out.flush()
                    os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        name = digest.hexdigest()
        self._commit(tmp, name)
        return name, size

    def get_bytes(self, digest: str) -> bytes:
        """The stored bytes, verified against their name."""
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest[:12]} is not in the store at {self.root}",
                           code="unknown_blob",
                           hint="the blob directory may have been moved or pruned by hand",
                           ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityFailure(f"blob {digest[:12]} does not match its hash",
                                   code="blob_corrupt",
                                   hint="restore .quipu/blobs from a backup")
        return data

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write the blob to ``dest`` atomically."""
        src = self._path(digest)
        if not src.exists():
            raise NotFound(f"blob {digest[:12]} is not in the store at {self.root}",
                           code="unknown_blob", hint="restore .quipu/blobs from a backup")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".quipu-tmp-")
        os.close(fd)
        try:
            shutil.copyfile(src, name)
            os.replace(name, dest)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return self._path(digest).exists()
