"""The Source aggregate and its commands over the in-memory log, with a fake of the
SourceFiles port (the real adapter is exercised in tests/integration/test_sources.py)."""

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
from quipu.core.ports import FileFacts
from quipu.core.sources.aggregate import Source
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


def test_a_gs_uri_is_recorded_unverified(sources: SourceService) -> None:
    md = npy_metadata()
    result = sources.register("remote", "gs://bucket/data/x.npy", md["description"], REASON,
                              md, actor=ACTOR)
    assert result["verified"] is False and result["sha256"] is None
    assert sources.verify("remote")["verified"] is False


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
@given(st.lists(st.sampled_from(["consume", "update", "retire"]), max_size=12),
       st.integers(min_value=1, max_value=4))
def test_a_snapshot_plus_its_tail_is_the_full_replay(steps: list[str], every: int) -> None:
    """Every consuming run appends to the source's stream, so the Source is snapshotted."""
    store = open_memory_store()
    uow = UnitOfWork(store, FixedClock(), snapshots=MemorySnapshotStore(),
                     snapshot_every=every)
    service = SourceService(uow, FakeFiles(), SourcePaths(base="/p", roots=("/p",)))
    register(service)
    meta = uow.meta(ACTOR, REASON)
    for i, step in enumerate(steps):
        source = uow.load(Source, "train")
        if source.retired:
            break
        if step == "consume":
            source.consume(meta, run_id=f"stage-{i}", workspace="ws")
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
