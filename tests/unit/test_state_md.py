"""STATE.md: a pure rendering of view rows, for an agent that has forgotten everything."""

from __future__ import annotations

from typing import Any

from quipu.projections import Views
from quipu.projections.state_md import MAX_WORKSPACES, StateInput, render

ACTOR = "agent-1"
REASON = "exercise the service in a unit test"


def version(n: int, message: str, tags: list[str] | None = None) -> dict[str, Any]:
    return {"version": f"v{n}", "number": n, "message": message, "tags": tags or [],
            "created_at": f"2025-01-0{n}T09:3{n}:00Z"}


def state(**overrides: Any) -> StateInput:
    base: dict[str, Any] = {
        "project": {"name": "demo", "goal": "beat the baseline"},
        "slots": [
            {"slot": "w1", "workspace": "cnn", "current_version": "v2", "dirty": True},
            {"slot": "w2", "workspace": None, "current_version": None, "dirty": None},
        ],
        "workspaces": [{
            "name": "cnn", "goal": "a small CNN", "slot": "w1", "forked_from": "base",
            "from_version": "v4", "current_version": "v2", "version_count": 2,
            "tags": {"best": "v1"},
            "latest": [version(2, "wider layers"), version(1, "first try", ["best"])],
        }],
        "workspace_total": 1,
        "thoughts": [{"at": "2025-01-02T10:00:00+00:00", "actor": ACTOR, "workspace": "cnn",
                      "thought": "wider helps\nbut slower"}],
        "actions": [{"at": "2025-01-02T09:32:59Z", "actor": ACTOR,
                     "summary": "saved cnn v2: 1 file, 10 bytes", "reason": "wider layers"}],
    }
    base.update(overrides)
    return StateInput(**base)


def test_state_md_names_the_project_goal_slots_workspaces_thoughts_and_actions():
    text = render(state())

    assert text.startswith("# demo\n\n**Goal:** beat the baseline\n")
    assert "- w1: cnn — DIRTY (unsaved edits), at v2" in text
    assert "- w2: (free)" in text
    assert "### cnn (mounted in w1)" in text
    assert "- forked from: base@v4" in text
    assert "  - v1 [best] [2025-01-01 09:31] first try" in text
    assert "- tags: best=v1" in text
    assert "- [2025-01-02 10:00] agent-1 (cnn): wider helps but slower" in text
    assert "- [2025-01-02 09:32] agent-1: saved cnn v2: 1 file, 10 bytes — wider layers" in text
    assert "quipu status" in text and "inspect_workspace" in text
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## Slots", "## Workspaces", "## Recent thoughts", "## Recent actions"]


def test_the_same_rows_render_the_same_bytes():
    assert render(state()).encode() == render(state()).encode()


def test_a_clean_slot_and_a_workspace_without_versions_say_so():
    slots = [{"slot": "w1", "workspace": "cnn", "current_version": None, "dirty": False}]
    text = render(state(slots=slots))
    assert "- w1: cnn — CLEAN, at no versions yet" in text


def test_long_or_multiline_text_is_cut_to_one_line():
    thoughts = [{"at": "2025-01-02T10:00:00Z", "actor": ACTOR, "workspace": None,
                 "thought": "x" * 500 + "\nmore"}]
    line = next(x for x in render(state(thoughts=thoughts)).splitlines() if "xxx" in x)
    assert line.endswith("…") and len(line) < 220


def test_workspaces_beyond_those_shown_are_counted():
    text = render(state(workspace_total=MAX_WORKSPACES + 5))
    assert f"and {MAX_WORKSPACES + 4} more workspaces" in text


def test_an_empty_project_renders_placeholders():
    text = render(StateInput(project={"name": None, "goal": None}, slots=[], workspaces=[],
                             workspace_total=0))
    assert text.startswith("# (uninitialised project)")
    assert "No workspaces yet" in text and text.count("- (none)") == 2


def test_views_ask_about_dirt_only_for_occupied_slots_and_pass_their_manifest(project, tmp_path):
    project.service.init_project("demo", "beat the baseline", actor=ACTOR)
    project.create("cnn")
    project.mount("cnn", "w2")
    project.write("w2", "model.py", "layers = 3")
    project.save("w2")
    asked: list[tuple[str, str | None]] = []

    with Views(tmp_path / "views.db", project.store) as views:
        views.catch_up()
        cnn = views.workspace("cnn")
        assert cnn is not None
        manifest = cnn["manifest"]

        def changed(slot: str, m: str | None) -> bool:
            asked.append((slot, m))
            return True

        text = views.state_md(changed, slot_names=["w1", "w2", "w3"])

    assert asked == [("w2", manifest)]
    assert "- w1: (free)" in text and "- w2: cnn — DIRTY (unsaved edits), at v1" in text


def test_without_slot_names_state_md_lists_the_slots_ever_used(project, tmp_path):
    project.service.init_project("demo", "beat the baseline", actor=ACTOR)
    project.create("a")
    project.mount("a", "w3")
    project.hibernate("w3")

    with Views(tmp_path / "views.db", project.store) as views:
        views.catch_up()
        text = views.state_md(lambda slot, m: False)

    assert "## Slots\n- w3: (free)\n" in text
