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

Stored files are sealed: mode 0444 and a fixed modification time (``SEALED_MTIME_NS``). Run
directories get hard links to them (``link_to``, ``adopt_file``) instead of copies, so a large
output sits on disk once. Writing through a link needs a mode change or root, and either way
moves the modification time (or the mode) off the seal: ``link_to`` re-hashes a blob whose seal
is broken before handing it out, and every read (``get_bytes``, ``copy_to``, ``verify``)
hashes the bytes anyway.
"""

from __future__ import annotations

import errno
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

__all__ = ["SEALED_MTIME_NS", "TEMP_PREFIX", "LocalBlobStore", "link_or_copy", "seal"]

TEMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
SEALED_MTIME_NS = 946_684_800 * 10**9
"""The modification time of every stored file (2000-01-01 UTC): a write through a hard link
moves it, which is how ``link_to`` knows a blob must be hashed again before it is handed out."""
# A hard link is impossible across file systems, where links are not supported, or past the
# link limit; each of these falls back to a copy.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def seal(path: Path) -> None:
    """Make a stored file read-only with the store's fixed modification time."""
    os.chmod(path, 0o444)
    os.utime(path, ns=(SEALED_MTIME_NS, SEALED_MTIME_NS))


def is_sealed(stat: os.stat_result) -> bool:
    """Whether nothing wrote to the file since it was sealed (mode and mtime unmoved)."""
    return stat.st_mtime_ns == SEALED_MTIME_NS and not stat.st_mode & 0o222


def link_or_copy(source: Path, dest: Path) -> bool:
    """Replace ``dest`` with a hard link to ``source``; False (nothing done) where the file
    system cannot link, so the caller copies instead."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / temporary_name(".quipu-tmp-")
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in _NO_LINK:
            return False
        raise
    try:
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


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
        seal(tmp)
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

    def check(self) -> str:
        """Prove the store is usable (a blob is written and read back); return a one-line
        summary (for ``quipu doctor``). Raises the typed error of what failed."""
        digest = self.put_bytes(b"quipu blob store check\n")
        self.verify(digest)
        return f"{self.root} is writable and readable"

    def size(self, digest: str) -> int:
        """The stored blob's size in bytes; ``NotFound`` if absent."""
        path = self._path(digest)
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise self._missing(digest) from None
        except OSError as exc:
            raise storage_error(exc, path, "reading the blob") from exc

    def link_to(self, digest: str, dest: Path) -> None:
        """Make ``dest`` a read-only hard link to the stored file (a verified copy across file
        systems). A blob whose seal is broken is hashed first (``blob_corrupt`` if it changed,
        and ``dest`` is left alone) and sealed again if its bytes are intact."""
        path = self._path(digest)
        dest = Path(dest)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise self._missing(digest) from None
        except OSError as exc:
            raise storage_error(exc, path, "reading the blob") from exc
        with storage_errors(dest, "linking the blob to"):
            if not is_sealed(stat):
                self.verify(digest)  # a blob stored by an older Quipu, or written through
                seal(path)
            if not link_or_copy(path, dest):
                self.copy_to(digest, dest)
                os.chmod(dest, 0o444)

    def adopt_file(self, path: Path) -> tuple[str, int]:
        """Move a file into the store and leave a read-only hard link at ``path``; return
        (sha256, size). On another file system than the store, copy it in (``put_file``)
        and leave ``path`` alone. If anything fails the file is put back where it was."""
        path = Path(path)
        if path.is_symlink():  # its target is not ours to move: store a copy of the bytes
            return self.put_file(path)
        tmp = self.root / temporary_name(TEMP_PREFIX)
        try:
            os.rename(path, tmp)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return self.put_file(path)
            raise storage_error(exc, path, "moving into the blob store") from exc
        try:
            with storage_errors(self.root, "storing a blob in"), open(tmp, "rb") as src:
                digest = hashlib.file_digest(src, "sha256").hexdigest()
                size = os.fstat(src.fileno()).st_size
                if self._fsync:
                    os.fsync(src.fileno())
                self._commit(tmp, digest)
        except BaseException:
            if tmp.exists():
                os.rename(tmp, path)
            raise
        # Adopting a link to the stored file itself (a retried collection) renames the file
        # onto itself, which leaves the temporary name in place.
        tmp.unlink(missing_ok=True)
        with storage_errors(path, "linking the stored blob to"):
            if not link_or_copy(self._path(digest), path):
                self.copy_to(digest, path)
                os.chmod(path, 0o444)
        return digest, size


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

