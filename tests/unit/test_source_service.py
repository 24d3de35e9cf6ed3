"""The Source aggregate and its commands over the in-memory log, with fakes of the SourceFiles
and RemoteSources ports (the real adapters are exercised in tests/integration/test_sources.py
and test_gcs_sources.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_support import ACTOR, FixedClock, Project

from quipu.adapters.eventstore import open_memory_store
from quipu.adapters.snapshots import MemorySnapshotStore
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound
from quipu.core.ports import FileFacts, RemoteObject
from quipu.core.sources.aggregate import Source
from quipu.core.sources.events import SourceRegistered
from quipu.core.sources.files import SourcePaths
from quipu.core.sources.handlers import SourceService
from quipu.core.unit_of_work import UnitOfWork

REASON = "register data for a unit test of sources"
SHA = "a" * 64


class FakeFiles:
    """The SourceFiles port: every path is a 100-byte npy of float32[10, 2] unless told."""

    def __init__(self) -> None:
        self.sha = SHA
        self.facts: dict[str, FileFacts] = {}

    def realpath(self, path: str) -> str:
        return path

    def describe(self, path: str, *, fmt: str, delimiter: str | None = None) -> FileFacts:
        return self.facts.get(path) or FileFacts(path, 100, self.sha,
                                                 arrays={"": ((10, 2), "float32", "<f4")})

    def digest(self, path: str) -> tuple[str, int]:
        return self.sha, 100

    def describe_blob(self, digest: str, *, fmt: str,
                      delimiter: str | None = None) -> FileFacts:
        return self.describe(f"/blobs/{digest}", fmt=fmt, delimiter=delimiter)


class FakeRemote:
    """The RemoteSources port: objects held in a dict, staged into a set of digests."""

    def __init__(self) -> None:
        self.objects: dict[str, RemoteObject] = {}
        self.blobs: set[str] = set()
        self.staged = 0

    def put(self, uri: str, *, size: int = 100, generation: str = "1",
            crc32c: str = "crc-a", md5: str = "md5-a") -> None:
        self.objects[uri] = RemoteObject(uri, size, generation, crc32c, md5)

    def stat(self, uri: str) -> RemoteObject:
        if uri not in self.objects:
            raise NotFound(f"there is no object {uri}", code="source_object_missing")
        return self.objects[uri]

    def stage(self, expected: RemoteObject) -> tuple[str, int]:
        self.staged += 1
        digest = (expected.crc32c or "x")[-1] * 64
        self.blobs.add(digest)
        return digest, expected.size

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def verify_blob(self, digest: str) -> None:
        if digest not in self.blobs:
            raise NotFound(f"blob {digest[:12]} is not stored", code="unknown_blob")


def npy_metadata(**source: Any) -> dict[str, Any]:
    return {"schema_version": 1, "description": "ten rows of two features, for a unit test",
            "source": {"format": "npy", "size_bytes": 100,
                       "created_at": "2024-05-01T12:00:00Z", **source},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": [10, 2],
                                        "dtype": "float32",
                                        "feature_names": {"kind": "pattern",
                                                          "template": "f{i}"}}}}}


@pytest.fixture
def files() -> FakeFiles:
    return FakeFiles()


@pytest.fixture
def sources(project: Project, files: FakeFiles) -> SourceService:
    return SourceService(project.service.uow, files, SourcePaths(base="/p", roots=("/p",)))


def register(sources: SourceService, name: str = "train",
             metadata: dict[str, Any] | None = None, path: str = "data/x.npy") -> dict[str, Any]:
    md = metadata or npy_metadata()
    return sources.register(name, path, md["description"], REASON, md, actor=ACTOR)


def test_registering_records_the_file_by_its_hash(project: Project,
                                                  sources: SourceService) -> None:
    result = register(sources)
    assert result["sha256"] == SHA and result["path"] == "/p/data/x.npy"
    assert project.types() == ["SourceRegistered"]
    (event,) = [r.event for r in project.events()]
    assert event.actor == ACTOR and event.reason == REASON


def test_a_taken_name_is_refused(project: Project, sources: SourceService) -> None:
    register(sources)
    with pytest.raises(Conflict) as caught:
        register(sources)
    assert caught.value.code == "source_exists"
    assert project.types() == ["SourceRegistered"]


def test_the_format_can_never_change(project: Project, sources: SourceService) -> None:
    register(sources)
    md = npy_metadata(format="file")
    md["schema"] = {"kind": "file", "content_type": "application/octet-stream"}
    with pytest.raises(Conflict) as caught:
        sources.update("train", md, REASON, actor=ACTOR)
    assert caught.value.code == "source_format_immutable"
    assert project.types() == ["SourceRegistered"]


def test_an_update_is_checked_against_the_file(project: Project, sources: SourceService) -> None:
    register(sources)
    md = npy_metadata()
    md["schema"]["arrays"]["x"]["shape"] = [10, 3]
    with pytest.raises(InvalidInput) as caught:
        sources.update("train", md, REASON, actor=ACTOR)
    assert caught.value.code == "metadata_mismatch"
    md = npy_metadata()
    md["description"] = "ten rows of two features, described better this time"
    sources.update("train", md, REASON, actor=ACTOR)
    assert project.types() == ["SourceRegistered", "SourceMetadataUpdated"]


def test_a_changed_file_is_refused_naming_both_hashes(sources: SourceService,
                                                      files: FakeFiles) -> None:
    register(sources)
    files.sha = "b" * 64
    with pytest.raises(IntegrityFailure) as caught:
        sources.verify("train")
    assert caught.value.code == "source_changed"
    assert SHA in caught.value.message and "b" * 64 in caught.value.message


def test_retired_sources_keep_their_name_and_refuse_updates(project: Project,
                                                             sources: SourceService) -> None:
    register(sources)
    sources.retire("train", REASON, actor=ACTOR)
    with pytest.raises(Conflict) as caught:
        sources.update("train", npy_metadata(), REASON, actor=ACTOR)
    assert caught.value.code == "source_retired"
    with pytest.raises(Conflict):
        register(sources)
    assert project.types() == ["SourceRegistered", "SourceRetired"]


def test_deleting_an_unused_source_frees_its_name(project: Project,
                                                  sources: SourceService) -> None:
    register(sources)
    sources.delete("train", REASON, actor=ACTOR)
    with pytest.raises(NotFound):
        sources.delete("train", REASON, actor=ACTOR)
    register(sources)
    assert project.types() == ["SourceRegistered", "SourceDeleted", "SourceRegistered"]


def test_a_consumed_source_cannot_be_deleted_and_names_its_runs() -> None:
    source = Source("train")
    source.exists = True
    source.consumers = ["r1", "r2"]
    with pytest.raises(Conflict) as caught:
        source.check_unused()
    assert caught.value.code == "source_in_use"
    assert "r1" in caught.value.message and "r2" in caught.value.message


URI = "gs://bucket/data/x.npy"


@pytest.fixture
def remote() -> FakeRemote:
    found = FakeRemote()
    found.put(URI)
    return found


@pytest.fixture
def gs_sources(project: Project, files: FakeFiles, remote: FakeRemote) -> SourceService:
    return SourceService(project.service.uow, files, SourcePaths(base="/p", roots=("/p",)),
                         remote)


def register_gs(sources: SourceService, uri: str = URI,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    md = metadata or npy_metadata()
    return sources.register("remote", uri, md["description"], REASON, md, actor=ACTOR)


def test_a_gs_object_is_registered_with_its_fingerprint(project: Project,
                                                        gs_sources: SourceService) -> None:
    result = register_gs(gs_sources)
    assert result["verified"] is True and result["sha256"] is None
    assert result["object"] == {"generation": "1", "crc32c": "crc-a", "md5": "md5-a",
                                "size": 100}
    (event,) = [r.event for r in project.events()]
    assert isinstance(event, SourceRegistered)
    assert event.remote == result["object"] and event.verified is True
    assert gs_sources.verify("remote")["note"] is not None


def test_a_gs_object_whose_size_differs_from_the_metadata_is_refused(
        project: Project, gs_sources: SourceService) -> None:
    with pytest.raises(InvalidInput) as caught:
        register_gs(gs_sources, metadata=npy_metadata(size_bytes=101))
    assert caught.value.code == "metadata_mismatch"
    assert "source.size_bytes" in caught.value.message
    assert project.types() == []


def test_a_gs_uri_without_a_remote_reader_is_refused(project: Project,
                                                     sources: SourceService) -> None:
    with pytest.raises(InvalidInput) as caught:
        register_gs(sources)
    assert caught.value.code == "no_source_files"
    assert project.types() == []


def test_a_gs_object_is_staged_once_per_content(gs_sources: SourceService,
                                                remote: FakeRemote) -> None:
    register_gs(gs_sources)
    source = gs_sources.resolve("remote")
    preview = gs_sources.stage(source, download=False)
    assert (preview["sha256"], remote.staged) == (None, 0)
    got = gs_sources.stage(source)
    assert (got["sha256"], got["generation"], remote.staged) == ("a" * 64, "1", 1)
    meta = gs_sources.uow.meta(ACTOR, REASON)
    source.record_staged(meta, got, sha256=got["sha256"], size_bytes=got["size"])
    source.record_staged(meta, got, sha256=got["sha256"], size_bytes=got["size"])
    assert len(source.pending) == 1, "the same generation is recorded once"
    assert gs_sources.stage(source)["sha256"] == "a" * 64 and remote.staged == 1
    # the same bytes written again (a new generation) are accepted and staged again
    remote.put(URI, generation="2")
    assert gs_sources.stage(source)["sha256"] == "a" * 64 and remote.staged == 2


def test_a_changed_gs_object_is_refused_naming_both_fingerprints(
        gs_sources: SourceService, remote: FakeRemote) -> None:
    register_gs(gs_sources)
    remote.put(URI, generation="7", crc32c="crc-b", md5="md5-b")
    source = gs_sources.resolve("remote")
    for attempt in (lambda: gs_sources.stage(source), lambda: gs_sources.verify("remote")):
        with pytest.raises(IntegrityFailure) as caught:
            attempt()
        assert caught.value.code == "source_changed"
        assert "generation 1 (crc32c crc-a" in caught.value.message
        assert "now generation 7 (crc32c crc-b" in caught.value.message
    assert remote.staged == 0


def test_a_pin_on_a_gs_source_is_checked_once_its_content_is_known(
        gs_sources: SourceService) -> None:
    register_gs(gs_sources)
    source = gs_sources.resolve("remote")
    assert gs_sources.stage(source, pin="a" * 64)["sha256"] == "a" * 64
    with pytest.raises(Conflict) as caught:
        gs_sources.stage(source, pin="c" * 64)
    assert caught.value.code == "source_pin_mismatch"


def test_a_gs_source_registered_before_objects_could_be_read_is_fixed_by_its_first_stage(
        ) -> None:
    """An old SourceRegistered (remote None, unverified) folds, is checked by size only, and
    its first staging records the fingerprint later uses are held to."""
    from quipu.core.aggregate import Meta

    meta = Meta(ACTOR, REASON, FixedClock().now())
    source = Source("old")
    md = npy_metadata()
    source.replay(SourceRegistered(**meta.fields(), source="old", uri=URI, path=None,
                                   sha256=None, size_bytes=100, format="npy",
                                   description=md["description"], metadata=md,
                                   verified=False))
    assert source.is_remote and source.remote is None
    source.record_staged(meta, {"generation": "5", "crc32c": "c", "md5": "m"},
                         sha256="d" * 64, size_bytes=100)
    assert source.remote == {"generation": "5", "crc32c": "c", "md5": "m", "size": 100}
    assert source.sha256 == "d" * 64


@pytest.mark.parametrize("uri, code", [("s3://bucket/x", "unsupported_uri"),
                                       ("gs://bucket", "unsupported_uri"),
                                       ("", "path_missing"),
                                       ("/elsewhere/x.npy", "path_outside_roots")])
def test_bad_locations_are_refused(project: Project, sources: SourceService, uri: str,
                                   code: str) -> None:
    md = npy_metadata()
    with pytest.raises(InvalidInput) as caught:
        sources.register("x", uri, md["description"], REASON, md, actor=ACTOR)
    assert caught.value.code == code
    assert project.types() == []


def test_a_symlink_out_of_the_roots_is_named_as_such(project: Project,
                                                     files: FakeFiles) -> None:
    paths = SourcePaths(base="/p", roots=("/p",),
                        realpath=lambda p: "/etc/secret" if p == "/p/link" else p)
    service = SourceService(project.service.uow, files, paths)
    md = npy_metadata()
    with pytest.raises(InvalidInput) as caught:
        service.register("x", "link", md["description"], REASON, md, actor=ACTOR)
    assert caught.value.code == "symlink_escapes_roots"


def test_a_short_reason_is_refused_before_anything_else(project: Project,
                                                        sources: SourceService) -> None:
    md = copy.deepcopy(npy_metadata())
    with pytest.raises(InvalidInput) as caught:
        sources.register("x", "data/x.npy", md["description"], "short", md, actor=ACTOR)
    assert caught.value.code == "reason_too_short"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["consume", "update", "retire", "stage"]), max_size=12),
       st.integers(min_value=1, max_value=4), st.booleans())
def test_a_snapshot_plus_its_tail_is_the_full_replay(steps: list[str], every: int,
                                                      remote: bool) -> None:
    """Every consuming run appends to the source's stream, so the Source is snapshotted (a
    gs:// source's staged content too)."""
    store = open_memory_store()
    uow = UnitOfWork(store, FixedClock(), snapshots=MemorySnapshotStore(),
                     snapshot_every=every)
    objects = FakeRemote()
    objects.put(URI)
    service = SourceService(uow, FakeFiles(), SourcePaths(base="/p", roots=("/p",)), objects)
    if remote:
        md = npy_metadata()
        service.register("train", URI, md["description"], REASON, md, actor=ACTOR)
    else:
        register(service)
    meta = uow.meta(ACTOR, REASON)
    for i, step in enumerate(steps):
        source = uow.load(Source, "train")
        if source.retired:
            break
        if step == "consume":
            source.consume(meta, run_id=f"stage-{i}", workspace="ws")
        elif step == "stage":
            if not source.is_remote:
                continue
            source.record_staged(meta, {"generation": str(i), "crc32c": "c", "md5": None},
                                 sha256=f"{i % 10}" * 64, size_bytes=100)
        elif step == "update":
            md = npy_metadata()
            md["description"] = f"ten rows of two features, revision {i}"
            source.update(meta, md)
        else:
            source.retire(meta)
        uow.commit(source)
        uow.load(Source, "train")  # may take a snapshot
    snapped = uow.load(Source, "train")
    full = UnitOfWork(store, FixedClock()).load(Source, "train")
    assert snapped.state_dict() == full.state_dict()
    assert snapped.version == full.version
    store.close()


@given(st.sampled_from(["1", "2"]), st.sampled_from(["1", "2"]),
       st.sampled_from([100, 101]), st.sampled_from(["crc-a", "crc-b", None]),
       st.sampled_from(["md5-a", "md5-b", None]))
@settings(max_examples=200)
def test_a_gs_object_is_accepted_exactly_when_its_content_is_the_registered_one(
        registered_generation: str, generation: str, size: int, crc32c: str | None,
        md5: str | None) -> None:
    """The same generation is the same bytes; another generation is accepted only with the
    same size, crc32c and md5 (the content put back); anything else is ``source_changed``."""
    from quipu.core.aggregate import Meta

    source = Source("remote")
    md = npy_metadata()
    source.replay(SourceRegistered(
        **Meta(ACTOR, REASON, FixedClock().now()).fields(), source="remote", uri=URI,
        path=None, sha256=None, size_bytes=100, format="npy", description=md["description"],
        metadata=md, verified=True, remote={"generation": registered_generation,
                                            "crc32c": "crc-a", "md5": "md5-a", "size": 100}))
    objects = FakeRemote()
    objects.objects[URI] = RemoteObject(URI, size, generation, crc32c, md5)
    service = SourceService(UnitOfWork(open_memory_store(), FixedClock()), remote=objects)
    same = generation == registered_generation or (size, crc32c, md5) == (100, "crc-a",
                                                                           "md5-a")
    try:
        service.stage(source, download=False)
        accepted = True
    except IntegrityFailure as exc:
        assert exc.code == "source_changed"
        assert f"generation {registered_generation}" in exc.message
        accepted = False
    assert accepted is same
