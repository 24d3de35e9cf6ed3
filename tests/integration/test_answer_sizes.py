"""Answers that fit a context window: ``status()`` and ``dashboard()`` measured (characters of
their JSON) on a project of 50 workspaces and over 200 runs, driven through the facade with the
commands a real executor calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from big_project import WORKSPACES, build

from quipu.app.bootstrap import Quipu


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Quipu]:
    q = build(tmp_path_factory.mktemp("sizes") / "big")
    yield q
    q.close()


def size(answer: dict[str, Any]) -> int:
    """Characters of the answer's JSON, as an MCP client receives it."""
    return len(json.dumps(answer))


def test_the_project_is_as_large_as_the_issue_measured(big: Quipu) -> None:
    assert big.status()["workspace_count"] == WORKSPACES
    assert big.dashboard(section="started", limit=1)["total"] >= 200


def test_status_stays_under_8000_characters_and_keeps_what_a_cold_agent_needs(big: Quipu):
    answer = big.status()

    assert size(answer) < 8000
    text = answer["state_md"]
    pending = text.split("## Awaiting finalization\n")[1].split("\n\n")[0]
    assert "`finalize_run(\"prun-" in pending  # a pending verdict with its exact call
    assert "…and " in pending and "list_unfinalized_runs(workspace)" in pending
    best = text.split("## Best results\n")[1].split("\n\n")[0]
    assert best.startswith("- project best val_acc (maximize): ")
    assert "more: dashboard(section='best', offset=10)" in best
    thoughts = text.split("## Recent thoughts\n")[1].split("\n\n")[0]
    assert "dataset 49: the wider layer helps a little; next try" in thoughts
    assert "recent_actions" not in answer  # STATE.md lists them; the JSON does not repeat them


def test_the_dashboard_is_bounded_by_default_and_pages_the_rest(big: Quipu) -> None:
    board = big.dashboard()

    assert size(board) <= 6000
    assert board["pending_finalization"]["count"] >= 30
    assert board["best_total"] == WORKSPACES
    assert board["best_by_metric"]["val_acc"]["workspaces"] == WORKSPACES
    shown = list(board["best_by_workspace"])
    assert board["more"]["best"] == f"dashboard(section='best', offset={len(shown)})"

    # paging the bests visits every workspace once, best value first
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = big.dashboard(section="best", offset=offset, limit=20)
        assert page["total"] == WORKSPACES
        rows += page["rows"]
        offset = page["next_offset"]
    assert [r["workspace"] for r in rows][:len(shown)] == shown
    assert len({r["workspace"] for r in rows}) == WORKSPACES
    values = [r["value"] for r in rows]
    assert values == sorted(values, reverse=True)
    started = big.dashboard(section="started", offset=20, limit=20)
    assert started["total"] == board["new_since_last_look"]["started"]["count"]
    assert len(started["rows"]) == 20 and started["next_offset"] == 40


def test_a_bad_section_or_page_is_refused(big: Quipu) -> None:
    from quipu.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as err:
        big.dashboard(section="bests")
    assert err.value.code == "invalid_section"
    with pytest.raises(InvalidInput) as err:
        big.dashboard(section="best", limit=0)
    assert err.value.code == "invalid_page"
