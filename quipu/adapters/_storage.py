"""What every file-writing adapter shares: typed storage errors and crash-safe temporary names.

The blob store and the slot directories may not import each other (import-linter), so the two
rules they must agree on live here:

- **No OSError escapes untyped.** :func:`storage_errors` turns an ``OSError`` raised while
  writing into an ``Unavailable`` with a code per cause: ``disk_full`` (ENOSPC, EDQUOT),
  ``file_too_large`` (EFBIG: a ``ulimit -f`` or the filesystem's limit), ``storage_read_only``
  (EROFS), ``storage_permission_denied`` (EACCES, EPERM) and ``storage_error`` for the rest.
- **Temporary files say who writes them.** A temporary name carries the writing host and process
  id (``<prefix><host>.<pid>.<random>``), so a later process can tell a temporary left behind by
  a ``kill -9`` (its writer is gone) from one another live process is still writing into the same
  directory (which must not be touched). See :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from quipu.core.errors import Unavailable

__all__ = [
    "STALE_AFTER_SECONDS",
    "remove_stale_temporaries",
    "storage_error",
    "storage_errors",
    "temporary_name",
]

STALE_AFTER_SECONDS = 24 * 3600
"""A temporary untouched this long is stale whoever wrote it (another host, an older Quipu)."""

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}


def storage_error(exc: OSError, path: Path | str, doing: str) -> Unavailable:
    """The typed error for an ``OSError`` raised while ``doing`` something to ``path``."""
    where = f"{doing} {path}"
    cause = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return Unavailable(f"the disk is full: {where} failed ({cause})", code="disk_full",
                           hint=f"free space on the disk that holds {path} and retry; "
                           "the command did not take effect")
    if exc.errno == errno.EFBIG:
        return Unavailable(f"a file grew past the allowed size: {where} failed ({cause})",
                           code="file_too_large",
                           hint="raise the file size limit (ulimit -f) or use a filesystem "
                           "that allows larger files; the command did not take effect")
    if exc.errno == errno.EROFS:
        return Unavailable(f"the storage is read-only: {where} failed", code="storage_read_only",
                           hint=f"remount the filesystem holding {path} read-write, or move the "
                           "project to writable storage; the command did not take effect")
    if exc.errno in _DENIED:
        return Unavailable(f"permission denied: {where} failed", code="storage_permission_denied",
                           hint=f"give the user running Quipu write access to {path}; "
                           "the command did not take effect")
    return Unavailable(f"{where} failed: {cause}", code="storage_error",
                       hint="check the disk and its filesystem; the command did not take effect")


@contextlib.contextmanager
def storage_errors(path: Path | str, doing: str) -> Iterator[None]:
    """Re-raise any ``OSError`` inside the block as :func:`storage_error`'s typed error."""
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, path, doing) from exc


def temporary_name(prefix: str) -> str:
    """A fresh name ``<prefix><host>.<pid>.<random>`` that identifies its writer."""
    return f"{prefix}{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


def _writer_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to another user
    return True


def _is_stale(name: str, prefix: str, mtime: float, now: float) -> bool:
    host, _, rest = name[len(prefix):].partition(".")
    pid_text = rest.partition(".")[0]
    if host == _HOST and pid_text.isdigit():
        return not _writer_is_alive(int(pid_text))
    # Written on another host (its pid means nothing here) or named by an older Quipu: only age
    # tells. A live writer keeps touching its file, so its mtime stays fresh.
    return now - mtime > STALE_AFTER_SECONDS


def remove_stale_temporaries(directory: Path, prefix: str) -> list[str]:
    """Delete the temporaries in ``directory`` whose writer is gone; return their names.

    A temporary is stale when it was written on this host by a process that no longer exists,
    or when it has not been modified for :data:`STALE_AFTER_SECONDS`. Ones a live process is
    still writing are left alone. Best effort: anything that cannot be removed stays.
    """
    removed: list[str] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            stale = _is_stale(entry.name, prefix, entry.stat(follow_symlinks=False).st_mtime, now)
            if not stale:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return removed

