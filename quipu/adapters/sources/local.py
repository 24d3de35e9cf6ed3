"""Local source files: resolved, hashed in one streaming pass, described from their headers.

Nothing here loads a dataset. An npy file's magic and header give its shape and dtype
(``numpy.lib.format.read_magic`` / ``read_array_header_*``); an npz is a zip whose members are
npy files, so its central directory lists the arrays and each member's header is read from the
member stream (a compressed member is inflated only as far as its header). A csv is streamed
once through the ``csv`` module with the declared delimiter: its header, its data row count and
the first row whose field count differs. numpy is imported only here, when a tensor is
described, so commands that never touch sources do not pay for it.

A stat cache spares re-hashing a file that did not change between two uses (a source used by
every run of a sweep is hashed once): its (device, inode, size, mtime_ns, ctime_ns) before and
after hashing must be equal, and equal again when the cached hash is used. Any write changes
ctime, even one that restores size and mtime (``os.utime`` cannot set ctime), so a changed file
is always hashed again and refused by the caller naming both hashes. A file whose ctime is
within ``racy_ns`` of the hashing is not cached: a write in the same clock tick as the hash
could leave the stat unchanged (git's "racily clean" entries).
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from typing import IO, Any

from quipu.adapters._storage import storage_error
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.ports import FileFacts

__all__ = ["LocalSourceFiles"]

_CHUNK = 1 << 20
_CSV_FIELD_LIMIT = 1 << 24
STAT_CACHE_ENTRIES = 4096
"""Most files the stat cache remembers (the least recently used are forgotten)."""
RACY_NS = 2_000_000_000
"""A file changed this recently (ctime) before it was hashed is not cached."""

_StatKey = tuple[int, int, int, int, int]


class LocalSourceFiles:
    """The ``SourceFiles`` port over the local filesystem.

    ``blob_path`` maps a digest to the file that holds the blob (the local blob store's
    layout, handed over by bootstrap: adapters do not import each other); without it, blobs
    cannot be described.
    """

    def __init__(self, blob_path: Callable[[str], str] | None = None, *,
                 racy_ns: int = RACY_NS) -> None:
        self.blob_path = blob_path
        self.racy_ns = racy_ns
        self.hashed = 0
        """How many times a file was read whole to hash it (the cache's misses)."""
        self._cache: OrderedDict[str, tuple[_StatKey, tuple[str, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def describe_blob(self, digest: str, *, fmt: str,
                      delimiter: str | None = None) -> FileFacts:
        """``describe`` of the file that holds the blob ``digest``."""
        if self.blob_path is None:
            raise NotFound("this engine reads no blob store", code="unknown_blob",
                           hint="open the project with quipu.app.bootstrap.open_project()")
        path = self.blob_path(digest)
        if not os.path.isfile(path):
            raise NotFound(f"blob {digest[:12]} is not in the blob store", code="unknown_blob",
                           hint="restore .quipu/blobs from a backup")
        return self.describe(path, fmt=fmt, delimiter=delimiter)

    def realpath(self, path: str) -> str:
        """``path`` with every symlink resolved."""
        return os.path.realpath(path)

    def describe(self, path: str, *, fmt: str, delimiter: str | None = None) -> FileFacts:
        """Size, sha256 and the format's facts of the regular file at ``path``."""
        self._regular(path)
        digest, size = self.digest(path)
        try:
            if fmt == "npy":
                with open(path, "rb") as f:
                    arrays, why = _npy_header(f)
                return FileFacts(path, size, digest, arrays={"": arrays} if arrays else None,
                                 unreadable=why)
            if fmt == "npz":
                found, why = _npz_headers(path)
                return FileFacts(path, size, digest, arrays=found, unreadable=why)
            if fmt == "csv":
                return _csv_facts(path, size, digest, delimiter or ",")
        except OSError as exc:
            raise storage_error(exc, path, "reading") from exc
        return FileFacts(path, size, digest)

    def digest(self, path: str) -> tuple[str, int]:
        """(sha256, size) of the file now: from the stat cache when the file's stat is the one
        it had when it was last hashed (see the module's docstring), else hashed."""
        before = _stat_key(path)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == before:
                self._cache.move_to_end(path)
                return cached[1]
        started = time.time_ns()
        found = self._hash(path)
        after = _stat_key(path)
        if after == before and before[4] < started - self.racy_ns:
            with self._lock:
                self._cache[path] = (before, found)
                self._cache.move_to_end(path)
                while len(self._cache) > STAT_CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return found

    def _hash(self, path: str) -> tuple[str, int]:
        self.hashed += 1
        h = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise _missing(path) from None
        except IsADirectoryError:
            raise _not_a_file(path, "a directory") from None
        except OSError as exc:
            raise storage_error(exc, path, "reading") from exc
        return h.hexdigest(), size

    def _regular(self, path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise _missing(path) from None
        except OSError as exc:
            raise storage_error(exc, path, "reading") from exc
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise _not_a_file(path, kind)


def _stat_key(path: str) -> _StatKey:
    """What identifies a file's content without reading it: (device, inode, size, mtime_ns,
    ctime_ns)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _missing(path) from None
    except OSError as exc:
        raise storage_error(exc, path, "reading") from exc
    if stat.S_ISDIR(st.st_mode):
        raise _not_a_file(path, "a directory")
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _missing(path: str) -> NotFound:
    return NotFound(f"there is no file at {path}", code="source_file_missing",
                    hint="check the path (relative paths start at the project root)")


def _not_a_file(path: str, kind: str) -> InvalidInput:
    return InvalidInput(f"{path} is {kind}", code="source_not_a_file",
                        hint="a source is one regular file (npy, npz, csv or any file); "
                        "pack a directory into an npz or an archive first")


def _npy_header(f: IO[bytes]) -> tuple[tuple[tuple[int, ...], str, str] | None, str | None]:
    """(shape, dtype name, dtype str) from an npy stream's header, or why it has none."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(f)
        else:
            shape, _fortran, dtype = npformat.read_array_header_2_0(f)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        return None, f"not an npy file ({_short(exc)})"
    return (tuple(int(d) for d in shape), str(dtype.name), str(dtype.str)), None


def _npz_headers(path: str) -> tuple[dict[str, tuple[tuple[int, ...], str, str]] | None,
                                     str | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError) as exc:
        return None, f"not an npz file ({_short(exc)})"
    found: dict[str, tuple[tuple[int, ...], str, str]] = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                return None, f"not an npz file (member {info.filename!r} is not an .npy)"
            try:
                with archive.open(info) as member:
                    header, why = _npy_header(member)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
                return None, f"not a readable npz file ({_short(exc)})"
            if header is None:
                return None, f"member {info.filename!r}: {why}"
            found[info.filename.removesuffix(".npy")] = header
    return found, None


def _csv_facts(path: str, size: int, digest: str, delimiter: str) -> FileFacts:
    rows = 0
    header: list[str] | None = None
    ragged: tuple[int, int] | None = None
    old_limit = csv.field_size_limit()
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader: Any = csv.reader(f, delimiter=delimiter, strict=True)
            for row in reader:
                if header is None:
                    header = row
                    continue
                if not row:
                    continue  # a blank line is not a row
                rows += 1
                if ragged is None and len(row) != len(header):
                    ragged = (reader.line_num, len(row))
    except (UnicodeDecodeError, csv.Error) as exc:
        return FileFacts(path, size, digest, unreadable=f"not a readable csv file "
                         f"({_short(exc)})")
    finally:
        csv.field_size_limit(old_limit)
    if header is None:
        return FileFacts(path, size, digest, unreadable="an empty csv file (no header)")
    return FileFacts(path, size, digest, columns=header, rows=rows, ragged=ragged)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:160] + "…"
