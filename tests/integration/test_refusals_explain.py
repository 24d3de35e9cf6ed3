"""Refusals that tell as much as the dry run, and suggest the name that was meant.

A real project (SQLite log, slot directories, blob store) driven through the facade the MCP
tools and the CLI call. Every refusal is checked for its code, its hint and that nothing was
written (the log's head did not move).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from toy_pipeline import PIPELINE, SPEC, write_toy_pipeline

from quipu.app.bootstrap import Quipu, init_project
from quipu.core.errors import QuipuError

REASON = "check what the refusal tells the agent"


@pytest.fixture
def q(tmp_path: Path) -> Iterator[Quipu]:
    """A project with workspace 'wine-mlp' mounted in w1, holding the toy pipeline."""
    quipu = init_project(tmp_path / "p", name="p", goal="compare refusals", slots=2,
                         actor="agent:test")
    quipu.create_workspace("wine-mlp", "classify the wine data set", REASON)
    quipu.mount("wine-mlp", "w1", REASON)
    write_toy_pipeline(quipu.root / "workspaces" / "w1")
    quipu.save_version("w1", "the toy pipeline, as a starting point")
    try:
        yield quipu
    finally:
        quipu.close()


def refused(q: Quipu, call: Callable[[], Any]) -> QuipuError:
    head = q.store.head()
    with pytest.raises(QuipuError) as caught:
        call()
    assert q.store.head() == head, "a refusal wrote to the log"
    assert caught.value.hint
    return caught.value


def save_pipeline(q: Quipu, text: str) -> None:
    (q.root / "workspaces" / "w1" / "pipeline.yaml").write_text(text)
    q.save_version("w1", "a pipeline.yaml with a mistake in it")


def run(q: Quipu, **kwargs: Any) -> dict[str, Any]:
    return q.run("wine-mlp", reason=REASON, results_spec=SPEC, **kwargs)


# --- run() reports what validate_config reports ---------------------------------------------


def test_run_names_the_line_of_bad_yaml_like_validate_config(q: Quipu) -> None:
    save_pipeline(q, "stages:\n  - name: prep\n   outputs: [\n")
    problem = q.validate_config("wine-mlp")["errors"][0]
    assert problem["line"] == 3
    err = refused(q, lambda: run(q))
    assert err.code == "invalid_yaml"
    assert "pipeline.yaml:3" in err.message
    assert problem["hint"] in err.hint


def test_run_keeps_the_did_you_mean_of_a_config_key_typo(q: Quipu) -> None:
    save_pipeline(q, PIPELINE.replace("config_schema", "config_shema"))
    problem = q.validate_config("wine-mlp")["errors"][0]
    err = refused(q, lambda: run(q))
    assert err.code == problem["code"] == "unknown_key"
    assert f"pipeline.yaml:{problem['line']}" in err.message
    assert "did you mean 'config_schema'?" in err.hint


def test_several_problems_are_each_reported_with_their_hint(q: Quipu) -> None:
    save_pipeline(q, PIPELINE.replace("config_schema", "config_shema")
                  .replace("from_stage: prep", "from_stage: prepp"))
    report = q.validate_config("wine-mlp")
    assert len(report["errors"]) >= 2
    err = refused(q, lambda: run(q))
    assert err.code == "pipeline_invalid"
    for problem in report["errors"]:
        assert problem["message"] in err.message
        assert problem["hint"] in err.message


def test_a_misspelt_stage_is_suggested(q: Quipu) -> None:
    err = refused(q, lambda: run(q, stages=["trian"]))
    assert err.code == "unknown_stage"
    assert "did you mean 'train'?" in err.hint
    dry = q.validate_config("wine-mlp", stages=["trian"])
    assert not dry["valid"] and "did you mean 'train'?" in dry["errors"][0]["hint"]


# --- did-you-mean for workspaces, slots, versions and tags -----------------------------------


WORKSPACE_TYPOS: dict[str, Callable[[Quipu], Any]] = {
    "run": lambda q: q.run("wine-mpl", reason=REASON, results_spec=SPEC),
    "validate_config": lambda q: q.validate_config("wine-mpl"),
    "mount": lambda q: q.mount("wine-mpl", "w2", REASON),
    "create_workspace from": lambda q: q.create_workspace("other", "another idea to test",
                                                          REASON, from_workspace="wine-mpl"),
    "inspect_workspace": lambda q: q.inspect_workspace("wine-mpl"),
    "list_history": lambda q: q.list_history("wine-mpl"),
    "manage_versions": lambda q: q.manage_versions("wine-mpl", "list"),
    "log_thought": lambda q: q.log_thought("a thought about it", workspace="wine-mpl"),
    "diff": lambda q: q.diff("wine-mpl@v1", "v1"),
    "delete_workspace": lambda q: q.delete_workspace("wine-mpl", REASON),
}


@pytest.mark.parametrize("name", sorted(WORKSPACE_TYPOS))
def test_a_misspelt_workspace_is_suggested_wherever_one_is_named(q: Quipu, name: str) -> None:
    err = refused(q, lambda: WORKSPACE_TYPOS[name](q))
    assert err.code == "unknown_workspace"
    assert err.hint.startswith("did you mean 'wine-mlp'?")


def test_a_misspelt_slot_is_suggested(q: Quipu) -> None:
    err = refused(q, lambda: q.hibernate("w11", REASON))
    assert err.code == "unknown_slot"
    assert err.hint.startswith("did you mean 'w1'?")


def test_a_misspelt_version_or_tag_is_suggested(q: Quipu) -> None:
    q.manage_versions("wine-mlp", "tag", version="v1", tag="baseline", reason=REASON)
    err = refused(q, lambda: q.rollback("w1", "v11", REASON))
    assert err.code == "unknown_version" and err.hint.startswith("did you mean 'v1'?")
    err = refused(q, lambda: q.rollback("w1", "baselin", REASON))
    assert err.code == "invalid_version" and err.hint.startswith("did you mean 'baseline'?")
    err = refused(q, lambda: q.manage_versions("wine-mlp", "untag", tag="basline",
                                               reason=REASON))
    assert err.code == "unknown_tag" and err.hint.startswith("did you mean 'baseline'?")


def test_rollback_and_fork_accept_a_tag_as_their_descriptions_say(q: Quipu) -> None:
    q.manage_versions("wine-mlp", "tag", version="v1", tag="baseline", reason=REASON)
    (q.root / "workspaces" / "w1" / "notes.txt").write_text("later work")
    q.save_version("w1", "notes on the later work")
    assert q.rollback("w1", "baseline", REASON)["version"] == "v1"
    forked = q.create_workspace("fork", "branch from the baseline", REASON,
                                from_workspace="wine-mlp", from_version="baseline")
    assert forked["forked_from"] == "wine-mlp@v1"


# --- inputs_override paths are checked before launch -----------------------------------------


def test_a_missing_override_path_is_refused_by_the_dry_run_and_validate_config(
        q: Quipu) -> None:
    missing = {"features": str(q.root / "data" / "nope.npy")}
    for call in (lambda: run(q, stages=["train"], inputs_override=missing, dry_run=True),
                 lambda: q.validate_config("wine-mlp", stages=["train"],
                                           inputs_override=missing),
                 lambda: run(q, stages=["train"], inputs_override=missing)):
        err = refused(q, call)
        assert err.code == "input_path_missing"
        assert "nope.npy" in err.message
    present = q.root / "data" / "features.npy"
    present.parent.mkdir()
    present.write_bytes(b"x")
    dry = q.validate_config("wine-mlp", stages=["train"],
                            inputs_override={"features": str(present)})
    assert dry["inputs"]["train"]["features"]["path"] == str(present.resolve())


# --- cancel ---------------------------------------------------------------------------------


def test_canceling_a_canceled_run_is_refused_and_writes_nothing(q: Quipu) -> None:
    started = run(q)
    first = started["queued"][0]["stage_run_id"]
    answer = q.cancel(first, REASON)
    assert answer["state"] == "canceled" and isinstance(answer["position"], int)
    err = refused(q, lambda: q.cancel(first, REASON))
    assert err.code == "run_ended"
    assert "already canceled" in err.message


# --- tag_record tags the version too ---------------------------------------------------------


def test_tag_record_tags_the_run_and_its_version_in_one_transaction(q: Quipu) -> None:
    first = run(q)["queued"][0]["stage_run_id"]
    head = q.store.head()
    answer = q.tag_record(first, "best-acc", REASON)
    assert answer == {"run_id": first, "tag": "best-acc", "version": "v1",
                      "version_tag_moved_from": None}
    assert q.store.head() == head + 2  # RunTagged and VersionTagged
    assert q.inspect_record(first)["tags"] == ["best-acc"]
    listed = q.manage_versions("wine-mlp", "list")["versions"]
    assert [v["tags"] for v in listed if v["version"] == "v1"] == [["best-acc"]]
    # the same tag on a run of a later version moves the version tag with it
    q.cancel(first, REASON)
    (q.root / "workspaces" / "w1" / "notes.txt").write_text("a change")
    second = run(q)["queued"][0]["stage_run_id"]
    moved = q.tag_record(second, "best-acc", REASON)
    assert moved["version"] == "v2" and moved["version_tag_moved_from"] == "v1"
    assert q.diff("wine-mlp@best-acc", "v1")["right"].startswith("wine-mlp@v2")
    again = q.store.head()
    q.tag_record(second, "best-acc", REASON)  # nothing new to record
    assert q.store.head() == again


def test_a_tag_that_looks_like_a_version_is_refused_by_tag_record(q: Quipu) -> None:
    first = run(q)["queued"][0]["stage_run_id"]
    err = refused(q, lambda: q.tag_record(first, "v7", REASON))
    assert err.code == "tag_is_version"
