"""The Workspace and Slot aggregates on their own: decisions, guards and folding, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quipu.core.aggregate import Meta
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.log import stream_id
from quipu.core.workspaces.aggregate import Slot, Workspace
from quipu.core.workspaces.events import (
    SlotClaimed,
    SlotReleased,
    VersionPruned,
    VersionSaved,
    WorkspaceCreated,
    WorkspaceMounted,
)

META = Meta(actor="agent-1", reason="exercise the aggregates", at=datetime(2024, 5, 1,
                                                                           tzinfo=UTC))
M1, M2, M3 = ("a" * 64, "b" * 64, "c" * 64)


def committed(agg: Workspace | Slot) -> Workspace | Slot:
    """Pretend the pending events were appended: replay them into a fresh aggregate."""
    fresh = type(agg)(agg.name)
    for event in agg.pending:
        fresh.replay(event)
    return fresh


def workspace_with_versions(*manifests: str) -> Workspace:
    ws = Workspace("exp")
    ws.create(META, "find a better optimiser")
    for m in manifests:
        ws.save(META, m, file_count=1, total_bytes=1, message="save for a test")
    return ws


class TestCreate:
    def test_create_emits_workspace_created_with_the_stripped_goal(self):
        ws = Workspace("exp")

        ws.create(META, "  beat the baseline  ")

        assert ws.pending == [WorkspaceCreated(**META.fields(), workspace="exp",
                                               goal="beat the baseline")]
        assert ws.exists and ws.current is None

    def test_a_fork_records_the_source_version_as_its_first_version(self):
        source = workspace_with_versions(M1, M2)
        ws = Workspace("copy")

        ws.create(META, "try a variant", fork=("exp", source.versions[1]))

        created, first = ws.pending
        assert isinstance(created, WorkspaceCreated)
        assert (created.forked_from, created.from_version) == ("exp", 1)
        assert isinstance(first, VersionSaved)
        assert (first.number, first.manifest, first.trigger) == (1, M1, "fork")

    def test_an_invalid_name_is_refused_before_anything_is_emitted(self):
        ws = Workspace("a/b")

        with pytest.raises(InvalidInput):
            ws.create(META, "goal")

        assert ws.pending == []

    def test_numbers_survive_a_delete_and_recreate(self):
        ws = workspace_with_versions(M1, M2, M3)
        ws.delete(META)

        ws.create(META, "second life")
        number = ws.save(META, M1, file_count=1, total_bytes=1, message="save again")

        assert number == 4 and set(ws.versions) == {4}

    def test_replaying_the_log_gives_the_same_state_as_deciding(self):
        ws = workspace_with_versions(M1, M2)
        ws.tag(META, 1, "best")

        replayed = committed(ws)

        assert isinstance(replayed, Workspace)
        assert (replayed.current, replayed.last_number, replayed.tags) == (2, 2, {"best": 1})
        assert replayed.version == len(ws.pending)


class TestSave:
    def test_an_unchanged_manifest_returns_the_current_version_and_emits_nothing(self):
        ws = workspace_with_versions(M1)
        before = len(ws.pending)

        assert ws.save(META, M1, file_count=1, total_bytes=1, message="again") == 1
        assert len(ws.pending) == before

    def test_a_tree_equal_to_an_older_version_is_still_a_new_version(self):
        ws = workspace_with_versions(M1, M2)

        assert ws.save(META, M1, file_count=1, total_bytes=1, message="back again") == 3

    def test_saving_into_a_deleted_workspace_is_refused(self):
        ws = workspace_with_versions(M1)
        ws.delete(META)

        with pytest.raises(NotFound):
            ws.save(META, M2, file_count=1, total_bytes=1, message="too late")


class TestMountAndHibernate:
    def test_mount_claims_the_slot_in_both_streams(self):
        ws = workspace_with_versions(M1)
        slot = Slot("w1")

        ws.mount(META, slot)

        assert isinstance(ws.pending[-1], WorkspaceMounted) and ws.pending[-1].version == 1
        assert slot.pending == [SlotClaimed(**META.fields(), slot="w1", workspace="exp")]
        assert (ws.slot, slot.occupant) == ("w1", "exp")

    def test_an_occupied_slot_is_refused(self):
        slot = Slot("w1")
        slot.replay(SlotClaimed(**META.fields(), slot="w1", workspace="other"))
        ws = workspace_with_versions()

        with pytest.raises(Conflict) as err:
            ws.mount(META, slot)

        assert err.value.code == "slot_occupied"
        assert not any(isinstance(e, WorkspaceMounted) for e in ws.pending)

    def test_hibernate_frees_both_sides(self):
        ws = workspace_with_versions(M1)
        slot = Slot("w1")
        ws.mount(META, slot)

        ws.hibernate(META, slot, None)

        assert isinstance(slot.pending[-1], SlotReleased)
        assert (ws.slot, slot.occupant) == (None, None)

    def test_an_empty_slot_has_no_occupant(self):
        with pytest.raises(Conflict) as err:
            Slot("w2").check_occupied()

        assert err.value.code == "slot_empty"

    def test_workspace_and_slot_streams_are_distinct(self):
        assert Workspace("w1").stream != Slot("w1").stream
        assert Workspace("w1").stream == stream_id("workspace", "w1")


class TestTagsAndPruning:
    def test_tagging_a_version_twice_with_the_same_tag_is_a_no_op(self):
        ws = workspace_with_versions(M1)
        ws.tag(META, 1, "best")
        before = len(ws.pending)

        ws.tag(META, 1, "best")

        assert len(ws.pending) == before

    def test_a_tag_cannot_name_two_versions(self):
        ws = workspace_with_versions(M1, M2)
        ws.tag(META, 1, "best")

        with pytest.raises(Conflict) as err:
            ws.tag(META, 2, "best")

        assert err.value.code == "tag_taken"

    def test_untagging_an_unknown_tag_is_refused(self):
        with pytest.raises(NotFound) as err:
            workspace_with_versions(M1).untag(META, "nope")

        assert err.value.code == "unknown_tag"

    def test_pruning_twice_emits_one_event(self):
        ws = workspace_with_versions(M1, M2)

        ws.prune(META, 1)
        ws.prune(META, 1)

        assert sum(isinstance(e, VersionPruned) for e in ws.pending) == 1
        assert ws.latest() == 2

    def test_a_pruned_version_is_a_conflict_unless_allowed(self):
        ws = workspace_with_versions(M1, M2)
        ws.prune(META, 1)

        with pytest.raises(Conflict):
            ws.check_version(1)
        assert ws.check_version(1, allow_pruned=True).pruned

    def test_unpruning_a_live_version_emits_nothing(self):
        ws = workspace_with_versions(M1)
        before = len(ws.pending)

        ws.unprune(META, 1)

        assert len(ws.pending) == before

    def test_latest_skips_pruned_versions(self):
        ws = workspace_with_versions(M1, M2, M3)
        ws.mount(META, Slot("w1"))
        ws.rollback(META, 1, files_changed=1)
        ws.prune(META, 3)

        assert ws.latest() == 2


class TestDelete:
    def test_a_mounted_workspace_cannot_be_deleted(self):
        ws = workspace_with_versions(M1)
        ws.mount(META, Slot("w1"))

        with pytest.raises(Conflict) as err:
            ws.delete(META)

        assert err.value.code == "workspace_mounted"

    def test_a_deleted_workspace_no_longer_exists(self):
        ws = workspace_with_versions(M1)

        ws.delete(META)

        with pytest.raises(NotFound):
            ws.check_exists()


def test_a_tag_that_looks_like_a_version_number_is_refused() -> None:
    """ws@v3 must always mean version 3, so 'v3' cannot be a tag."""
    from datetime import UTC, datetime

    from quipu.core.aggregate import Meta
    from quipu.core.errors import InvalidInput
    from quipu.core.workspaces.aggregate import Workspace

    meta = Meta(actor="t", reason="a reason long enough", at=datetime(2024, 1, 1, tzinfo=UTC))
    ws = Workspace("w")
    ws.create(meta, "goal")
    ws.save(meta, "a" * 64, file_count=1, total_bytes=1, message="first version of it")
    with pytest.raises(InvalidInput) as err:
        ws.tag(meta, 1, "v2")
    assert err.value.code == "tag_is_version"
