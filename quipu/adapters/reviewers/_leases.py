"""Reviewer leases: which review workers on this machine are alive, told by the kernel.

A review worker records ``ReviewStarted`` under its actor (``reviewer:<host>:<pid>`` in the
engine) and then reviews in its own process. If that process is killed (``kill -9``, a crash,
the machine's OOM killer) the run stays ``reviewing`` with nobody reviewing it. To tell that
case from a slow review, every worker holds an exclusive ``flock`` on a file named after its
actor (``.quipu/reviewers/<actor, quoted>.lock``) for as long as it runs. The kernel drops the
lock when the process dies, however it dies, so another worker that *can* take the lock knows
the reviewer is gone; and it keeps holding it while it reviews the abandoned runs again, so
two restarted engines never both do it. A pid reused by another process changes nothing (the
lock, not the pid, is the proof).

What a lease cannot tell is left to the lifecycle's review deadline, as before: a reviewer with
no lease file here (another host sharing a PostgreSQL log, an engine older than leases) counts
as alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["Leases"]

log = logging.getLogger("quipu.reviewer")

_SUFFIX = ".lock"


class Leases:
    """The lease files in ``directory``: this worker's own and those it took over."""

    def __init__(self, directory: Path, actor: str) -> None:
        self.directory = directory
        self.actor = actor
        self._held: dict[str, int] = {}  # actor -> the open, locked file
        self._warned = False

    def path(self, actor: str) -> Path:
        """The lease file of ``actor``."""
        return self.directory / f"{quote(actor, safe='')}{_SUFFIX}"

    def hold_own(self) -> bool:
        """Hold this worker's lease (from now until ``release_all``); False while another live
        worker holds a lease under the same actor (it is then that one's to hold)."""
        if self.actor in self._held:
            return True
        path = self.path(self.actor)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(3):
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _lock(fd):
                    os.close(fd)
                    return False
                # A sweep may have unlinked the file between open and lock: then this lock is
                # on a file nobody can find, so open the path again.
                if _same_file(fd, path):
                    self._held[self.actor] = fd
                    return True
                os.close(fd)
        except OSError as exc:
            if not self._warned:  # said once: the worker asks again on every step
                self._warned = True
                log.warning("reviewer: its lease %s could not be held (%s); reviews it starts "
                            "are left to the review deadline if its engine dies", path, exc)
        return False

    def take_over(self, actor: str) -> bool:
        """True when ``actor``'s worker is gone and its lease is now held here (so nobody else
        takes over its reviews); False when it lives, or nothing here can tell."""
        if actor in self._held:
            return True
        try:
            fd = os.open(self.path(actor), os.O_RDWR)
        except OSError:  # no lease file here: another host, or an engine without leases
            return False
        try:
            if _lock(fd) and _same_file(fd, self.path(actor)):
                self._held[actor] = fd
                return True
        except OSError:
            pass
        os.close(fd)
        return False

    def let_go(self, actor: str) -> None:
        """Done with a reviewer taken over: delete its lease file (it never comes back) and
        unlock it. Its own lease a worker keeps."""
        fd = None if actor == self.actor else self._held.pop(actor, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path(actor).unlink()
        os.close(fd)

    def taken_over(self) -> list[str]:
        """The actors whose leases this worker took over."""
        return [a for a in self._held if a != self.actor]

    def sweep(self, keep: set[str]) -> None:
        """Delete the lease files of workers that are gone and started no review still open
        (``keep``): one file per engine start would otherwise pile up."""
        try:
            names = [p.name for p in self.directory.iterdir() if p.name.endswith(_SUFFIX)]
        except OSError:
            return
        for name in names:
            actor = unquote(name[: -len(_SUFFIX)])
            if actor in keep or actor in self._held:
                continue
            if self.take_over(actor):
                self.let_go(actor)

    def release_all(self) -> None:
        """Unlock every lease held here (its own file stays: see ``sweep``)."""
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
