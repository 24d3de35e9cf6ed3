"""The views, folded from a memory log that the real command service writes.

Grouped per view. Each test arranges through the commands an agent would call, catches the views
up, and checks what the queries answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quipu.core.chain import GENESIS, link_state
from quipu.core.errors import Conflict, InvalidInput
from quipu.core.log import stream_id
from quipu.core.messages import Event, register
from quipu.core.ports import NewEvent
from quipu.core.project.events import ThoughtLogged
from quipu.projections import Views, position_at, replay_views
from quipu.projections._base import fast_decode

ACTOR = "agent-1"
REASON = "exercise the service in a unit test"  # the reason the conftest helpers give


@register("ProjectionTestNoise")
class Noise(Event):
    """An event type no projection handles (a later issue's event, as far as they know)."""

    payload: str


def dump(views: Views) -> dict[str, list[tuple[Any, ...]]]:
    """Every view table, row for row, in a stable order."""
    conn = views.conn
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


def workspace(views: Views, name: str) -> dict[str, Any]:
    """The workspace's row, which must exist."""
    row = views.workspace(name)
    assert row is not None, f"no workspace {name!r} in the view"
    return row


@pytest.fixture
def views(project, tmp_path: Path) -> Iterator[Views]:
    project.service.init_project("demo", "find a better model", actor=ACTOR)
    v = Views(tmp_path / "views.db", project.store)
    yield v
    v.close()


def fresh(views: Views) -> Views:
    views.catch_up()
    return views


# --- project -----------------------------------------------------------------------------------


def test_project_view_shows_name_and_goal(views):
    assert fresh(views).project() == {"name": "demo", "goal": "find a better model"}


def test_an_empty_log_has_no_project_and_position_zero(project, tmp_path):
    with Views(tmp_path / "empty.db", project.store) as v:
        assert v.catch_up() == 0
        assert v.project() == {"name": None, "goal": None}
        assert v.workspaces() == [] and v.position() == 0


# --- workspaces --------------------------------------------------------------------------------


class TestWorkspaces:
    def test_a_new_workspace_shows_its_goal_author_and_no_versions(self, project, views):
        project.create("baseline")

        ws = workspace(fresh(views), "baseline")

        assert ws == {
            "name": "baseline", "goal": "goal of baseline", "created_at": ws["created_at"],
            "created_by": ACTOR, "forked_from": None, "from_version": None, "slot": None,
            "current_version": None, "manifest": None, "latest_version": None,
            "version_count": 0, "tags": {}, "deleted": False,
        }
        assert datetime.fromisoformat(ws["created_at"]) == datetime(2024, 5, 1, 12, tzinfo=UTC)
        assert views.workspace("nope") is None

    def test_a_fork_records_its_source_and_starts_at_the_forked_manifest(self, project, views):
        project.create("base")
        project.mount("base")
        project.write("w1", "train.py", "print('hi')")
        project.save()

        project.create("child", from_workspace="base")
        fresh(views)

        child, base = workspace(views, "child"), workspace(views, "base")
        assert child["forked_from"] == "base" and child["from_version"] == "v1"
        assert child["current_version"] == "v1" and child["manifest"] == base["manifest"]
        assert views.versions("child")[0][0]["trigger"] == "fork"

    def test_mount_save_and_hibernate_move_the_slot_and_the_current_version(self, project,
                                                                             views):
        project.create("baseline")
        project.mount("baseline", "w2")
        assert workspace(fresh(views), "baseline")["slot"] == "w2"

        project.write("w2", "a.txt", "one")
        project.save("w2")
        project.write("w2", "a.txt", "two")
        project.hibernate("w2")

        ws = workspace(fresh(views), "baseline")
        assert ws["slot"] is None
        assert ws["current_version"] == "v2" and ws["latest_version"] == "v2"
        assert ws["version_count"] == 2
        assert views.versions("baseline")[0][0]["trigger"] == "hibernate"

    def test_rollback_moves_the_current_version_and_its_manifest(self, project, views):
        project.create("baseline")
        project.mount("baseline")
        project.write("w1", "a.txt", "one")
        project.save()
        project.write("w1", "a.txt", "two")
        project.save()

        project.service.rollback("w1", "v1", REASON, actor=ACTOR)

        ws = workspace(fresh(views), "baseline")
        v1 = views.versions("baseline")[0][-1]
        assert ws["current_version"] == "v1" and ws["manifest"] == v1["manifest"]
        assert ws["latest_version"] == "v2"

    def test_deleted_workspaces_are_left_out_of_the_listing_and_the_count(self, project, views):
        project.create("keep")
        project.create("gone")
        project.service.delete_workspace("gone", REASON, actor=ACTOR)

        fresh(views)

        assert [w["name"] for w in views.workspaces()] == ["keep"]
        assert [(w["name"], w["deleted"]) for w in views.workspaces(include_deleted=True)] == [
            ("gone", True), ("keep", False)]
        assert views.workspace_count() == 1
        assert workspace(views, "gone")["deleted"] is True

    def test_a_recreated_workspace_shows_only_its_new_incarnation(self, project, views):
        project.create("again")
        project.mount("again")
        project.write("w1", "a.txt", "old life")
        project.save()
        project.service.tag_version("again", "v1", "best", REASON, actor=ACTOR)
        project.hibernate()
        project.service.delete_workspace("again", REASON, actor=ACTOR)

        project.service.create_workspace("again", "a second life", REASON, actor=ACTOR)
        project.mount("again")
        project.write("w1", "b.txt", "new life")
        project.save()
        fresh(views)

        ws = workspace(views, "again")
        assert ws["goal"] == "a second life" and not ws["deleted"]
        assert ws["tags"] == {} and ws["version_count"] == 1
        listed, total = views.versions("again", include_pruned=True)
        assert [v["version"] for v in listed] == ["v2"] and total == 1
        assert ws["current_version"] == ws["latest_version"] == "v2"


# --- versions ----------------------------------------------------------------------------------


class TestVersions:
    @pytest.fixture
    def five(self, project, views):
        project.create("ws")
        project.mount("ws")
        for i in range(1, 6):
            project.write("w1", "f.txt", f"content {i}")
            project.save(message=f"save number {i} of five")
        return project

    def test_versions_are_newest_first_with_tags_and_paging(self, five, views):
        five.service.tag_version("ws", "v2", "best", REASON, actor=ACTOR)
        five.service.tag_version("ws", "v2", "alpha", REASON, actor=ACTOR)

        page, total = fresh(views).versions("ws", limit=2, offset=2)

        assert total == 5
        assert [v["version"] for v in page] == ["v3", "v2"]
        assert page[1]["tags"] == ["alpha", "best"]
        assert page[0] == {
            "version": "v3", "number": 3, "message": "save number 3 of five",
            "created_at": page[0]["created_at"], "actor": ACTOR, "parent": "v2",
            "file_count": 1, "total_bytes": 9, "pruned": False, "tags": [],
            "trigger": "save", "manifest": page[0]["manifest"]}
        assert workspace(views, "ws")["tags"] == {"alpha": "v2", "best": "v2"}

    def test_untag_removes_the_tag_everywhere(self, five, views):
        five.service.tag_version("ws", "v2", "best", REASON, actor=ACTOR)
        five.service.untag_version("ws", "best", REASON, actor=ACTOR)

        assert workspace(fresh(views), "ws")["tags"] == {}
        assert all(v["tags"] == [] for v in views.versions("ws")[0])

    def test_pruned_versions_are_hidden_unless_asked_and_latest_skips_them(self, five, views):
        five.service.rollback("w1", "v2", REASON, actor=ACTOR)
        five.service.prune_versions("ws", REASON, actor=ACTOR, from_version=3, to_version=5)

        fresh(views)
        shown, total = views.versions("ws")
        everything, all_total = views.versions("ws", include_pruned=True)

        assert [v["version"] for v in shown] == ["v2", "v1"] and total == 2
        assert all_total == 5 and [v["pruned"] for v in everything] == [True] * 3 + [False] * 2
        ws = workspace(views, "ws")
        assert ws["latest_version"] == "v2" and ws["version_count"] == 2

    def test_unprune_brings_a_version_back(self, five, views):
        five.service.rollback("w1", "v1", REASON, actor=ACTOR)
        five.service.prune_versions("ws", REASON, actor=ACTOR, version="v5")
        five.service.prune_versions("ws", REASON, actor=ACTOR, version="v5", unprune=True)

        ws = workspace(fresh(views), "ws")
        assert ws["latest_version"] == "v5" and ws["version_count"] == 5


# --- slots -------------------------------------------------------------------------------------


def test_slots_lists_every_configured_slot_in_the_given_order(project, views):
    project.create("a")
    project.mount("a", "w3")
    project.write("w3", "x.txt", "x")
    project.save("w3")

    rows = fresh(views).slots(["w1", "w2", "w3"])

    manifest = workspace(views, "a")["manifest"]
    assert rows == [
        {"slot": "w1", "workspace": None, "current_version": None, "manifest": None},
        {"slot": "w2", "workspace": None, "current_version": None, "manifest": None},
        {"slot": "w3", "workspace": "a", "current_version": "v1", "manifest": manifest},
    ]
    project.hibernate("w3")
    assert fresh(views).slots(["w3"])[0]["workspace"] is None


# --- thoughts and audit ------------------------------------------------------------------------


def test_thoughts_are_newest_first_and_filter_by_workspace(project, views):
    project.create("a")
    project.service.log_thought("general idea", actor=ACTOR)
    project.service.log_thought("about a", actor=ACTOR, workspace="a", run_id="stage-1")
    project.service.log_thought("about a again", actor=ACTOR, workspace="a")

    fresh(views)

    assert [t["thought"] for t in views.thoughts()] == [
        "about a again", "about a", "general idea"]
    about_a = views.thoughts(workspace="a", limit=1, offset=1)
    assert [(t["thought"], t["run_id"], t["actor"]) for t in about_a] == [
        ("about a", "stage-1", ACTOR)]
    assert set(about_a[0]) == {"thought", "workspace", "run_id", "at", "actor", "position"}


def test_audit_log_says_who_did_what_and_why_newest_first(project, views):
    project.create("a")
    project.mount("a")
    project.write("w1", "x.txt", "x")
    project.save(message="first working version")
    project.service.log_thought("thoughts are not actions", actor=ACTOR)

    entries = fresh(views).audit_log(limit=3)

    assert [(e["type"], e["summary"], e["reason"], e["slot"]) for e in entries] == [
        ("VersionSaved", "saved a v1: 1 file, 1 byte", "first working version", None),
        ("WorkspaceMounted", "mounted a in w1 (no versions yet)", REASON, "w1"),
        ("WorkspaceCreated", "created workspace a", REASON, None),
    ]
    assert entries[0]["actor"] == ACTOR and entries[0]["workspace"] == "a"
    assert entries[0]["position"] > entries[1]["position"]
    assert [e["type"] for e in views.audit_log(workspace="a", limit=10)] == [
        "VersionSaved", "WorkspaceMounted", "WorkspaceCreated"]


def test_refused_commands_leave_no_trace_in_the_views(project, views):
    project.create("a")
    before = dump(fresh(views))

    with pytest.raises(Conflict):
        project.create("a")
    with pytest.raises(Conflict):
        project.service.save_version("w1", "nothing is mounted here", actor=ACTOR)

    assert dump(fresh(views)) == before


# --- the runner --------------------------------------------------------------------------------


class TestPositions:
    def test_unknown_event_types_still_advance_every_position(self, project, views):
        fresh(views)
        project.store.append([NewEvent(uuid.uuid4(), 1, Noise(
            actor=ACTOR, reason=REASON, at=datetime(2024, 6, 1, tzinfo=UTC), payload="x"))])
        head = project.store.head()

        assert views.catch_up() == head
        stored = dict(views.conn.execute("SELECT name, position FROM _positions").fetchall())
        assert stored == {name: head for name in views.names()}
        assert views.position() == head

    def test_catching_up_in_small_pages_equals_one_big_page(self, project, views, tmp_path):
        project.create("a")
        project.mount("a")
        for i in range(4):
            project.write("w1", "f.txt", f"v{i}")
            project.save()
            project.service.log_thought(f"thought {i}", actor=ACTOR, workspace="a")
        project.service.tag_version("a", 2, "t", REASON, actor=ACTOR)
        project.service.prune_versions("a", REASON, actor=ACTOR, version=1)
        project.hibernate()
        project.service.delete_workspace("a", REASON, actor=ACTOR)
        project.create("a")

        with Views(tmp_path / "small.db", project.store, page_size=2) as small:
            small.catch_up()
            assert dump(small) == dump(fresh(views))

    def test_until_caps_the_position_read(self, project, tmp_path):
        project.service.init_project("demo", "goal of the demo", actor=ACTOR)
        project.create("early")
        cap = project.store.head()
        project.create("late")

        with Views(tmp_path / "capped.db", project.store, until=cap) as capped:
            assert capped.catch_up() == cap
            assert [w["name"] for w in capped.workspaces()] == ["early"]

    def test_views_reopened_resume_from_their_stored_position(self, project, views, tmp_path):
        project.create("a")
        fresh(views)
        views.close()
        project.create("b")

        with Views(tmp_path / "views.db", project.store) as again:
            assert again.position() == project.store.head() - 1
            again.catch_up()
            assert [w["name"] for w in again.workspaces()] == ["a", "b"]


class TestRebuild:
    def test_rebuild_of_one_view_refolds_it_and_leaves_the_others(self, project, views):
        project.create("a")
        project.service.log_thought("keep thinking", actor=ACTOR)
        before = dump(fresh(views))
        views.conn.execute("INSERT INTO audit (position, summary) VALUES (999, 'marker')")

        result = views.rebuild(["thoughts"])

        assert result["views"] == ["thoughts"] and result["events"] == 1
        assert result["position"] == project.store.head()
        assert set(result) >= {"events", "seconds", "events_per_second"}
        after = dump(views)
        assert after["thoughts"] == before["thoughts"]
        assert (999, None, None, None, None, None, "marker", None) in after["audit"]

    def test_a_full_rebuild_equals_the_incremental_views(self, project, views):
        project.create("a")
        fresh(views)
        project.create("b", from_workspace=None)
        project.service.log_thought("one more", actor=ACTOR, workspace="b")
        incremental = dump(fresh(views))

        result = views.rebuild()

        assert dump(views) == incremental
        assert result["views"] == views.names()

    def test_rebuild_reports_progress_after_every_page(self, project, tmp_path):
        project.service.init_project("demo", "goal of the demo", actor=ACTOR)
        for i in range(5):
            project.service.log_thought(f"thought {i}", actor=ACTOR)
        calls: list[tuple[int, int]] = []

        with Views(tmp_path / "v.db", project.store, page_size=2) as v:
            v.rebuild(progress=lambda done, target: calls.append((done, target)))

        assert calls[-1] == (6, 6)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert len(calls) >= 3

    def test_rebuild_refuses_an_unknown_view_name(self, views):
        with pytest.raises(InvalidInput) as err:
            views.rebuild(["nonsense"])
        assert err.value.code == "unknown_view"


# --- decoding ----------------------------------------------------------------------------------


def test_events_stored_at_an_old_schema_version_are_upcast_before_folding():
    data = (b'{"actor":"agent-1","reason":"old","at":"2023-01-02T03:04:05Z",'
            b'"text":"an old thought","workspace":null}')
    state, _ = link_state(GENESIS, stream_id("x", "y").hex, 1, "ThoughtLogged", 1, data,
                          position=7)

    folded = fast_decode(7, "ThoughtLogged", state)

    assert isinstance(folded.event, ThoughtLogged)
    assert folded.event.thought == "an old thought" and folded.position == 7
    assert folded.at == "2023-01-02T03:04:05Z"


def test_the_fast_decode_reads_the_same_event_as_the_log_decoder(project):
    from quipu.core.log import decode

    project.service.init_project("demo", "goal of the demo", actor=ACTOR)
    project.create("a")
    project.service.log_thought('quotes "at":"nope" inside', actor=ACTOR, workspace="a")
    for record in project.store.read(limit=100):
        folded = fast_decode(record.position, record.type, record.state)
        assert folded.event == decode(record).event
        assert datetime.fromisoformat(folded.at) == folded.event.at


# --- replay ------------------------------------------------------------------------------------


class StepClock:
    """The Clock port, one minute later at every call."""

    def __init__(self) -> None:
        self.at = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(minutes=1)
        return self.at


def test_position_at_finds_the_head_as_it_stood_at_a_time(project):
    project.service.uow.clock = StepClock()
    project.service.init_project("demo", "goal of the demo", actor=ACTOR)  # 09:01, position 1
    project.create("a")  # 09:02
    project.create("b")  # 09:03

    def at(minute: int, second: int = 0) -> datetime:
        return datetime(2025, 1, 1, 9, minute, second, tzinfo=UTC)

    assert position_at(project.store, at(0)) == 0
    assert position_at(project.store, at(1)) == 1
    assert position_at(project.store, at(2, 30)) == 2
    assert position_at(project.store, at(59)) == 3
    assert position_at(project.store, at(2, 30).replace(tzinfo=None)) == 2


def test_replay_views_shows_the_views_as_they_were(project, views, tmp_path):
    project.create("a")
    then = project.store.head()
    seen_then = fresh(views).workspaces()
    project.service.delete_workspace("a", REASON, actor=ACTOR)
    project.create("b")

    replayed = replay_views(project.store, then, tmp_path)
    try:
        assert replayed.workspaces() == seen_then
        assert replayed.position() == then
        assert replayed.path.parent.parent == tmp_path
    finally:
        replayed.close()
    assert [w["name"] for w in fresh(views).workspaces()] == ["b"]


def test_views_queries_never_write(project, views):
    project.create("a")
    fresh(views)
    changes = views.conn.total_changes
    views.workspaces()
    views.versions("a")
    views.state_md(lambda slot, manifest: False)
    views.audit_log()
    assert views.conn.total_changes == changes


def test_refolding_one_view_while_others_lag_never_moves_the_others_back(project, tmp_path):
    """A view reset to 0 (here: its version changed) folds from the start; the others resume
    where they were, not at the end of its first page."""
    project.service.init_project("demo", "goal of the demo", actor=ACTOR)
    project.create("a")
    project.mount("a")
    for i in range(3):
        project.write("w1", "f.txt", f"v{i}")
        project.save()
    path = tmp_path / "v.db"
    with Views(path, project.store) as v:
        v.catch_up()
        v.conn.execute("UPDATE _positions SET version = 0 WHERE name = 'thoughts'")
    project.write("w1", "f.txt", "later")
    project.save()  # the other views now lag by one event

    with Views(path, project.store, page_size=2) as v, \
            Views(tmp_path / "reference.db", project.store) as reference:
        v.catch_up()
        reference.catch_up()
        assert dump(v) == dump(reference)
