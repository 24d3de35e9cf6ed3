"""The local blob store and slot directories on a real filesystem, and a service over SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.slots.local import LocalSlotFiles
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound
from quipu.core.log import ChainBreak, verify_chain
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.handlers import Service, Settings
from quipu.core.workspaces.versions import FileEntry, Manifest

ACTOR = "agent-1"
REASON = "exercise slots and blobs on disk"


def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full), 0)
            elif full.is_file():
                out[rel] = ("file", full.read_bytes(), stat.S_IMODE(full.lstat().st_mode))
            else:
                out[rel] = ("dir", "", 0)
    return out


def write(path: Path, content: str | bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    if mode is not None:
        path.chmod(mode)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", fsync=False)


@pytest.fixture
def slots(tmp_path: Path, blobs: LocalBlobStore) -> LocalSlotFiles:
    return LocalSlotFiles(tmp_path / "workspaces", blobs, tmp_path / "cache")


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if "tmp" in p.name]


# --- blobs -------------------------------------------------------------------------------------


class TestBlobStore:
    def test_bytes_are_stored_under_their_sha256_and_read_back(self, blobs):
        digest = blobs.put_bytes(b"hello")

        assert digest == sha(b"hello")
        assert blobs.get_bytes(digest) == b"hello" and blobs.exists(digest)
        assert (blobs.root / digest[:2] / digest[2:]).read_bytes() == b"hello"

    def test_storing_the_same_bytes_twice_keeps_one_blob(self, blobs):
        blobs.put_bytes(b"same")
        blobs.put_bytes(b"same")

        assert len([p for p in blobs.root.rglob("*") if p.is_file()]) == 1

    def test_a_file_is_stored_with_its_size_and_leaves_no_temporary_files(self, blobs, tmp_path):
        data = os.urandom(3 * (1 << 20) + 7)  # more than one read chunk
        src = write(tmp_path / "big.bin", data)

        digest, size = blobs.put_file(src)

        assert (digest, size) == (sha(data), len(data))
        assert blobs.get_bytes(digest) == data
        assert leftovers(blobs.root) == []

    def test_a_missing_file_raises_and_leaves_no_temporary_files(self, blobs, tmp_path):
        with pytest.raises(FileNotFoundError):
            blobs.put_file(tmp_path / "nope")

        assert leftovers(blobs.root) == []

    def test_an_unknown_blob_is_not_found(self, blobs):
        with pytest.raises(NotFound) as err:
            blobs.get_bytes(sha(b"never stored"))

        assert err.value.code == "unknown_blob" and err.value.hint

    def test_a_name_that_is_not_a_digest_is_not_found(self, blobs):
        with pytest.raises(NotFound):
            blobs.get_bytes("../../etc/passwd")
        with pytest.raises(NotFound):
            blobs.exists("ABC")

    def test_a_corrupted_blob_is_an_integrity_failure(self, blobs):
        digest = blobs.put_bytes(b"original")
        (blobs.root / digest[:2] / digest[2:]).write_bytes(b"tampered")

        with pytest.raises(IntegrityFailure) as err:
            blobs.get_bytes(digest)

        assert err.value.code == "blob_corrupt"

    def test_copy_to_creates_parents_and_replaces_the_destination(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"new content")
        dest = write(tmp_path / "out" / "deep" / "file.txt", "old content")

        blobs.copy_to(digest, dest)

        assert dest.read_bytes() == b"new content"
        assert leftovers(tmp_path / "out") == []

    def test_copy_to_of_an_unknown_blob_writes_nothing(self, blobs, tmp_path):
        with pytest.raises(NotFound):
            blobs.copy_to(sha(b"absent"), tmp_path / "out" / "x")

        assert not (tmp_path / "out").exists()


# --- slots: snapshot ---------------------------------------------------------------------------


class TestSnapshot:
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


# --- slots: restore ----------------------------------------------------------------------------


class TestRestore:
    def populate(self, slots: LocalSlotFiles, slot: str = "w1") -> bytes:
        base = slots.path(slot)
        write(base / "train.py", "print(1)\n")
        write(base / "run.sh", "#!/bin/sh\n", mode=0o755)
        write(base / "deep" / "er" / "x.csv", "a\n")
        os.symlink("deep/er/x.csv", base / "latest.csv")
        os.symlink("deep", base / "d")
        return slots.snapshot(slot)[1]

    def test_a_manifest_restored_into_an_empty_slot_is_the_same_tree(self, slots):
        manifest = self.populate(slots, "w1")

        changed = slots.restore("w2", manifest)

        assert tree(slots.path("w2")) == tree(slots.path("w1"))
        assert changed == 5

    def test_restoring_the_tree_a_slot_already_has_changes_nothing(self, slots):
        manifest = self.populate(slots)
        before = {p: p.lstat().st_ino for p in slots.path("w1").rglob("*")}

        assert slots.restore("w1", manifest) == 0
        assert {p: p.lstat().st_ino for p in slots.path("w1").rglob("*")} == before

    def test_extra_files_and_their_empty_directories_are_removed(self, slots):
        manifest = self.populate(slots)
        write(slots.path("w1") / "new" / "nested" / "junk.txt", "junk\n")
        before = tree(slots.path("w1"))

        assert slots.restore("w1", manifest) == 1
        assert not (slots.path("w1") / "new").exists()
        assert set(before) - set(tree(slots.path("w1"))) == {"new", "new/nested",
                                                             "new/nested/junk.txt"}

    def test_modes_and_link_targets_are_put_back(self, slots):
        manifest = self.populate(slots)
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


# --- slots: the small queries ------------------------------------------------------------------


class TestSlotQueries:
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
        TestRestore().populate(slots)

        slots.clear("w1")

        assert slots.path("w1").is_dir() and list(slots.path("w1").iterdir()) == []
        assert not (tmp_path / "cache" / "w1.json").exists()

    def test_read_file_returns_the_current_bytes(self, slots):
        write(slots.path("w1") / "sub" / "a.bin", b"\x00\x01")

        assert slots.read_file("w1", "sub/a.bin") == b"\x00\x01"


# --- the service over a real SQLite file -------------------------------------------------------


class FixedClock:
    def now(self) -> datetime:
        return datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def open_service(root: Path) -> Service:
    blobs = LocalBlobStore(root / "blobs")
    slots = LocalSlotFiles(root / "workspaces", blobs, root / "cache")
    return Service(UnitOfWork(open_sqlite_store(root / "events.db"), FixedClock()), blobs, slots,
                   Settings(slots=("w1", "w2")))


def test_a_project_carries_on_after_the_log_is_closed_and_reopened(tmp_path):
    first = open_service(tmp_path)
    first.create_workspace("exp", "carry on across restarts", REASON, actor=ACTOR)
    first.mount("exp", "w1", REASON, actor=ACTOR)
    write(tmp_path / "workspaces" / "w1" / "run.sh", "#!/bin/sh\n", mode=0o755)
    os.symlink("run.sh", tmp_path / "workspaces" / "w1" / "go")
    first.save_version("w1", "the first runnable script", actor=ACTOR)
    expected = tree(tmp_path / "workspaces" / "w1")
    first.store.close()

    second = open_service(tmp_path)
    second.hibernate("w1", REASON, actor=ACTOR)
    result = second.mount("exp", "w2", REASON, actor=ACTOR)

    assert result["version"] == "v1"
    assert tree(tmp_path / "workspaces" / "w2") == expected
    assert tree(tmp_path / "workspaces" / "w1") == {}
    records = second.store.read(limit=1000)
    assert [r.type for r in records] == [
        "WorkspaceCreated", "WorkspaceMounted", "SlotClaimed", "VersionSaved",
        "WorkspaceHibernated", "SlotReleased", "WorkspaceMounted", "SlotClaimed"]
    assert not any(isinstance(b, ChainBreak) for b in verify_chain(records))
    second.store.close()
