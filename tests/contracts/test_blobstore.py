"""The BlobStore contract: one suite, run against every blob store (local today, GCS later).

Each adapter subclasses ``BlobStoreContract``, says how to open a store and how to damage a
stored blob behind its back; everything the rest of Quipu relies on (content addressing,
idempotence, NotFound for unknown digests, corruption refused on every read, atomic replace) is
tested once, here. Adapter-specific behaviour (temporaries after ``kill -9``, full disks) is
tested in the adapter's subclass with real processes and real filesystems.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from waiting import wait_until

from quipu.adapters._storage import STALE_AFTER_SECONDS
from quipu.adapters.blobs.local import TEMP_PREFIX, LocalBlobStore
from quipu.core.errors import IntegrityFailure, NotFound
from quipu.core.ports import BlobStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if "tmp" in p.name)


class BlobStoreContract(abc.ABC):
    """What every BlobStore adapter must do."""

    @abc.abstractmethod
    def create_store(self, tmp_path: Path) -> BlobStore:
        """A fresh, empty store."""

    @abc.abstractmethod
    def damage(self, store: BlobStore, digest: str, data: bytes) -> None:
        """Replace the stored bytes of ``digest`` with ``data``, bypassing the store."""

    @pytest.fixture
    def blobs(self, tmp_path: Path) -> BlobStore:
        return self.create_store(tmp_path)

    # --- put / get / exists --------------------------------------------------------------------

    def test_bytes_are_stored_under_their_sha256_and_read_back(self, blobs):
        digest = blobs.put_bytes(b"hello")

        assert digest == sha(b"hello")
        assert blobs.get_bytes(digest) == b"hello" and blobs.exists(digest)
        blobs.verify(digest)

    def test_storing_the_same_bytes_twice_returns_the_same_digest(self, blobs, tmp_path):
        first = blobs.put_bytes(b"same")
        second = blobs.put_bytes(b"same")
        source = tmp_path / "same.bin"
        source.write_bytes(b"same")

        assert first == second == blobs.put_file(source)[0]
        assert blobs.get_bytes(first) == b"same"

    def test_a_file_is_stored_with_its_size_in_one_pass_over_several_chunks(
            self, blobs, tmp_path):
        data = os.urandom(3 * (1 << 20) + 7)
        source = tmp_path / "big.bin"
        source.write_bytes(data)

        assert blobs.put_file(source) == (sha(data), len(data))
        assert blobs.get_bytes(sha(data)) == data

    def test_an_empty_blob_is_a_blob(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"")

        assert digest == sha(b"") and blobs.get_bytes(digest) == b""
        blobs.copy_to(digest, tmp_path / "empty")
        assert (tmp_path / "empty").read_bytes() == b""

    def test_a_missing_source_file_raises_file_not_found(self, blobs, tmp_path):
        with pytest.raises(FileNotFoundError):
            blobs.put_file(tmp_path / "nope")

    def test_concurrent_writers_of_the_same_bytes_agree(self, blobs):
        data = os.urandom(1 << 20)
        digests: list[str] = []
        threads = [threading.Thread(target=lambda: digests.append(blobs.put_bytes(data)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert digests == [sha(data)] * 4 and blobs.get_bytes(sha(data)) == data

    # --- unknown digests -----------------------------------------------------------------------

    def test_an_unknown_blob_is_not_found_everywhere(self, blobs, tmp_path):
        digest = sha(b"never stored")

        assert not blobs.exists(digest)
        for read in (blobs.get_bytes, blobs.verify,
                     lambda d: blobs.copy_to(d, tmp_path / "out" / "x")):
            with pytest.raises(NotFound) as err:
                read(digest)
            assert err.value.code == "unknown_blob" and err.value.hint
        assert not (tmp_path / "out").exists()

    @pytest.mark.parametrize("name", ["../../etc/passwd", "ABC", "a" * 63, "A" * 64, ""])
    def test_a_name_that_is_not_a_digest_is_not_found(self, blobs, name):
        with pytest.raises(NotFound):
            blobs.get_bytes(name)
        with pytest.raises(NotFound):
            blobs.exists(name)

    # --- copy_to -------------------------------------------------------------------------------

    def test_copy_to_creates_parents_and_replaces_the_destination(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"new content")
        dest = tmp_path / "out" / "deep" / "file.txt"
        dest.parent.mkdir(parents=True)
        dest.write_text("old content")

        blobs.copy_to(digest, dest)

        assert dest.read_bytes() == b"new content"
        assert temporaries(tmp_path / "out") == []

    def test_copy_to_replaces_atomically(self, blobs, tmp_path):
        """A reader that had the old file open keeps reading the old bytes, whole."""
        digest = blobs.put_bytes(b"new content")
        dest = tmp_path / "file.txt"
        dest.write_text("old content")

        with dest.open("rb") as reader:
            blobs.copy_to(digest, dest)
            assert reader.read() == b"old content"
        assert dest.read_bytes() == b"new content"

    # --- corruption ----------------------------------------------------------------------------

    def test_a_damaged_blob_is_refused_by_every_read(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"original")
        self.damage(blobs, digest, b"tampered")
        dest = tmp_path / "out" / "file.txt"
        dest.parent.mkdir()
        dest.write_text("what was there")

        for read in (blobs.get_bytes, blobs.verify, lambda d: blobs.copy_to(d, dest)):
            with pytest.raises(IntegrityFailure) as err:
                read(digest)
            assert err.value.code == "blob_corrupt" and digest in err.value.message
            assert err.value.hint
        assert dest.read_text() == "what was there"
        assert temporaries(tmp_path / "out") == []

    def test_a_damaged_large_blob_is_refused_by_copy_to_and_nothing_is_left(
            self, blobs, tmp_path):
        data = os.urandom(3 * (1 << 20))
        digest = blobs.put_bytes(data)
        self.damage(blobs, digest, data[:-1] + bytes([data[-1] ^ 1]))

        with pytest.raises(IntegrityFailure):
            blobs.copy_to(digest, tmp_path / "out" / "big.bin")

        assert list((tmp_path / "out").iterdir()) == []

    def test_a_truncated_blob_is_refused(self, blobs):
        digest = blobs.put_bytes(b"a longer original")
        self.damage(blobs, digest, b"a longer")

        with pytest.raises(IntegrityFailure) as err:
            blobs.get_bytes(digest)
        assert err.value.code == "blob_corrupt"

    def test_storing_a_damaged_blobs_file_again_repairs_it(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"original")
        self.damage(blobs, digest, b"tampered")
        source = tmp_path / "original.txt"
        source.write_bytes(b"original")

        blobs.put_file(source)

        assert blobs.get_bytes(digest) == b"original"


# --- the local directory -----------------------------------------------------------------------

# Writes one blob read from a FIFO, so the test decides how far the write gets.
FIFO_WRITER = r"""
import sys
from pathlib import Path
from quipu.adapters.blobs.local import LocalBlobStore

store = LocalBlobStore(Path(sys.argv[1]), fsync=False)
print(store.put_file(Path(sys.argv[2]))[0], flush=True)
"""

# Tries one write under a limit set by the caller; prints the typed error as JSON.
LIMITED_WRITER = r"""
import json, resource, signal, sys
from pathlib import Path
from quipu.adapters.blobs.local import LocalBlobStore
from quipu.core.errors import QuipuError

root, limit = Path(sys.argv[1]), int(sys.argv[2])
store = LocalBlobStore(root, fsync=False)
if limit:
    # Past RLIMIT_FSIZE the kernel sends SIGXFSZ; ignored, the write fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    store.put_bytes(b"x" * (4 << 20))
except QuipuError as exc:
    left = sorted(p.name for p in root.rglob("*") if p.is_file())
    print(json.dumps({"type": type(exc).__name__, **exc.as_dict(), "left": left}))
else:
    print(json.dumps({"type": None}))
"""


def _can_mount_in_a_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not _can_mount_in_a_namespace(),
    reason="needs unshare --mount and the right to mount a tmpfs (root or CAP_SYS_ADMIN)")


def in_private_tmpfs(tmp_path: Path, script: str, *args: str, size: str = "256k",
                     read_only: bool = False) -> dict[str, object]:
    """Run ``script`` in a mount namespace with a small tmpfs at ``tmp_path / 'fs'``."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    (tmp_path / "script.py").write_text(script)
    remount = f" && mkdir {mnt}/blobs && mount -o remount,ro {mnt}" if read_only else ""
    shell = (f"mount -t tmpfs -o size={size} tmpfs {mnt}{remount} && "
             f"exec {sys.executable} {tmp_path / 'script.py'} \"$@\"")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           shell, "sh", *args], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


class TestLocalBlobStore(BlobStoreContract):
    def create_store(self, tmp_path: Path) -> BlobStore:
        return LocalBlobStore(tmp_path / "blobs", fsync=False)

    def damage(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, LocalBlobStore)
        (store.root / digest[:2] / digest[2:]).write_bytes(data)

    def test_blobs_are_laid_out_by_the_first_two_hex_digits(self, blobs):
        digest = blobs.put_bytes(b"hello")

        assert (blobs.root / digest[:2] / digest[2:]).read_bytes() == b"hello"
        assert temporaries(blobs.root) == []

    def test_each_blob_is_one_file_and_no_write_leaves_a_temporary(self, blobs, tmp_path):
        blobs.put_bytes(b"same")
        blobs.put_bytes(b"same")
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3 * (1 << 20)))
        blobs.put_file(big)
        with pytest.raises(FileNotFoundError):
            blobs.put_file(tmp_path / "nope")

        assert len([p for p in blobs.root.rglob("*") if p.is_file()]) == 2
        assert temporaries(blobs.root) == []

    def test_a_blob_with_a_corrupt_name_on_disk_is_reported_with_its_path(self, blobs):
        digest = blobs.put_bytes(b"original")
        self.damage(blobs, digest, b"tampered")

        with pytest.raises(IntegrityFailure) as err:
            blobs.get_bytes(digest)

        assert str(blobs.root / digest[:2] / digest[2:]) in err.value.message

    # --- temporaries after kill -9 -------------------------------------------------------------

    def start_fifo_writer(self, tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
        """A real process writing a blob it reads from a FIFO; return (process, fifo fd, root)."""
        root = tmp_path / "blobs"
        fifo = tmp_path / "source.fifo"
        os.mkfifo(fifo)
        proc = subprocess.Popen([sys.executable, "-c", FIFO_WRITER, str(root), str(fifo)],
                                stdout=subprocess.PIPE, text=True)
        fd = os.open(fifo, os.O_WRONLY)  # returns once the writer opened its end
        os.write(fd, b"x" * (2 << 20))
        wait_until(lambda: any(p.stat().st_size > 0 for p in root.glob(f"{TEMP_PREFIX}*")),
                   what="the writer's temporary file fills", interval=0.01)
        return proc, fd, root

    def test_a_temporary_left_by_a_killed_writer_is_removed_when_a_store_opens(self, tmp_path):
        proc, fd, root = self.start_fifo_writer(tmp_path)
        left = [p.name for p in root.glob(f"{TEMP_PREFIX}*")]

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        os.close(fd)
        assert [p.name for p in root.glob(f"{TEMP_PREFIX}*")] == left, "kill -9 left it behind"

        store = LocalBlobStore(root, fsync=False)

        assert store.removed_temporaries == left
        assert list(root.glob(f"{TEMP_PREFIX}*")) == []

    def test_a_temporary_a_live_process_is_writing_is_kept(self, tmp_path):
        proc, fd, root = self.start_fifo_writer(tmp_path)
        writing = [p.name for p in root.glob(f"{TEMP_PREFIX}*")]

        other = LocalBlobStore(root, fsync=False)

        assert other.removed_temporaries == []
        assert [p.name for p in root.glob(f"{TEMP_PREFIX}*")] == writing
        os.write(fd, b"y" * 10)
        os.close(fd)
        out, _ = proc.communicate(timeout=60)
        data = b"x" * (2 << 20) + b"y" * 10
        assert proc.returncode == 0 and out.strip() == sha(data)
        assert other.get_bytes(sha(data)) == data
        assert list(root.glob(f"{TEMP_PREFIX}*")) == []

    def test_a_temporary_of_unknown_origin_is_removed_only_once_it_is_old(self, tmp_path):
        root = tmp_path / "blobs"
        root.mkdir()
        legacy = root / f"{TEMP_PREFIX}k2j4hq"  # an older Quipu's name: no host, no pid
        foreign = root / f"{TEMP_PREFIX}0badc0de.1234.abcdef"  # written on another host
        for path in (legacy, foreign):
            path.write_bytes(b"partial")

        assert LocalBlobStore(root).removed_temporaries == []
        old = time.time() - STALE_AFTER_SECONDS - 60
        for path in (legacy, foreign):
            os.utime(path, (old, old))

        assert sorted(LocalBlobStore(root).removed_temporaries) == sorted(
            [legacy.name, foreign.name])

    # --- write errors are typed ----------------------------------------------------------------

    def run_limited(self, root: Path, limit: int) -> dict[str, object]:
        done = subprocess.run([sys.executable, "-c", LIMITED_WRITER, str(root), str(limit)],
                              capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        return result

    def test_a_write_past_the_file_size_limit_is_typed_and_leaves_nothing(self, tmp_path):
        root = tmp_path / "blobs"

        result = self.run_limited(root, 1 << 20)

        assert (result["type"], result["code"]) == ("Unavailable", "file_too_large")
        assert "ulimit" in str(result["hint"]) and result["left"] == []
        assert temporaries(root) == [] and not LocalBlobStore(root).exists(sha(b"x" * (4 << 20)))

    @needs_mount_namespace
    def test_a_full_disk_is_disk_full_and_leaves_nothing(self, tmp_path):
        result = in_private_tmpfs(tmp_path, LIMITED_WRITER, str(tmp_path / "fs" / "blobs"), "0")

        assert (result["type"], result["code"]) == ("Unavailable", "disk_full")
        assert "free space" in str(result["hint"]) and result["left"] == []

    @needs_mount_namespace
    def test_a_read_only_filesystem_is_typed(self, tmp_path):
        result = in_private_tmpfs(tmp_path, LIMITED_WRITER, str(tmp_path / "fs" / "blobs"), "0",
                                  read_only=True)

        assert (result["type"], result["code"]) == ("Unavailable", "storage_read_only")
