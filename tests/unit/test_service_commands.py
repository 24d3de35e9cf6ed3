"""The command service, driven through its public commands over a memory log and real tmp dirs.

Grouped per command. Each test arranges through the same commands an agent would call, then
checks both what the command answered and what the log and the slot directory now hold.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from quipu.adapters.blobs.local import LocalBlobStore
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound, Unavailable
from quipu.core.project.events import ThoughtLogged
from quipu.core.workspaces.events import SlotRolledBack, VersionSaved, WorkspaceHibernated

ACTOR = "agent-1"
REASON = "exercise the service in a unit test"


class FullDiskBlobs(LocalBlobStore):
    """Local blobs that run out of disk after ``budget`` more copies into a slot (None: never)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.budget: int | None = None

    def copy_to(self, digest: str, dest: Path) -> None:
        if self.budget is not None:
            if self.budget == 0:
                raise OSError(errno.ENOSPC, "No space left on device", str(dest))
            self.budget -= 1
        super().copy_to(digest, dest)


def saved(project, workspace: str) -> list[VersionSaved]:
    return [r.event for r in project.events()
            if isinstance(r.event, VersionSaved) and r.event.workspace == workspace]


# --- create_workspace --------------------------------------------------------------------------


class TestCreateWorkspace:
    def test_an_empty_workspace_has_no_version(self, project):
        result = project.create("baseline")

        assert result["version"] is None and result["forked_from"] is None
        assert project.types() == ["WorkspaceCreated"]

    def test_a_fork_starts_from_the_source_workspace_current_version(self, project):
        project.create("base")
        project.mount("base")
        project.write("w1", "model.py", "layers = 2\n")
        project.save()
        project.write("w1", "model.py", "layers = 3\n")
        project.save()

        result = project.create("wide", from_workspace="base")
        project.mount("wide", "w2")

        assert result["forked_from"] == "base@v2"
        assert result["version"] == "v1"
        assert (project.slot("w2") / "model.py").read_text() == "layers = 3\n"
        first = saved(project, "wide")[0]
        assert (first.trigger, first.parent, first.message) == ("fork", None,
                                                                "forked from base@v2")

    def test_a_fork_can_start_from_an_older_version(self, project):
        project.create("base")
        project.mount("base")
        project.write("w1", "model.py", "layers = 2\n")
        project.save()
        project.write("w1", "model.py", "layers = 3\n")
        project.save()

        result = project.create("narrow", from_workspace="base", from_version="v1")
        project.mount("narrow", "w2")

        assert result["forked_from"] == "base@v1"
        assert (project.slot("w2") / "model.py").read_text() == "layers = 2\n"

    def test_a_fork_of_a_workspace_without_versions_is_refused(self, project):
        project.create("base")
        head = project.store.head()

        with pytest.raises(Conflict) as err:
            project.create("copy", from_workspace="base")

        assert err.value.code == "nothing_to_fork"
        assert project.store.head() == head

    def test_from_version_without_from_workspace_is_refused(self, project):
        with pytest.raises(InvalidInput) as err:
            project.create("copy", from_version=1)

        assert err.value.code == "from_version_alone" and err.value.hint
        assert project.store.head() == 0

    def test_a_duplicate_name_is_refused(self, project):
        project.create("baseline")

        with pytest.raises(Conflict) as err:
            project.create("baseline")

        assert err.value.code == "workspace_exists"
        assert project.store.head() == 1

    def test_an_empty_goal_is_refused(self, project):
        with pytest.raises(InvalidInput) as err:
            project.service.create_workspace("baseline", "   ", REASON, actor=ACTOR)

        assert err.value.code == "goal_missing"

    def test_version_numbers_continue_after_delete_and_recreate(self, project):
        """A re-created workspace never reuses the numbers of its earlier life."""
        project.create("exp")
        project.mount("exp")
        for n in range(3):
            project.write("w1", "a.txt", f"edit {n}\n")
            project.save()
        project.hibernate()
        project.service.delete_workspace("exp", REASON, actor=ACTOR)

        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "second life\n")
        number = project.save()

        assert number == 4
        assert [e.number for e in saved(project, "exp")] == [1, 2, 3, 4]

    def test_a_recreated_workspace_starts_empty(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "first life\n")
        project.hibernate()
        project.service.delete_workspace("exp", REASON, actor=ACTOR)

        project.create("exp")
        result = project.mount("exp")

        assert result["version"] is None
        assert project.tree("w1") == {}


# --- mount -------------------------------------------------------------------------------------


class TestMount:
    def test_mount_restores_the_files_of_the_current_version(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "src/train.py", "print('train')\n")
        project.write("w1", "run.sh", "#!/bin/sh\n", mode=0o755)
        project.save()
        before = project.tree("w1")
        project.hibernate()
        assert project.tree("w1") == {}

        result = project.mount("exp", "w2")

        assert result["version"] == "v1"
        assert result["path"] == str(project.slot("w2"))
        assert project.tree("w2") == before

    def test_mount_records_the_workspace_and_the_slot_together(self, project):
        project.create("exp")
        head = project.store.head()

        project.mount("exp")

        assert project.types(after=head) == ["WorkspaceMounted", "SlotClaimed"]

    def test_a_workspace_is_mounted_in_one_slot_at_a_time(self, project):
        project.create("exp")
        project.mount("exp", "w1")
        head = project.store.head()

        with pytest.raises(Conflict) as err:
            project.mount("exp", "w2")

        assert err.value.code == "already_mounted"
        assert project.store.head() == head
        assert project.tree("w2") == {}

    def test_an_occupied_slot_is_refused(self, project):
        project.create("a")
        project.create("b")
        project.mount("a")
        project.write("w1", "notes.md", "a's work\n")
        head, files = project.store.head(), project.tree("w1")

        with pytest.raises(Conflict) as err:
            project.mount("b", "w1")

        assert err.value.code == "slot_occupied" and "hibernate" in err.value.hint
        assert project.store.head() == head
        assert project.tree("w1") == files

    def test_a_free_slot_holding_stray_files_is_refused_and_the_files_are_kept(self, project):
        project.create("exp")
        project.write("w1", "leftover/results.csv", "epoch,loss\n1,0.5\n")
        files = project.tree("w1")

        with pytest.raises(Conflict) as err:
            project.mount("exp", "w1")

        assert err.value.code == "slot_not_empty" and err.value.hint
        assert project.store.head() == 1
        assert project.tree("w1") == files

    def test_an_unknown_workspace_is_refused(self, project):
        with pytest.raises(NotFound) as err:
            project.mount("ghost")

        assert err.value.code == "unknown_workspace"

    def test_a_version_whose_content_is_missing_is_refused_before_anything_is_written(
            self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "precious\n")
        project.save()
        project.hibernate()
        digest = hashlib.sha256(b"precious\n").hexdigest()
        (project.root / "blobs" / digest[:2] / digest[2:]).unlink()
        head = project.store.head()

        with pytest.raises(IntegrityFailure) as err:
            project.mount("exp", "w2")

        assert err.value.code == "blob_missing" and "a.txt" in str(err.value)
        assert project.store.head() == head
        assert project.tree("w2") == {}

    def test_a_mount_whose_files_cannot_be_written_leaves_the_slot_empty_and_free(
            self, new_project, tmp_path):
        """The slot is claimed before its files are written; a failed write gives it back."""
        blobs = FullDiskBlobs(tmp_path / "full-disk-blobs")
        project = new_project(blobs=blobs)
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "one\n")
        project.write("w1", "b.txt", "two\n")
        project.save()
        project.hibernate()
        blobs.budget = 1  # the first file lands, the second does not

        with pytest.raises(Unavailable) as err:
            project.mount("exp", "w2")

        assert err.value.code == "disk_full" and "free space" in err.value.hint
        assert project.tree("w2") == {}
        assert project.types()[-2:] == ["WorkspaceHibernated", "SlotReleased"]
        blobs.budget = None
        project.mount("exp", "w2")
        assert set(project.tree("w2")) == {"a.txt", "b.txt"}


# --- save_version ------------------------------------------------------------------------------


class TestSaveVersion:
    def test_the_first_save_is_v1_with_the_slot_files(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "hello\n")
        project.write("w1", "b/c.txt", "world\n")

        result = project.service.save_version("w1", "first cut of the model", actor=ACTOR)

        assert (result["version"], result["created"]) == ("v1", True)
        assert (result["file_count"], result["total_bytes"]) == (2, 12)
        event = saved(project, "exp")[0]
        assert (event.number, event.parent, event.message) == (1, None,
                                                               "first cut of the model")

    def test_an_unchanged_slot_returns_the_existing_version_and_appends_nothing(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "hello\n")
        first = project.service.save_version("w1", "first cut of the model", actor=ACTOR)
        head = project.store.head()

        again = project.service.save_version("w1", "nothing changed since", actor=ACTOR)

        assert again["number"] == first["number"] and again["created"] is False
        assert again["manifest"] == first["manifest"]
        assert again["position"] is None
        assert project.store.head() == head

    def test_each_save_gets_the_next_number_and_points_at_its_parent(self, project):
        project.create("exp")
        project.mount("exp")
        numbers = []
        for n in range(3):
            project.write("w1", "a.txt", f"edit {n}\n")
            numbers.append(project.save())

        assert numbers == [1, 2, 3]
        assert [e.parent for e in saved(project, "exp")] == [None, 1, 2]

    def test_numbers_are_never_reused_after_pruning_the_newest(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "one\n")
        project.save()
        project.write("w1", "a.txt", "two\n")
        project.save()
        project.service.rollback("w1", 1, REASON, actor=ACTOR)
        project.service.prune_versions("exp", REASON, actor=ACTOR, version=2)

        project.write("w1", "a.txt", "three\n")

        assert project.save() == 3

    def test_a_message_shorter_than_15_characters_is_refused(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "hello\n")
        head = project.store.head()

        with pytest.raises(InvalidInput) as err:
            project.service.save_version("w1", "wip", actor=ACTOR)

        assert err.value.code == "reason_too_short" and "message" in str(err.value)
        assert project.store.head() == head

    def test_saving_an_empty_slot_of_a_new_workspace_is_refused(self, project):
        project.create("exp")
        project.mount("exp")

        with pytest.raises(Conflict) as err:
            project.save()

        assert err.value.code == "nothing_to_save"

    def test_saving_an_empty_slot_is_refused(self, project):
        with pytest.raises(Conflict) as err:
            project.save("w2")

        assert err.value.code == "slot_empty"


# --- hibernate ---------------------------------------------------------------------------------


class ReadOnlySlotFiles:
    """The SlotFiles port over real directories, whose slots can no longer be emptied (what a
    read-only remount of the disk does to the real adapter)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def clear(self, slot: str) -> None:
        raise Unavailable(f"slot {slot} is on a read-only file system",
                          code="storage_read_only", hint="remount it read-write")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class TestHibernate:
    def test_a_slot_that_cannot_be_emptied_after_the_commit_is_a_warning_not_an_error(
            self, project):
        """Hibernate committed (edits saved, slot released): a failure to remove the files
        afterwards must not tell the agent the command failed (it would retry into
        slot_empty); it is a warning naming what to remove."""
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "unsaved work\n")
        project.service.slots = ReadOnlySlotFiles(project.slots)

        result = project.hibernate()

        assert result["auto_saved"] is True and result["saved_version"] == "v1"
        assert result["warning"]["code"] == "slot_not_cleared"
        assert "exp@v1" in result["warning"]["hint"]
        assert project.types()[-2:] == ["WorkspaceHibernated", "SlotReleased"]
        assert (project.slot("w1") / "a.txt").read_text() == "unsaved work\n"

    def test_a_dirty_slot_is_saved_before_it_is_emptied(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "unsaved work\n")

        result = project.hibernate()

        assert result["auto_saved"] is True and result["saved_version"] == "v1"
        assert project.tree("w1") == {}
        event = next(r.event for r in project.events()
                     if isinstance(r.event, WorkspaceHibernated))
        assert event.saved_version == 1
        assert saved(project, "exp")[0].trigger == "hibernate"
        project.mount("exp", "w2")
        assert (project.slot("w2") / "a.txt").read_text() == "unsaved work\n"

    def test_a_clean_slot_is_not_saved_again(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "saved work\n")
        project.save()
        head = project.store.head()

        result = project.hibernate()

        assert result["auto_saved"] is False and result["saved_version"] is None
        assert result["current_version"] == "v1"
        assert project.types(after=head) == ["WorkspaceHibernated", "SlotReleased"]
        assert project.tree("w1") == {}

    def test_the_slot_is_free_for_another_workspace_afterwards(self, project):
        project.create("a")
        project.create("b")
        project.mount("a")
        project.hibernate()

        result = project.mount("b", "w1")

        assert result["slot"] == "w1"

    def test_hibernating_an_empty_slot_is_refused(self, project):
        with pytest.raises(Conflict) as err:
            project.hibernate("w3")

        assert err.value.code == "slot_empty"


# --- rollback ----------------------------------------------------------------------------------


class TestRollback:
    def arrange(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "keep.txt", "kept\n")
        project.write("w1", "gone.txt", "deleted later\n")
        project.write("w1", "run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
        project.write("w1", "data/real.csv", "x\n1\n")
        os.symlink("data/real.csv", project.slot("w1") / "latest.csv")
        project.save()
        return project.tree("w1")

    def test_the_slot_becomes_exactly_the_version_tree(self, project):
        v1 = self.arrange(project)
        (project.slot("w1") / "gone.txt").unlink()
        project.write("w1", "added.txt", "new file\n")
        project.write("w1", "keep.txt", "changed\n")
        (project.slot("w1") / "run.sh").chmod(0o644)
        (project.slot("w1") / "latest.csv").unlink()
        os.symlink("keep.txt", project.slot("w1") / "latest.csv")
        project.save()

        result = project.service.rollback("w1", "v1", REASON, actor=ACTOR)

        assert project.tree("w1") == v1
        assert project.tree("w1")["run.sh"][2] == 0o755
        assert project.tree("w1")["latest.csv"] == ("link", "data/real.csv", 0)
        assert result["version"] == "v1" and result["files_reverted"] == 5
        assert result["auto_saved_version"] is None

    def test_unsaved_edits_are_saved_first_so_nothing_is_lost(self, project):
        self.arrange(project)
        project.write("w1", "keep.txt", "precious unsaved edit\n")
        edited = project.tree("w1")

        result = project.service.rollback("w1", 1, REASON, actor=ACTOR)

        assert result["auto_saved_version"] == "v2"
        assert saved(project, "exp")[-1].trigger == "rollback"
        project.service.rollback("w1", 2, REASON, actor=ACTOR)
        assert project.tree("w1") == edited

    def test_the_workspace_is_at_the_rolled_back_version_afterwards(self, project):
        self.arrange(project)
        project.write("w1", "keep.txt", "v2\n")
        project.save()

        project.service.rollback("w1", 1, REASON, actor=ACTOR)
        project.write("w1", "keep.txt", "v3\n")
        project.save()

        assert saved(project, "exp")[-1].parent == 1
        rolled = [r.event for r in project.events() if isinstance(r.event, SlotRolledBack)]
        assert [(e.slot, e.number) for e in rolled] == [("w1", 1)]

    def test_rolling_back_to_a_pruned_version_is_refused(self, project):
        v1 = self.arrange(project)
        project.write("w1", "keep.txt", "v2\n")
        project.save()
        project.service.prune_versions("exp", REASON, actor=ACTOR, version=1)
        head, files = project.store.head(), project.tree("w1")

        with pytest.raises(Conflict) as err:
            project.service.rollback("w1", 1, REASON, actor=ACTOR)

        assert err.value.code == "version_pruned" and "unprune" in err.value.hint
        assert project.store.head() == head and project.tree("w1") == files != v1

    def test_rolling_back_to_an_unknown_version_is_refused(self, project):
        self.arrange(project)
        head, files = project.store.head(), project.tree("w1")

        with pytest.raises(NotFound) as err:
            project.service.rollback("w1", "v9", REASON, actor=ACTOR)

        assert err.value.code == "unknown_version" and "v1" in err.value.hint
        assert project.store.head() == head and project.tree("w1") == files


# --- manage versions ---------------------------------------------------------------------------


class TestManageVersions:
    def arrange(self, project, count: int = 4):
        project.create("exp")
        project.mount("exp")
        for n in range(count):
            project.write("w1", "a.txt", f"edit {n}\n")
            project.save()

    def versions(self, project):
        return project.service.aggregates(["exp"])[0].versions

    def test_a_tag_names_one_version(self, project):
        self.arrange(project)

        result = project.service.tag_version("exp", "v2", "best-loss", REASON, actor=ACTOR)

        assert result == {"workspace": "exp", "version": "v2", "tag": "best-loss"}
        assert self.versions(project)[2].tags == {"best-loss"}

    def test_a_tag_is_unique_within_a_workspace(self, project):
        self.arrange(project)
        project.service.tag_version("exp", 2, "best", REASON, actor=ACTOR)
        head = project.store.head()

        with pytest.raises(Conflict) as err:
            project.service.tag_version("exp", 3, "best", REASON, actor=ACTOR)

        assert err.value.code == "tag_taken" and "untag" in err.value.hint
        assert project.store.head() == head

    def test_the_same_tag_may_name_versions_of_different_workspaces(self, project):
        self.arrange(project)
        project.create("other", from_workspace="exp")
        project.service.tag_version("exp", 1, "best", REASON, actor=ACTOR)

        project.service.tag_version("other", 1, "best", REASON, actor=ACTOR)

        assert project.service.aggregates(["other"])[0].tags == {"best": 1}

    def test_untagging_frees_the_tag(self, project):
        self.arrange(project)
        project.service.tag_version("exp", 2, "best", REASON, actor=ACTOR)

        project.service.untag_version("exp", "best", REASON, actor=ACTOR)
        project.service.tag_version("exp", 3, "best", REASON, actor=ACTOR)

        assert self.versions(project)[3].tags == {"best"} and not self.versions(project)[2].tags

    def test_a_tagged_version_cannot_be_pruned(self, project):
        self.arrange(project)
        project.service.tag_version("exp", 2, "best", REASON, actor=ACTOR)
        head = project.store.head()

        with pytest.raises(Conflict) as err:
            project.service.prune_versions("exp", REASON, actor=ACTOR, version=2)

        assert err.value.code == "version_tagged"
        assert project.store.head() == head

    def test_the_current_version_cannot_be_pruned(self, project):
        self.arrange(project)

        with pytest.raises(Conflict) as err:
            project.service.prune_versions("exp", REASON, actor=ACTOR, version=4)

        assert err.value.code == "version_current"

    def test_pruning_is_soft_and_unprune_brings_the_version_back(self, project):
        self.arrange(project)
        project.service.rollback("w1", 1, REASON, actor=ACTOR)
        v1_tree = project.tree("w1")
        project.service.rollback("w1", 4, REASON, actor=ACTOR)

        pruned = project.service.prune_versions("exp", REASON, actor=ACTOR, version=1)
        assert pruned["pruned"] == ["v1"] and self.versions(project)[1].pruned
        unpruned = project.service.prune_versions("exp", REASON, actor=ACTOR, version=1,
                                                  unprune=True)

        assert unpruned["unpruned"] == ["v1"] and not self.versions(project)[1].pruned
        project.service.rollback("w1", 1, REASON, actor=ACTOR)
        assert project.tree("w1") == v1_tree

    def test_a_range_prune_skips_tagged_versions_and_the_current_one(self, project):
        self.arrange(project, count=5)
        project.service.rollback("w1", 3, REASON, actor=ACTOR)
        project.service.tag_version("exp", 2, "keep-me", REASON, actor=ACTOR)

        result = project.service.prune_versions("exp", REASON, actor=ACTOR, from_version=1,
                                                to_version="v5")

        assert result["pruned"] == ["v1", "v4", "v5"]
        assert result["skipped"] == ["v2", "v3"]
        assert {n for n, v in self.versions(project).items() if v.pruned} == {1, 4, 5}

    def test_a_backwards_range_is_refused(self, project):
        self.arrange(project)

        with pytest.raises(InvalidInput) as err:
            project.service.prune_versions("exp", REASON, actor=ACTOR, from_version=3,
                                           to_version=1)

        assert err.value.code == "bad_range"

    def test_a_prune_that_names_no_version_is_refused(self, project):
        self.arrange(project)

        with pytest.raises(InvalidInput) as err:
            project.service.prune_versions("exp", REASON, actor=ACTOR)

        assert err.value.code == "version_missing"


# --- delete_workspace --------------------------------------------------------------------------


class TestDeleteWorkspace:
    def test_a_mounted_workspace_cannot_be_deleted(self, project):
        project.create("exp")
        project.mount("exp")
        head = project.store.head()

        with pytest.raises(Conflict) as err:
            project.service.delete_workspace("exp", REASON, actor=ACTOR)

        assert err.value.code == "workspace_mounted" and "hibernate" in err.value.hint
        assert project.store.head() == head

    def test_a_hibernated_workspace_can_be_deleted(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "a.txt", "work\n")
        project.hibernate()

        result = project.service.delete_workspace("exp", REASON, actor=ACTOR)

        assert result["deleted"] is True
        assert project.types()[-1] == "WorkspaceDeleted"
        with pytest.raises(NotFound):
            project.mount("exp")

    def test_deleting_an_unknown_workspace_is_refused(self, project):
        with pytest.raises(NotFound) as err:
            project.service.delete_workspace("ghost", REASON, actor=ACTOR)

        assert err.value.code == "unknown_workspace"


# --- log_thought -------------------------------------------------------------------------------


class TestLogThought:
    def test_a_thought_is_recorded_with_its_workspace(self, project):
        project.create("exp")

        result = project.service.log_thought("  loss plateaus after epoch 3  ", actor=ACTOR,
                                             workspace="exp")

        event = project.events()[-1].event
        assert isinstance(event, ThoughtLogged)
        assert (event.thought, event.workspace, event.actor) == ("loss plateaus after epoch 3",
                                                                 "exp", ACTOR)
        assert result["position"] == project.store.head()

    def test_thoughts_need_no_workspace(self, project):
        project.service.log_thought("the dataset may have label noise", actor=ACTOR)
        project.service.log_thought("try label smoothing next", actor=ACTOR)

        assert project.types() == ["ThoughtLogged", "ThoughtLogged"]

    def test_an_empty_thought_is_refused(self, project):
        with pytest.raises(InvalidInput) as err:
            project.service.log_thought("   ", actor=ACTOR)

        assert err.value.code == "thought_missing"
        assert project.store.head() == 0

    def test_a_thought_about_an_unknown_workspace_is_refused(self, project):
        with pytest.raises(NotFound):
            project.service.log_thought("about nothing at all", actor=ACTOR, workspace="ghost")

        assert project.store.head() == 0


# --- diff --------------------------------------------------------------------------------------


class TestDiff:
    def arrange(self, project):
        project.create("exp")
        project.mount("exp")
        project.write("w1", "model.py", "layers = 2\nwidth = 64\n")
        project.write("w1", "weights.bin", b"\x00\x01\x02\x03")
        project.save()

    def test_a_slot_is_compared_with_its_current_version(self, project):
        self.arrange(project)
        project.write("w1", "model.py", "layers = 3\nwidth = 64\n")

        result = project.service.diff("w1")

        assert result["left"] == "exp@v1" and result["has_changes"]
        assert result["files_changed"] == [{"path": "model.py", "change": "modified"}]
        assert "-layers = 2\n+layers = 3\n" in result["diff_text"]
        assert "--- exp@v1/model.py" in result["diff_text"]

    def test_a_clean_slot_has_no_changes(self, project):
        self.arrange(project)

        result = project.service.diff("w1")

        assert not result["has_changes"] and result["summary"] == "no changes"
        assert result["diff_text"] == ""

    def test_a_binary_file_shows_its_hash_and_size_change(self, project):
        self.arrange(project)
        project.write("w1", "weights.bin", b"\x00\x09\x09\x09\x09\x09")

        text = project.service.diff("w1")["diff_text"]

        assert text.startswith("Binary file weights.bin changed: sha256 ")
        assert "(4 B) -> sha256 " in text and "(6 B)" in text

    def test_a_version_is_compared_with_its_parent(self, project):
        self.arrange(project)
        project.write("w1", "notes.md", "idea\n")
        project.save()

        result = project.service.diff("exp@v2")

        assert (result["left"], result["right"]) == ("exp@v1", "exp@v2")
        assert result["files_changed"] == [{"path": "notes.md", "change": "added"}]
        assert "+idea\n" in result["diff_text"]

    def test_the_first_version_is_compared_with_the_empty_tree(self, project):
        self.arrange(project)

        result = project.service.diff("exp@v1")

        assert result["left"] == "exp@empty"
        assert {f["change"] for f in result["files_changed"]} == {"added"}

    def test_a_slot_can_be_compared_with_a_named_version(self, project):
        self.arrange(project)
        project.write("w1", "model.py", "layers = 3\nwidth = 64\n")
        project.save()

        result = project.service.diff("w1", against="v1")

        assert result["left"] == "exp@v1" and "+layers = 3\n" in result["diff_text"]

    def test_a_bare_version_without_context_is_refused(self, project):
        self.arrange(project)

        with pytest.raises(InvalidInput) as err:
            project.service.diff("v1")

        assert err.value.code == "ambiguous_version" and "workspace@vN" in err.value.hint

    def test_a_whole_workspace_needs_something_to_compare_with(self, project):
        self.arrange(project)

        with pytest.raises(InvalidInput) as err:
            project.service.diff("exp")

        assert err.value.code == "diff_needs_against"

    def test_a_diff_writes_nothing(self, project):
        self.arrange(project)
        project.write("w1", "model.py", "changed\n")
        head, files = project.store.head(), project.tree("w1")

        project.service.diff("w1")
        project.service.diff("exp@v1")

        assert project.store.head() == head and project.tree("w1") == files


def test_a_workspace_cannot_take_a_slot_name(project):
    """Slot names mean slots in diff and save_version, so a workspace may not borrow one."""
    from quipu.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        project.service.create_workspace("w1", "goal", "a reason long enough", actor="t")
    assert err.value.code == "name_is_a_slot"
