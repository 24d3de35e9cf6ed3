"""The BlobStore contract: one suite, run against every blob store (local and GCS).

Each adapter's test module subclasses ``BlobStoreContract``, says how to open a store and how to
damage a stored blob behind its back; everything the rest of Quipu relies on (content
addressing, idempotence, NotFound for unknown digests, corruption refused on every read, atomic
replace, read-only views and adopted files) is tested once, here. Adapter-specific behaviour is
tested in the adapter's subclass with real processes, filesystems and emulators
(tests/contracts/test_blobstore.py, tests/contracts/test_blobstore_gcs.py).
"""

from __future__ import annotations

import abc
import hashlib
import os
import threading
from pathlib import Path

import pytest

from quipu.core.errors import IntegrityFailure, NotFound
from quipu.core.ports import BlobStore

__all__ = ["BlobStoreContract", "sha", "temporaries"]


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

    # --- size, read-only views, adopting a file ----------------------------------------------

    def test_size_is_the_stored_length(self, blobs):
        digest = blobs.put_bytes(b"12345")

        assert blobs.size(digest) == 5
        with pytest.raises(NotFound) as err:
            blobs.size(sha(b"never stored"))
        assert err.value.code == "unknown_blob"

    def test_link_to_gives_a_read_only_view_of_the_blob(self, blobs, tmp_path):
        data = os.urandom(2 << 20)
        digest = blobs.put_bytes(data)
        dest = tmp_path / "run" / "inputs" / "data.bin"

        blobs.link_to(digest, dest)
        blobs.link_to(digest, tmp_path / "other" / "data.bin")

        assert dest.read_bytes() == data and not dest.stat().st_mode & 0o222
        assert (tmp_path / "other" / "data.bin").read_bytes() == data
        assert temporaries(tmp_path / "run") == []

    def test_an_unknown_blob_is_not_linked(self, blobs, tmp_path):
        with pytest.raises(NotFound):
            blobs.link_to(sha(b"never stored"), tmp_path / "x")
        assert not (tmp_path / "x").exists()

    def test_adopt_file_stores_a_file_and_leaves_a_read_only_view_in_its_place(
            self, blobs, tmp_path):
        data = os.urandom(3 * (1 << 20) + 5)
        out = tmp_path / "run" / "outputs" / "model.bin"
        out.parent.mkdir(parents=True)
        out.write_bytes(data)

        assert blobs.adopt_file(out) == (sha(data), len(data))

        assert out.read_bytes() == data and not out.stat().st_mode & 0o222
        assert blobs.get_bytes(sha(data)) == data and blobs.size(sha(data)) == len(data)
        assert temporaries(tmp_path / "run") == []

    def test_adopting_a_missing_file_raises_file_not_found(self, blobs, tmp_path):
        with pytest.raises(FileNotFoundError):
            blobs.adopt_file(tmp_path / "nope")

    def test_a_blob_written_through_a_link_is_never_served(self, blobs, tmp_path):
        """A stage (as root, which ignores 0444) writes to its input: later readers get the
        original bytes back (from a remote copy) or a refusal, never the stage's bytes."""
        data = os.urandom(1 << 20)
        digest = blobs.put_bytes(data)
        view = tmp_path / "run" / "inputs" / "data.bin"
        blobs.link_to(digest, view)

        os.chmod(view, 0o644)
        view.write_bytes(b"written by a stage")

        for read in (blobs.get_bytes,
                     lambda d: blobs.link_to(d, tmp_path / "next" / "data.bin") or (
                         tmp_path / "next" / "data.bin").read_bytes()):
            try:
                assert read(digest) == data
            except IntegrityFailure as err:
                assert err.code == "blob_corrupt"
                assert not (tmp_path / "next" / "data.bin").exists()

    # --- corruption ----------------------------------------------------------------------------

    def test_a_damaged_blob_is_refused_by_every_read(self, blobs, tmp_path):
        digest = blobs.put_bytes(b"original")
        self.damage(blobs, digest, b"tampered")
        dest = tmp_path / "out" / "file.txt"
        dest.parent.mkdir()
        dest.write_text("what was there")

        for read in (blobs.get_bytes, blobs.verify, lambda d: blobs.copy_to(d, dest),
                     lambda d: blobs.link_to(d, dest)):
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

        assert list((tmp_path / "out").glob("*")) == []

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
