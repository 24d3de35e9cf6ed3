"""The BlobStore contract against GCS (a real fake-gcs-server process), and GCS's own faults.

The emulator runs once per module on a free port; every test gets a bucket of its own. Faults
the emulator cannot produce (access denied, 503s) come from ``FaultProxy``, a local HTTP server
in front of it that answers chosen requests with GCS's JSON error shape: the real client talks
to it exactly as to GCS. See tests/gcs_emulator.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from blobstore_contract import BlobStoreContract, sha
from gcs_emulator import Emulator, FaultProxy, corrupt_object

from quipu.adapters.blobs.gcs import GCSBlobStore, parse_gs_url
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound, Unavailable
from quipu.core.ports import BlobStore


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, FaultProxy]]:
    """An emulator whose upload URLs point at a fault proxy in front of it."""
    emulator = Emulator(tmp_path_factory.mktemp("gcs"))
    proxy = FaultProxy(lambda: emulator.url).start()
    emulator.external_url = proxy.url
    emulator.start()
    yield emulator, proxy
    proxy.stop()
    emulator.stop()


@pytest.fixture
def bucket(proxied: tuple[Emulator, FaultProxy]) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    proxied[0].create_bucket(name)
    return name


@pytest.fixture
def proxy(proxied: tuple[Emulator, FaultProxy]) -> Iterator[FaultProxy]:
    proxied[1].rules.clear()
    proxied[1].seen.clear()
    yield proxied[1]
    proxied[1].rules.clear()


def open_store(endpoint: str, bucket: str, cache: Path, **options: object) -> GCSBlobStore:
    options = {"retry_seconds": 3.0, "chunk_size": 256 << 10,
               "resumable_threshold": 1 << 20, **options}
    return GCSBlobStore(f"gs://{bucket}/project/blobs", cache, endpoint=endpoint,
                        **options)  # type: ignore[arg-type]


class TestGCSBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, tmp_path: Path, proxied: tuple[Emulator, FaultProxy],
              bucket: str) -> BlobStore:
        self.emulator = proxied[0]
        return open_store(proxied[1].url, bucket, tmp_path / "cache")

    def create_store(self, tmp_path: Path) -> BlobStore:
        raise NotImplementedError  # the fixture above needs the emulator

    def damage(self, store: BlobStore, digest: str, data: bytes) -> None:
        """Overwrite the object in the bucket and drop the local copy, so reads go there."""
        assert isinstance(store, GCSBlobStore)
        corrupt_object(self.emulator.url, store.bucket_name,
                       f"{store.prefix}sha256/{digest}", data)
        store.cache.path(digest).unlink(missing_ok=True)
        store._known.clear()

    # --- what is sent and what is not ----------------------------------------------------------

    def test_objects_are_named_by_content_under_the_prefix(self, blobs, bucket):
        digest = blobs.put_bytes(b"hello")

        with urllib.request.urlopen(f"{self.emulator.url}/storage/v1/b/{bucket}/o") as answer:
            listing = json.load(answer)
        assert [o["name"] for o in listing["items"]] == [f"project/blobs/sha256/{digest}"]
        assert listing["items"][0]["metadata"] == {"sha256": digest}

    def test_a_blob_already_in_the_bucket_is_not_sent_again(self, blobs, proxy, tmp_path,
                                                             bucket):
        data = os.urandom(3 << 20)
        source = tmp_path / "big.bin"
        source.write_bytes(data)
        blobs.put_file(source)
        other = open_store(proxy.url, bucket, tmp_path / "cache2")
        proxy.seen.clear()

        assert other.put_file(source) == (sha(data), len(data))

        assert [m for m, p in proxy.seen if "/o" in p] == ["GET"], "one lookup, no upload"

    def test_a_large_file_goes_up_in_resumable_chunks(self, blobs, proxy, tmp_path):
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(3 << 20))

        blobs.put_file(source)

        assert any("uploadType=resumable" in path for _, path in proxy.seen)
        assert sum(1 for method, _ in proxy.seen if method == "PUT") >= 3

    def test_a_repeated_read_costs_no_network(self, blobs, proxy, tmp_path, bucket):
        digest = blobs.put_bytes(os.urandom(1 << 20))
        reader = open_store(proxy.url, bucket, tmp_path / "cache2")
        first = reader.get_bytes(digest)
        proxy.seen.clear()

        assert reader.get_bytes(digest) == first
        reader.copy_to(digest, tmp_path / "copy")
        reader.link_to(digest, tmp_path / "link")
        reader.verify(digest)

        assert [p for _, p in proxy.seen if "/o" in p] == []

    def test_the_cache_keeps_to_its_bound_and_drops_the_least_recently_read(
            self, proxy, bucket, tmp_path):
        store = open_store(proxy.url, bucket, tmp_path / "cache", cache_bytes=3 << 20)
        digests = [store.put_bytes(os.urandom(1 << 20)) for _ in range(3)]
        store.get_bytes(digests[0])  # read again: now the most recent

        store.put_bytes(os.urandom(1 << 20))

        cached = [d for d in digests if store.cache.exists(d)]
        assert digests[1] not in cached and digests[0] in cached
        total = sum(p.stat().st_size for p in store.cache.root.rglob("*") if p.is_file())
        assert total <= 3 << 20
        assert store.get_bytes(digests[1])  # evicted blobs are fetched again

    def test_a_damaged_cached_file_is_dropped_and_fetched_again(self, blobs, tmp_path):
        data = os.urandom(1 << 20)
        digest = blobs.put_bytes(data)
        cached = blobs.cache.path(digest)
        os.chmod(cached, 0o644)
        cached.write_bytes(b"bit rot")

        assert blobs.get_bytes(digest) == data
        assert cached.read_bytes() == data

    def test_check_writes_and_reads_back_a_blob(self, blobs, bucket):
        assert blobs.check() == f"gs://{bucket}/project/blobs/ is writable and readable"

    # --- faults --------------------------------------------------------------------------------

    def test_a_bucket_that_does_not_exist_is_named_with_a_hint(self, proxy, tmp_path):
        store = open_store(proxy.url, "no-such-bucket", tmp_path / "cache")

        for call in (lambda: store.put_bytes(b"x"), lambda: store.get_bytes(sha(b"x")),
                     lambda: store.size(sha(b"x")), store.check):
            with pytest.raises(NotFound) as err:
                call()
            assert err.value.code == "gcs_bucket_not_found"
            assert "gs://no-such-bucket" in err.value.message and "create" in err.value.hint

    def test_access_denied_is_typed_and_stores_nothing(self, blobs, proxy):
        proxy.rules.append(lambda method, path: 403 if method == "POST" else None)

        with pytest.raises(Unavailable) as err:
            blobs.put_bytes(b"secret")

        assert err.value.code == "gcs_access_denied" and "objectAdmin" in err.value.hint
        proxy.rules.clear()
        assert not blobs.exists(sha(b"secret"))

    def test_a_503_is_retried_with_backoff(self, blobs, proxy):
        failures = iter(range(2))
        proxy.rules.append(lambda method, path: 503 if method == "POST" and next(
            failures, None) is not None else None)

        digest = blobs.put_bytes(b"after two 503s")

        assert [m for m, p in proxy.seen if "/o" in p].count("POST") == 3
        assert blobs.get_bytes(digest) == b"after two 503s"

    def test_503s_that_do_not_stop_end_in_a_clear_error(self, blobs, proxy):
        proxy.rules.append(lambda method, path: 503)

        with pytest.raises(Unavailable) as err:
            blobs.put_bytes(b"never")

        assert err.value.code == "gcs_unreachable" and "nothing was recorded" in err.value.hint

    def test_the_emulator_going_away_mid_upload_stores_nothing(self, proxied, bucket, tmp_path):
        """The emulator is killed after the first chunk of a resumable upload."""
        emulator, proxy = proxied
        store = open_store(proxy.url, bucket, tmp_path / "cache", retry_seconds=2.0)
        source = tmp_path / "big.bin"
        source.write_bytes(os.urandom(4 << 20))
        chunks = []

        def kill_on_second_chunk(method: str, path: str) -> None:
            if method == "PUT":
                chunks.append(path)
                if len(chunks) == 2:
                    emulator.stop()

        proxy.rules.append(kill_on_second_chunk)
        try:
            with pytest.raises(Unavailable) as err:
                store.put_file(source)
        finally:
            proxy.rules.clear()
            emulator.start()  # same port, same data directory

        assert err.value.code == "gcs_unreachable"
        assert not store.exists(hashlib.sha256(source.read_bytes()).hexdigest())

    def test_missing_credentials_are_typed(self, tmp_path, monkeypatch):
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
        store = GCSBlobStore("gs://some-bucket", tmp_path / "cache")

        with pytest.raises(Unavailable) as err:
            store.exists(sha(b"x"))

        assert err.value.code == "gcs_credentials_missing"
        assert "gcloud auth application-default login" in err.value.hint

    def test_concurrent_readers_share_one_cache(self, blobs, bucket, proxy, tmp_path):
        digest = blobs.put_bytes(os.urandom(1 << 20))
        reader = open_store(proxy.url, bucket, tmp_path / "shared")
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(reader.get_bytes(digest)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len({hashlib.sha256(r).hexdigest() for r in results}) == 1


@pytest.mark.parametrize("url", ["s3://x", "gs://", "gs:///prefix", "bucket"])
def test_a_url_that_is_not_gs_is_refused(url):
    with pytest.raises(InvalidInput) as err:
        parse_gs_url(url)
    assert err.value.code == "invalid_blobs_url"


def test_a_gs_url_names_a_bucket_and_a_prefix():
    assert parse_gs_url("gs://bucket") == ("bucket", "")
    assert parse_gs_url("gs://bucket/a/b/") == ("bucket", "a/b/")


def test_a_damaged_object_is_named_in_the_refusal(tmp_path):
    """(The contract suite checks the code; this checks that the object is named.)"""
    emulator = Emulator(tmp_path / "gcs").start()
    try:
        emulator.create_bucket("named")
        store = open_store(emulator.url, "named", tmp_path / "cache")
        digest = store.put_bytes(b"original")
        corrupt_object(emulator.url, "named", f"project/blobs/sha256/{digest}", b"tampered")
        store.cache.path(digest).unlink()

        with pytest.raises(IntegrityFailure) as err:
            store.get_bytes(digest)

        assert f"gs://named/project/blobs/sha256/{digest}" in err.value.message
        assert not store.cache.exists(digest)
    finally:
        emulator.stop()
