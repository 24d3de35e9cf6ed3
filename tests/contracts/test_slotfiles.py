"""The SlotFiles contract: one suite, run against every slot adapter and blob store under it.

Each adapter subclasses ``SlotFilesContract`` and says how to open slots over a blob store and
how to damage a stored blob. Everything the service relies on is tested once, here: snapshot
(hashes, modes, symlinks, ignored files), restore (deletions, modes, links, file <-> directory,
unsafe paths, damaged blobs), the small queries (is_dirty, is_empty, clear, read_file) and the
rule that a restore which fails leaves the slot exactly as it was.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filetree import tree, write

from quipu.adapters._storage import temporary_name
from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.slots.local import STAGING_PREFIX, LocalSlotFiles
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound
from quipu.core.ports import BlobStore, SlotFiles
from quipu.core.workspaces.versions import FileEntry, Manifest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def populate(slots: SlotFiles, slot: str = "w1") -> bytes:
    base = slots.path(slot)
    write(base / "train.py", "print(1)\n")
    write(base / "run.sh", "#!/bin/sh\n", mode=0o755)
    write(base / "deep" / "er" / "x.csv", "a\n")
    os.symlink("deep/er/x.csv", base / "latest.csv")
    os.symlink("deep", base / "d")
    return slots.snapshot(slot)[1]



class SlotFilesContract(abc.ABC):
    """What every SlotFiles adapter must do."""

    @abc.abstractmethod
    def create(self, tmp_path: Path) -> tuple[SlotFiles, BlobStore]:
        """Fresh slots over a fresh blob store."""

    @abc.abstractmethod
    def damage(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        """Replace the stored bytes of ``digest`` with ``data``, bypassing the store."""

    @pytest.fixture
    def pair(self, tmp_path: Path) -> tuple[SlotFiles, BlobStore]:
        return self.create(tmp_path)

    @pytest.fixture
    def slots(self, pair: tuple[SlotFiles, BlobStore]) -> SlotFiles:
        return pair[0]

    @pytest.fixture
    def blobs(self, pair: tuple[SlotFiles, BlobStore]) -> BlobStore:
        return pair[1]

    # --- snapshot ---

    def test_every_file_is_stored_with_its_hash_size_and_mode(self, slots, blobs):
        base = slots.path("w1")
        write(base / "train.py", "print(1)\n")
        write(base / "run.sh", "#!/bin/sh\n", mode=0o755)
        write(base / "data" / "x.csv", b"a,b\n1,2\n")

        digest, data = slots.snapshot("w1")

        manifest = Manifest.from_bytes(data)
        assert manifest.files == {
            "train.py": FileEntry(sha256=sha(b"print(1)\n"), size=9, mode=0o644),
            "run.sh": FileEntry(sha256=sha(b"#!/bin/sh\n"), size=10, mode=0o755),
            "data/x.csv": FileEntry(sha256=sha(b"a,b\n1,2\n"), size=8, mode=0o644),
        }
        assert digest == manifest.digest() and blobs.get_bytes(digest) == data
        assert all(blobs.exists(e.sha256) for e in manifest.files.values())

    def test_caches_and_editor_droppings_are_ignored(self, slots):
        base = slots.path("w1")
        write(base / "a.py", "x\n")
        write(base / "__pycache__" / "a.cpython-311.pyc", b"\x00")
        write(base / "b.pyc", b"\x00")
        write(base / ".DS_Store", b"\x00")

        assert set(Manifest.from_bytes(slots.snapshot("w1")[1]).files) == {"a.py"}

    def test_a_symlink_inside_the_slot_is_recorded_as_a_link(self, slots):
        base = slots.path("w1")
        write(base / "data" / "real.csv", "x\n")
        os.symlink("data/real.csv", base / "latest.csv")
        os.symlink("data", base / "current")

        files = Manifest.from_bytes(slots.snapshot("w1")[1]).files

        assert files["latest.csv"] == FileEntry(kind="symlink", target="data/real.csv",
                                                mode=0o777)
        assert files["current"].target == "data"
        assert "current/real.csv" not in files, "a linked directory is not followed"

    def test_an_absolute_symlink_inside_the_slot_is_stored_relative(self, slots):
        base = slots.path("w1")
        write(base / "data" / "real.csv", "x\n")
        os.symlink(base / "data" / "real.csv", base / "latest.csv")

        files = Manifest.from_bytes(slots.snapshot("w1")[1]).files

        assert files["latest.csv"].target == "data/real.csv"

    def test_a_symlink_leaving_the_slot_is_refused(self, slots, tmp_path):
        write(tmp_path / "secret.txt", "outside\n")
        write(slots.path("w1") / "a.txt", "a\n")
        os.symlink(tmp_path / "secret.txt", slots.path("w1") / "secret.txt")

        with pytest.raises(InvalidInput) as err:
            slots.snapshot("w1")
        assert err.value.code == "symlink_escapes_slot"
        with pytest.raises(InvalidInput):
            slots.is_dirty("w1", None)

    def test_a_fifo_is_not_part_of_a_version(self, slots):
        write(slots.path("w1") / "a.txt", "a\n")
        os.mkfifo(slots.path("w1") / "pipe")

        assert set(Manifest.from_bytes(slots.snapshot("w1")[1]).files) == {"a.txt"}

    # --- restore ---

    def test_a_manifest_restored_into_an_empty_slot_is_the_same_tree(self, slots):
        manifest = populate(slots, "w1")

        changed = slots.restore("w2", manifest)

        assert tree(slots.path("w2")) == tree(slots.path("w1"))
        assert changed == 5

    def test_restoring_the_tree_a_slot_already_has_changes_nothing(self, slots):
        manifest = populate(slots)
        before = {p: p.lstat().st_ino for p in slots.path("w1").rglob("*")}

        assert slots.restore("w1", manifest) == 0
        assert {p: p.lstat().st_ino for p in slots.path("w1").rglob("*")} == before

    def test_extra_files_and_their_empty_directories_are_removed(self, slots):
        manifest = populate(slots)
        write(slots.path("w1") / "new" / "nested" / "junk.txt", "junk\n")
        before = tree(slots.path("w1"))

        assert slots.restore("w1", manifest) == 1
        assert not (slots.path("w1") / "new").exists()
        assert set(before) - set(tree(slots.path("w1"))) == {"new", "new/nested",
                                                             "new/nested/junk.txt"}

    def test_modes_and_link_targets_are_put_back(self, slots):
        manifest = populate(slots)
        expected = tree(slots.path("w1"))
        (slots.path("w1") / "run.sh").chmod(0o600)
        (slots.path("w1") / "latest.csv").unlink()
        os.symlink("train.py", slots.path("w1") / "latest.csv")

        assert slots.restore("w1", manifest) == 2
        assert tree(slots.path("w1")) == expected

    def test_a_directory_can_become_a_file_and_back(self, slots):
        base = slots.path("w1")
        write(base / "thing" / "inside.txt", "in\n")
        as_dir = slots.snapshot("w1")[1]
        slots.clear("w1")
        write(base / "thing", "now a file\n")
        as_file = slots.snapshot("w1")[1]

        slots.restore("w1", as_dir)
        assert (base / "thing" / "inside.txt").read_text() == "in\n"
        slots.restore("w1", as_file)
        assert (base / "thing").read_text() == "now a file\n"

    @pytest.mark.parametrize("bad", ["../escape.txt", "/etc/owned", "a/../../b"])
    def test_a_manifest_with_an_unsafe_path_is_refused_before_writing(self, slots, blobs, bad):
        digest = blobs.put_bytes(b"x")
        manifest = Manifest(files={"ok.txt": FileEntry(sha256=digest, size=1),
                                   bad: FileEntry(sha256=digest, size=1)}).to_bytes()

        with pytest.raises(IntegrityFailure) as err:
            slots.restore("w1", manifest)

        assert err.value.code == "manifest_corrupt"
        assert tree(slots.path("w1")) == {}


    # --- the small queries ---

    def test_a_slot_is_clean_right_after_a_snapshot_and_dirty_after_an_edit(self, slots):
        path = write(slots.path("w1") / "a.txt", "a\n")
        digest, _ = slots.snapshot("w1")
        assert not slots.is_dirty("w1", digest)

        path.write_text("b\n")
        assert slots.is_dirty("w1", digest)

    def test_a_mode_change_makes_a_slot_dirty(self, slots):
        path = write(slots.path("w1") / "a.sh", "a\n")
        digest, _ = slots.snapshot("w1")

        path.chmod(0o755)

        assert slots.is_dirty("w1", digest)

    def test_against_no_version_a_slot_is_dirty_exactly_when_it_holds_files(self, slots):
        assert not slots.is_dirty("w1", None)
        write(slots.path("w1") / "a.txt", "a\n")
        assert slots.is_dirty("w1", None)

    def test_an_absent_slot_or_one_with_only_ignored_files_is_empty(self, slots):
        assert slots.is_empty("w1")
        write(slots.path("w1") / "__pycache__" / "x.pyc", b"\x00")
        assert slots.is_empty("w1")
        write(slots.path("w1") / "a.txt", "a\n")
        assert not slots.is_empty("w1")

    def test_clear_empties_the_slot_but_keeps_its_directory(self, slots, tmp_path):
        populate(slots)

        slots.clear("w1")

        assert slots.path("w1").is_dir() and list(slots.path("w1").iterdir()) == []

    def test_read_file_returns_the_current_bytes(self, slots):
        write(slots.path("w1") / "sub" / "a.bin", b"\x00\x01")

        assert slots.read_file("w1", "sub/a.bin") == b"\x00\x01"

    def test_modes_are_restored_exactly(self, slots):
        base = slots.path("w1")
        for name, mode in (("ro.txt", 0o444), ("private.key", 0o600), ("tool", 0o755)):
            write(base / name, name, mode=mode)
        manifest = slots.snapshot("w1")[1]

        slots.restore("w2", manifest)

        assert tree(slots.path("w2")) == tree(base)

    def test_a_restore_deletes_files_the_version_does_not_have(self, slots):
        write(slots.path("w1") / "keep.txt", "keep\n")
        manifest = slots.snapshot("w1")[1]
        write(slots.path("w1") / "gone.txt", "gone\n")
        os.symlink("keep.txt", slots.path("w1") / "gone-link")

        assert slots.restore("w1", manifest) == 2
        assert set(tree(slots.path("w1"))) == {"keep.txt"}

    def test_a_restore_from_a_damaged_blob_is_refused_and_leaves_the_slot_as_it_was(
            self, slots, blobs):
        manifest = populate(slots)
        target = Manifest.from_bytes(manifest)
        write(slots.path("w1") / "train.py", "print(2)\n")
        write(slots.path("w1") / "extra.txt", "unsaved\n")
        (slots.path("w1") / "run.sh").chmod(0o600)
        (slots.path("w1") / "deep" / "er" / "x.csv").unlink()
        self.damage(blobs, target.files["train.py"].sha256, b"print(3)\n")
        before = tree(slots.path("w1"))

        with pytest.raises(IntegrityFailure) as err:
            slots.restore("w1", manifest)

        assert err.value.code == "blob_corrupt"
        assert target.files["train.py"].sha256 in err.value.message
        assert tree(slots.path("w1")) == before

    def test_a_restore_from_a_missing_blob_is_refused_and_leaves_the_slot_as_it_was(
            self, slots):
        write(slots.path("w1") / "a.txt", "a\n")
        manifest = Manifest(files={"a.txt": FileEntry(sha256=sha(b"never stored"), size=12),
                                   "b.txt": FileEntry(sha256=sha(b"a\n"), size=2)}).to_bytes()
        before = tree(slots.path("w1"))

        with pytest.raises(NotFound):
            slots.restore("w1", manifest)

        assert tree(slots.path("w1")) == before

    def test_a_slot_holds_nothing_but_its_files_after_a_restore(self, slots):
        manifest = populate(slots)

        slots.restore("w2", manifest)

        assert sorted(p.name for p in slots.path("w2").iterdir()) == [
            "d", "deep", "latest.csv", "run.sh", "train.py"]
        assert not slots.is_dirty("w2", Manifest.from_bytes(manifest).digest())


class TestLocalSlotFiles(SlotFilesContract):
    def create(self, tmp_path: Path) -> tuple[SlotFiles, BlobStore]:
        blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
        return LocalSlotFiles(tmp_path / "workspaces", blobs, tmp_path / "cache"), blobs

    def damage(self, blobs: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(blobs, LocalBlobStore)
        (blobs.root / digest[:2] / digest[2:]).write_bytes(data)

    def test_a_lost_blob_is_stored_again_even_when_the_stat_cache_knows_the_file(
            self, slots, blobs):
        write(slots.path("w1") / "a.txt", "a\n")
        slots.snapshot("w1")
        (blobs.root / sha(b"a\n")[:2] / sha(b"a\n")[2:]).unlink()

        slots.snapshot("w1")

        assert blobs.get_bytes(sha(b"a\n")) == b"a\n"

    def test_a_corrupt_stat_cache_is_ignored(self, slots, tmp_path):
        write(slots.path("w1") / "a.txt", "a\n")
        digest, _ = slots.snapshot("w1")
        write(tmp_path / "cache" / "w1.json", json.dumps({"a.txt": ["not", "a", "stat"]}))

        assert slots.snapshot("w1")[0] == digest
        write(tmp_path / "cache" / "w1.json", "{not json")
        assert slots.snapshot("w1")[0] == digest

    def test_clear_forgets_the_stat_cache(self, slots, tmp_path):
        populate(slots)

        slots.clear("w1")

        assert not (tmp_path / "cache" / "w1.json").exists()

    def test_a_staging_directory_left_by_a_dead_restore_is_never_versioned_and_is_removed(
            self, slots):
        write(slots.path("w1") / "a.txt", "a\n")
        manifest = slots.snapshot("w1")[1]
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        this_host = temporary_name(STAGING_PREFIX)[len(STAGING_PREFIX):].split(".")[0]
        leftover = slots.path("w1") / f"{STAGING_PREFIX}{this_host}.{dead}.abc"
        write(leftover / "0", "half-restored\n")

        assert Manifest.from_bytes(slots.snapshot("w1")[1]) == Manifest.from_bytes(manifest)
        assert not slots.is_dirty("w1", Manifest.from_bytes(manifest).digest())
        slots.restore("w1", manifest)
        assert not leftover.exists()

    def test_a_restore_past_the_file_size_limit_is_typed_and_leaves_the_slot_as_it_was(
            self, slots, blobs, tmp_path):
        write(slots.path("w1") / "small.txt", "small\n")
        before = tree(slots.path("w1"))
        big = write(tmp_path / "big.bin", b"x" * (4 << 20))
        digest, size = blobs.put_file(big)
        manifest = Manifest(files={"small.txt": FileEntry(sha256=sha(b"other\n"), size=6),
                                   "big.bin": FileEntry(sha256=digest, size=size)})
        blobs.put_bytes(b"other\n")
        (tmp_path / "manifest.bin").write_bytes(manifest.to_bytes())

        done = subprocess.run([sys.executable, "-c", LIMITED_RESTORE, str(tmp_path)],
                              capture_output=True, text=True, check=False, timeout=120)

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["code"] == "file_too_large"
        assert tree(slots.path("w1")) == before


# Restores a manifest into w1 under a 1 MB file size limit; prints the typed error as JSON.
LIMITED_RESTORE = r"""
import json, resource, signal, sys
from pathlib import Path
from quipu.adapters._storage import temporary_name
from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.slots.local import LocalSlotFiles
from quipu.core.errors import QuipuError

root = Path(sys.argv[1])
blobs = LocalBlobStore(root / "blobs", fsync=False)
slots = LocalSlotFiles(root / "workspaces", blobs, root / "cache")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    slots.restore("w1", (root / "manifest.bin").read_bytes())
except QuipuError as exc:
    print(json.dumps(exc.as_dict()))
"""
