"""A seal keeper backed by one local JSON-lines file (e.g. ``.quipu/seals.jsonl``).

Each seal is appended as one line ``{"position": N, "hash": "...", "at": "..."}`` and fsynced, so
a seal that was reported as written survives a crash. The file is append-only by convention:
copy it somewhere the log's writers cannot reach to make truncation of the log detectable.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

from quipu.core.audit import Seal
from quipu.core.errors import InvalidInput, Unavailable

__all__ = ["LocalSealKeeper", "open_local_seals"]

_HASH = re.compile(r"[0-9a-f]{64}")


class LocalSealKeeper:
    """Appends seals to, and reads them back from, one JSON-lines file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, seal: Seal) -> None:
        """Write ``seal`` as one line at the end of the file and fsync it (and a new file's dir).

        A write that fails (full disk, read-only or forbidden path) raises a typed
        ``Unavailable`` and leaves the file as it was: a partly written line is cut off again.
        """
        line = json.dumps(
            {"position": seal.position, "hash": seal.hash, "at": seal.at}, sort_keys=True
        ) + "\n"
        try:
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._write_failed(exc) from exc
        try:
            size = os.fstat(fd).st_size
            try:
                data = line.encode()
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except OSError as exc:
                self._cut_back(fd, size)
                raise self._write_failed(exc) from exc
        finally:
            os.close(fd)
        if created:
            # The new directory entry must be durable too, or the whole file can vanish.
            try:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError as exc:
                raise self._write_failed(exc) from exc

    @staticmethod
    def _cut_back(fd: int, size: int) -> None:
        # Best effort: a torn last line would make the whole file unreadable as seals.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)

    def _write_failed(self, exc: OSError) -> Unavailable:
        where = self.path.parent
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return Unavailable(
                f"cannot write the seal file {self.path}: the disk is full ({exc})",
                code="disk_full",
                hint=f"free space on {where}; no seal was written, seal again afterwards",
            )
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return Unavailable(
                f"cannot write the seal file {self.path}: {exc}",
                code="seal_not_writable",
                hint=f"make {where} writable by this user (is it mounted read-only?) or seal "
                "to another file with --file; no seal was written",
            )
        return Unavailable(
            f"cannot write the seal file {self.path}: {exc}",
            code="seal_write_failed",
            hint="check the path, free space and permissions, then seal again",
        )

    def last(self) -> Seal | None:
        """The newest seal in the file, read from its tail only (cheap at any length).

        None when there is no file or no complete, valid last line: automatic sealing then
        simply starts afresh rather than refusing to work.
        """
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - 4096))
                tail = fh.read(4096)  # bounded: a device (not a file) may never end
        except OSError:
            return None
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if not lines:
            return None
        try:
            return self._parse(0, lines[-1].decode("utf-8"))
        except (InvalidInput, UnicodeDecodeError):
            return None

    def read_all(self) -> list[Seal]:
        """Every seal in the file, oldest first; an absent file holds no seals."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(
                f"cannot read the seal file {self.path}: {exc}",
                code="malformed_seal_file",
                hint="the seal file must be UTF-8 JSON lines; restore it from a copy",
            ) from exc
        seals = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                seals.append(self._parse(number, line))
        return seals

    def _parse(self, number: int, line: str) -> Seal:
        try:
            raw: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise self._malformed(number, f"not JSON ({exc.msg})") from exc
        if not isinstance(raw, dict) or set(raw) != {"position", "hash", "at"}:
            raise self._malformed(number, "expected exactly the keys position, hash and at")
        position, digest, at = raw["position"], raw["hash"], raw["at"]
        if type(position) is not int or position < 1:
            raise self._malformed(number, "position must be a positive integer")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            raise self._malformed(number, "hash must be 64 lowercase hex digits")
        if not isinstance(at, str) or not at:
            raise self._malformed(number, "at must be an ISO 8601 timestamp string")
        return Seal(position=position, hash=digest, at=at)

    def _malformed(self, number: int, why: str) -> InvalidInput:
        return InvalidInput(
            f"line {number} of the seal file {self.path} is not a seal: {why}",
            code="malformed_seal_file",
            hint=f"fix or remove line {number} (a torn last line means a seal write was cut "
            "off), or restore the file from a copy kept elsewhere",
        )


def open_local_seals(path: Path | str) -> LocalSealKeeper:
    """The seal keeper for the file at ``path`` (created on the first seal)."""
    return LocalSealKeeper(path)
