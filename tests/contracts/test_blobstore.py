"""The BlobStore contract (tests/blobstore_contract.py) against the local directory store, and
what only the local store does: temporaries after ``kill -9``, full and read-only disks, typed
write errors, all with real processes and real filesystems."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from blobstore_contract import BlobStoreContract, sha, temporaries
from waiting import wait_until

from quipu.adapters._storage import STALE_AFTER_SECONDS
from quipu.adapters.blobs.local import TEMP_PREFIX, LocalBlobStore
from quipu.core.errors import IntegrityFailure
from quipu.core.ports import BlobStore

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

    def test_check_writes_and_reads_back_a_blob(self, blobs):
        assert blobs.check() == f"{blobs.root} is writable and readable"

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
