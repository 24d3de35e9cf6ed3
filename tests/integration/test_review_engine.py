"""The pre-run review with a real engine: a real project (SQLite log, local blobs) whose
``quipu.yaml`` turns the review on, the review adapter and the local executor started with
the engine, real stage processes, real reviewer programs and a local LLM-shaped HTTP server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from llm_server import LlmServer, llm_server, openai_reply
from toy_pipeline import SPEC, write_toy_pipeline
from waiting import wait_until

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.log import decode
from quipu.core.runs.events import RunQueued

pytestmark = pytest.mark.timeout(300)
WHY = "exercise the pre-run review end to end"
KEY = "sk-integration-secret-7f3a9c"


def engine(tmp_path: Path, svs: dict[str, Any]) -> Quipu:
    root = tmp_path / "proj"
    init_project(root, name="proj", goal="review runs before they run").close()
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["svs"] = svs
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    q = open_project(root, actor="agent:test")
    q.create_workspace("toy", "a toy pipeline", WHY)
    write_toy_pipeline(Path(q.mount("toy", "w1", WHY)["path"]))
    q.start_workers()
    return q


@pytest.fixture
def made() -> Iterator[list[Quipu]]:
    opened: list[Quipu] = []
    yield opened
    for q in opened:
        q.close()


def types_of(q: Quipu, run_id: str) -> list[str]:
    return [e["type"] for e in q.inspect_run(run_id, include=["events"])["events"]]


def start(q: Quipu, **kwargs: Any) -> dict[str, Any]:
    return q.run("w1", reason=WHY, results_spec=SPEC, wait=True, wait_timeout=120, **kwargs)


def program(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "reviewer.py"
    script.write_text(body)
    return [sys.executable, str(script)]


def test_the_static_review_approves_and_the_runs_then_run(tmp_path: Path, made) -> None:
    q = engine(tmp_path, {"reviewer": "static"})
    made.append(q)
    result = start(q)
    assert [s["state"] for s in result["stage_runs"]] == ["succeeded", "succeeded"]
    train = result["queued"][1]["stage_run_id"]
    events = types_of(q, train)
    assert events.index("ReviewStarted") < events.index("ReviewCompleted") \
        < events.index("RunClaimed")
    assert "RunQueued" not in events  # the review's decision queued it
    assert q.inspect_run(train)["review"]["decision"] == "approve"


def test_an_undefined_name_blocks_the_run_with_its_fix_shown_everywhere(tmp_path, made):
    q = engine(tmp_path, {"reviewer": "static"})
    made.append(q)
    slot = q.slots.path("w1")
    (slot / "modules" / "prep.py").write_text(
        (slot / "modules" / "prep.py").read_text().replace(
            'sdk.runtime_log("making features")', "sdk.runtime_log(undefined_message)"))
    result = start(q)
    prep, train = (s["stage_run_id"] for s in result["queued"])
    states = {s["stage_run_id"]: s for s in result["stage_runs"]}
    assert states[prep]["state"] == "blocked" and states[train]["state"] == "canceled"
    blocked = states[prep]["review"]
    assert blocked["decision"] == "block" and "undefined_message" in blocked["fix"]
    [finding] = blocked["findings"]
    assert (finding["signal"], finding["file"], finding["line"]) == (
        "undefined_name", "modules/prep.py", 6)
    shown = q.inspect_run(prep)
    assert shown["state"] == "blocked" and shown["review"] == blocked
    assert "RunClaimed" not in types_of(q, prep)  # it never ran
    state_md = (q.root / "STATE.md").read_text()
    assert "## Blocked by the pre-run review" in state_md and prep in state_md
    # a blocked run holds no gate: the agent can fix the code and run again
    (slot / "modules" / "prep.py").write_text(
        (slot / "modules" / "prep.py").read_text().replace("undefined_message", "'ok'"))
    again = start(q)
    assert [s["state"] for s in again["stage_runs"]] == ["succeeded", "succeeded"]


def test_skip_review_bypasses_the_review_and_is_recorded(tmp_path: Path, made) -> None:
    q = engine(tmp_path, {"reviewer": "static"})
    made.append(q)
    result = start(q, skip_review=True)
    prep = result["queued"][0]["stage_run_id"]
    assert "ReviewStarted" not in types_of(q, prep)
    queued = [decode(r).event for r in q.store.read(limit=10_000, types=["RunQueued"])]
    assert {e.review for e in queued
            if isinstance(e, RunQueued) and e.run_id == prep} == {"skipped"}


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_hanging_command_reviewer_is_killed_by_its_timeout_and_the_run_is_not_lost(
        tmp_path: Path, made, fail_open: bool) -> None:
    pid_file = tmp_path / "reviewer.pids"
    argv = program(tmp_path, "import os, time\n"
                   f"open({str(pid_file)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
                   "time.sleep(600)\n")
    q = engine(tmp_path, {"reviewer": "command", "command": argv, "timeout": 2,
                          "fail_open": fail_open})
    made.append(q)
    result = start(q)
    prep = result["queued"][0]["stage_run_id"]
    review = q.inspect_run(prep)["review"]
    assert review["findings"][0]["signal"] == "reviewer_failed"
    assert "did not answer" in review["findings"][0]["message"]
    if fail_open:
        assert review["decision"] == "warn"
        assert [s["state"] for s in result["stage_runs"]] == ["succeeded", "succeeded"]
    else:
        assert review["decision"] == "block"
        # train is reviewed beside prep: blocked on its own, or canceled by prep's block
        first, second = (s["state"] for s in result["stage_runs"])
        assert first == "blocked" and second in ("blocked", "canceled")
    # A stage canceled with its blocked upstream may still be in review: its reviewer too
    # ends at its own timeout.
    pids = [int(p) for p in pid_file.read_text().split()]
    wait_until(lambda: not any(map(_alive, pids)), what="every hanging reviewer is killed",
               timeout=30)


def test_a_crashing_or_garbage_command_reviewer_never_blocks_when_failing_open(
        tmp_path: Path, made) -> None:
    argv = program(tmp_path, "import sys\nprint('all good, ship it')\n")
    q = engine(tmp_path, {"reviewer": "command", "command": argv, "timeout": 30})
    made.append(q)
    result = start(q)
    assert [s["state"] for s in result["stage_runs"]] == ["succeeded", "succeeded"]
    review = q.inspect_run(result["queued"][0]["stage_run_id"])["review"]
    assert review["decision"] == "warn" and "not JSON" in review["findings"][0]["message"]


def test_an_llm_block_is_recorded_and_the_key_is_nowhere_on_disk(tmp_path: Path, made,
                                                                  monkeypatch) -> None:
    with llm_server() as server:
        block = ('{"decision": "block", "fix": "use the validation split", "findings": '
                 '[{"severity": "error", "file": "modules/train.py", "line": 5, '
                 '"message": "trains on the evaluation data"}]}')
        server.answer(*[openai_reply(block)] * 2)
        monkeypatch.setenv("QUIPU_LLM_API_KEY", KEY)
        q = engine(tmp_path, {"reviewer": "llm", "llm_endpoint": f"{server.url}/v1",
                              "llm_model": "m-1", "timeout": 30})
        made.append(q)
        result = start(q)
        _check_llm(q, server, result)


def _check_llm(q: Quipu, server: LlmServer, result: dict[str, Any]) -> None:
    prep = result["queued"][0]["stage_run_id"]
    first, second = (s["state"] for s in result["stage_runs"])
    assert first == "blocked" and second in ("blocked", "canceled")
    review = q.inspect_run(prep)["review"]
    assert review["reviewers"] == ["static", "llm"] and review["decision"] == "block"
    assert review["findings"][0]["message"] == "trains on the evaluation data"
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"
    q.refresh()
    for path in (q.root / ".quipu").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in (q.root / "STATE.md").read_text()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("svs", [{"reviewer": "command"}, {"reviewer": "lmm"},
                                 {"reviewer": "static", "timeout": 0},
                                 {"reviewer": "static", "fail_closed": True}])
def test_a_bad_svs_section_is_refused_by_name(tmp_path: Path, svs: dict[str, Any]) -> None:
    from quipu.core.errors import InvalidInput

    root = tmp_path / "proj"
    init_project(root, name="proj", goal="refuse a bad review config").close()
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["svs"] = svs
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(InvalidInput) as err:
        open_project(root)
    assert err.value.code == "invalid_config" and "svs" in err.value.message


def test_the_llm_key_from_quipu_yaml_is_never_shown(tmp_path: Path) -> None:
    from quipu.app.bootstrap import build_reviewers
    from quipu.app.config import SvsConfig

    svs = SvsConfig.model_validate({"reviewer": "llm", "llm_endpoint": "http://x/v1",
                                    "llm_model": "m", "llm_api_key": KEY})
    assert KEY not in repr(svs) and KEY not in str(svs.model_dump())
    assert KEY not in repr(build_reviewers(svs))


def _reviews(requests: list[Any]) -> list[dict[str, Any]]:
    """The pre-run review contexts the model was sent (the user message of each request that
    shows files; the post-run review's requests show none)."""
    out = []
    for seen in requests:
        if isinstance(seen.body, dict) and "messages" in seen.body:
            context = json.loads(seen.body["messages"][-1]["content"])
            if "files" in context:
                out.append(context)
    return out


def test_an_approved_pattern_reaches_the_llm_review_of_its_stage(tmp_path: Path, made) -> None:
    """The whole loop through bootstrap's wiring: the model blocks a run, the pattern follower
    proposes its finding as a candidate, the agent approves it, and the next review of that
    stage sends it to the model; the other stage's review does not."""
    block = ('{"decision": "block", "fix": "use the validation split", "findings": '
             '[{"severity": "error", "file": "modules/prep.py", "line": 1, '
             '"message": "trains on the evaluation data"}]}')
    approve = '{"decision": "approve", "findings": []}'
    with llm_server() as server:
        server.answer(*[openai_reply(block)] * 2)
        q = engine(tmp_path, {"reviewer": "llm", "llm_endpoint": f"{server.url}/v1",
                              "llm_model": "m-1", "timeout": 30})
        made.append(q)
        first = start(q)
        assert first["stage_runs"][0]["state"] == "blocked"

        def candidate() -> dict[str, Any] | None:
            q.views.catch_up()
            return next((p for p in q.manage_patterns("list", stage="prep")["patterns"]
                         if "evaluation data" in p["symptom"]), None)

        wait_until(lambda: candidate() is not None, what="the blocked run's candidate",
                   timeout=60)
        found = candidate()
        assert found is not None and found["status"] == "candidate"
        q.manage_patterns("approve", pattern_id=found["pattern_id"],
                          reason="the model caught it; keep telling it",
                          root_cause="the eval split is read as training data",
                          prevention="read the train split in prep")
        asked = len(server.seen)
        server.answer(*[openai_reply(approve)] * 2)
        second = start(q)
        assert [s["state"] for s in second["stage_runs"]] == ["succeeded", "succeeded"]
        sent = {c["stage"]: c for c in _reviews(server.seen[asked:])}
        assert set(sent) == {"prep", "train"}
        [pattern] = sent["prep"]["patterns"]
        assert pattern["pattern_id"] == found["pattern_id"]
        assert pattern["root_cause"] == "the eval split is read as training data"
        assert pattern["prevention"] == "read the train split in prep"
        assert "evaluation data" in pattern["symptom"]
        assert sent["train"]["patterns"] == []
