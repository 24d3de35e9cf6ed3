"""A full or read-only disk is a typed, hinted error that writes nothing, never a raw OSError.

Real disks only: a small tmpfs mounted for the test (so the full disk is real and SQLite says
SQLITE_FULL itself), remounted read-only for EROFS, and ``/dev/full`` for a file write that
fails with ENOSPC. Mounting needs root (CI runs as root); elsewhere those tests are skipped.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.seals import open_local_seals
from quipu.core.audit import Seal, verify_log
from quipu.core.errors import Unavailable
from quipu.core.ports import NewEvent
from quipu.core.project.events import ThoughtLogged

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def thought(text: str) -> ThoughtLogged:
    return ThoughtLogged(actor="agent-1", reason="disk full test", at=AT, thought=text)


class Disk:
    """A real tmpfs of a few hundred KiB, mounted at ``path`` for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self) -> None:
        """Write a filler file until the disk says ENOSPC."""
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            for _ in range(10_000):  # bounded: the disk is far smaller than 10,000 KiB
                os.write(fd, b"\0" * 1024)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return
        finally:
            os.close(fd)
        raise AssertionError("the small disk never filled up")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


# --- the event log -----------------------------------------------------------------------------


def test_a_full_disk_is_disk_full_with_a_hint_and_nothing_is_written(disk: Disk) -> None:
    store = open_sqlite_store(disk.path / "events.db")
    try:
        stream = uuid.uuid4()
        version = 0
        with pytest.raises(Unavailable) as caught:
            for _ in range(1000):  # bounded: 384 KiB holds far fewer 8 KiB events
                head = store.head()
                store.append([NewEvent(stream, version + 1, thought("x" * 8192))])
                version += 1
        assert caught.value.code == "disk_full"
        assert caught.value.hint == f"free space on {disk.path}; nothing was written"
        assert version > 0  # it did fill up by appending, not at once
        assert store.head() == head  # the failed append left nothing behind
        assert [r.version for r in store.load(stream)] == list(range(1, version + 1))
        report = verify_log(store)
        assert (report.ok, report.events_checked) == (True, version)
    finally:
        store.close()


def test_a_log_on_a_read_only_disk_is_log_not_writable(disk: Disk) -> None:
    store = open_sqlite_store(disk.path / "events.db")
    store.append([NewEvent(uuid.uuid4(), 1, thought("before the remount"))])
    store.close()
    disk.read_only()
    with pytest.raises(Unavailable) as caught:
        store = open_sqlite_store(disk.path / "events.db")
        try:
            store.append([NewEvent(uuid.uuid4(), 1, thought("after the remount"))])
        finally:
            store.close()
    assert caught.value.code == "log_not_writable"
    assert str(disk.path) in caught.value.hint


def test_a_new_log_under_a_read_only_disk_is_log_not_writable(disk: Disk) -> None:
    disk.read_only()
    with pytest.raises(Unavailable) as caught:
        open_sqlite_store(disk.path / "project" / ".quipu" / "events.db")
    assert caught.value.code == "log_not_writable"


# --- the seal file -----------------------------------------------------------------------------

SEAL = Seal(3, "a" * 64, AT.isoformat())


def test_a_seal_written_to_a_full_device_is_disk_full() -> None:
    """``/dev/full`` fails every write with ENOSPC, for any user."""
    with pytest.raises(Unavailable) as caught:
        open_local_seals("/dev/full").append(SEAL)
    assert caught.value.code == "disk_full"
    assert caught.value.hint.startswith("free space on /dev;")


def test_a_seal_on_a_full_disk_is_disk_full_and_leaves_the_file_as_it_was(disk: Disk) -> None:
    keeper = open_local_seals(disk.path / "seals.jsonl")
    keeper.append(Seal(1, "b" * 64, AT.isoformat()))
    before = (disk.path / "seals.jsonl").read_bytes()
    disk.fill()
    with pytest.raises(Unavailable) as caught:
        for position in range(2, 2000):  # the file's last block may still take a few lines
            keeper.append(Seal(position, "c" * 64, AT.isoformat()))
    assert caught.value.code == "disk_full"
    after = (disk.path / "seals.jsonl").read_bytes()
    assert after.startswith(before) and after.endswith(b"\n")  # no torn line
    assert keeper.read_all()[0] == Seal(1, "b" * 64, AT.isoformat())


def test_a_seal_on_a_read_only_disk_is_seal_not_writable(disk: Disk) -> None:
    keeper = open_local_seals(disk.path / "seals.jsonl")
    keeper.append(SEAL)
    disk.read_only()
    with pytest.raises(Unavailable) as caught:
        keeper.append(Seal(4, "d" * 64, AT.isoformat()))
    assert caught.value.code == "seal_not_writable"
    assert keeper.read_all() == [SEAL]
    with pytest.raises(Unavailable) as new_file:
        open_local_seals(disk.path / "elsewhere" / "seals.jsonl").append(SEAL)
    assert new_file.value.code == "seal_not_writable"
