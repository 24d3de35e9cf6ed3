"""The failure-pattern loop on a real engine: real stage processes fail, the pattern follower
(started by ``start_workers`` as ``quipu serve`` does) proposes candidates, an agent approves
one with a code regex, the matcher flags new stage code, STATE.md lists it, and the dashboard
alerts each consumer once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_executor_helpers import ONE_STAGE, SPEC, make_project, write_slot
from waiting import wait_until

from quipu.adapters.patterns import PatternFollower
from quipu.app.bootstrap import DATA_DIR, Quipu
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.log import stream_id
from quipu.core.patterns.detection import match_code
from quipu.core.ports import NewEvent
from quipu.core.reviews.events import FindingsRecorded
from quipu.core.runs.lifecycle import State

REASON = "run the stage to see whether it fails the same way"
WHY = "seen in two runs: torch.load without map_location breaks on CPU workers"
FAILING = "raise ValueError('bad shape 17')\n"
FINDING = {"signal": "device_mismatch", "severity": "error", "phase": "pre_run",
           "source": "static", "stage": "solo", "file": "modules/solo.py", "line": 1,
           "message": "torch.load called without map_location", "fix": "pass map_location"}


def run_once(q: Quipu, *, findings: list[dict[str, Any]] | None = None) -> str:
    """Start the one-stage pipeline; before the executor sees it, record ``findings`` on the
    run's stream (what a checker would record); wait until it ends; return its id."""
    run_id = q.run("ws", reason=REASON, results_spec=SPEC)["queued"][0]["stage_run_id"]
    while findings:  # the executor appends to the run's stream too: retry a lost race
        run = q.runs.load_run(run_id)
        assert run.request is not None
        try:
            q.store.append([NewEvent(stream_id("run", run_id), run.version + 1,
                                     FindingsRecorded(
                actor="checker", reason="a checker's findings", at=run.request.at,
                run_id=run_id, phase="statistics", source="static", findings=findings))])
        except Conflict:
            continue
        break
    wait_until(lambda: q.runs.load_run(run_id).current is State.FAILED,
               what=f"run {run_id} fails")
    return run_id


def candidates(q: Quipu) -> list[dict[str, Any]]:
    return list(q.manage_patterns("list")["patterns"])


@pytest.fixture
def q(tmp_path: Path) -> Any:
    q = make_project(tmp_path, ONE_STAGE, {"solo": FAILING})
    q.start_workers()
    yield q
    q.close()


def test_a_failing_run_with_findings_becomes_candidates_and_a_repeat_only_counts(
        q: Quipu) -> None:
    first = run_once(q, findings=[FINDING])
    wait_until(lambda: len(candidates(q)) == 2, what="two candidates (finding and error)")
    by_signal = {p["signal"]: p for p in candidates(q)}
    assert set(by_signal) == {"device_mismatch", "stage_error"}
    error = q.manage_patterns("get", pattern_id=by_signal["stage_error"]["pattern_id"])
    assert error["pattern"]["symptom"] == "ValueError: bad shape 17"
    assert error["pattern"]["first_run"] == first and error["pattern"]["stage"] == "solo"
    assert error["pattern"]["status"] == "candidate"

    q.finalize_run(first, {"ml_outcome": "miss", "notes": "it failed with a bad shape"})
    write_slot(q, ONE_STAGE, {"solo": "raise ValueError('bad shape 99')\n"})
    second = run_once(q)
    wait_until(lambda: {p["signal"]: p["count"] for p in candidates(q)}["stage_error"] == 2,
               what="the repeated error counted on the same candidate")
    assert len(candidates(q)) == 2
    got = q.manage_patterns("get", pattern_id=by_signal["stage_error"]["pattern_id"])
    assert got["pattern"]["runs"] == [first, second]


def test_an_approved_code_regex_flags_new_stage_code_and_shows_in_state_md(q: Quipu) -> None:
    run_once(q, findings=[FINDING])
    wait_until(lambda: len(candidates(q)) == 2, what="two candidates")
    pid = next(p["pattern_id"] for p in candidates(q) if p["signal"] == "device_mismatch")
    # STATE.md is rewritten once the follower's change reaches the facade: wait for it
    state_md = q.root / "STATE.md"
    wait_until(lambda: "## Failure patterns" in state_md.read_text(),
               what="STATE.md shows the candidates line")

    head = q.store.head()
    with pytest.raises(InvalidInput) as bad:
        q.manage_patterns("approve", pattern_id=pid, reason=WHY,
                          detection={"kind": "code", "regex": "torch.load(("})
    assert bad.value.code == "invalid_detection"
    assert bad.value.details and bad.value.details[0]["path"] == "detection.regex"
    assert q.store.head() == head  # refused: nothing written

    approved = q.manage_patterns("approve", pattern_id=pid, reason=WHY, detection={
        "kind": "code", "regex": r"torch\.load\((?![^)]*map_location)", "files": "*.py"},
        root_cause="checkpoints saved on GPU load onto a missing device")
    assert approved["machine_checkable"] is True
    rules = q.approved_patterns("solo")
    assert [r.pattern_id for r in rules] == [pid] and q.approved_patterns("other") == []
    [hit] = match_code(rules, "solo", {
        "modules/solo.py": "import torch\nstate = torch.load('model.pt')\n",
        "modules/fixed.py": "state = torch.load('model.pt', map_location='cpu')\n"})
    assert (hit.file, hit.line, hit.pattern_id, hit.fix) == (
        "modules/solo.py", 2, pid, "pass map_location")

    def section() -> str:
        text = state_md.read_text()
        return text.split("## Failure patterns (approved)")[1].split("\n## ")[0] \
            if "## Failure patterns (approved)" in text else ""

    wait_until(lambda: pid in section(), what="STATE.md lists the approved pattern")
    assert "checks code" in section() and "1 candidate(s)" in section()

    with pytest.raises(NotFound) as unknown:
        q.manage_patterns("get", pattern_id=pid[:-1] + ("0" if pid[-1] != "0" else "1"))
    assert unknown.value.code == "unknown_pattern" and pid in unknown.value.hint
    q.manage_patterns("reject", pattern_id=pid, reason="it was a false alarm after all")
    with pytest.raises(Conflict) as rejected:
        q.manage_patterns("approve", pattern_id=pid, reason=WHY)
    assert rejected.value.code == "pattern_rejected"
    assert q.approved_patterns("solo") == []


def test_the_dashboard_alerts_each_consumer_once(q: Quipu) -> None:
    run_once(q, findings=[FINDING, {**FINDING, "severity": "info", "message": "context"}])
    wait_until(lambda: len(candidates(q)) == 2, what="two candidates")
    board = q.dashboard("agent")
    alert = board["svs_alerts"]
    assert alert["findings"]["count"] == 2
    assert alert["candidate_patterns"]["count"] == 2
    q.mark_seen("agent", board["cursor_position"])
    assert "svs_alerts" not in q.dashboard("agent")
    assert q.dashboard("person")["svs_alerts"]["candidate_patterns"]["count"] == 2


def test_a_follower_reading_the_log_again_records_nothing_twice(q: Quipu) -> None:
    run_once(q, findings=[FINDING])
    wait_until(lambda: len(candidates(q)) == 2, what="two candidates")
    q.stop_workers()
    head = q.store.head()
    saved = q.root / DATA_DIR / "patterns.json"
    assert json.loads(saved.read_text())["position"] > 0
    garbled = q.root / DATA_DIR / "garbled.json"
    garbled.write_text('{"format": 1, "position": 999999, "hash": "x", "wrong": []}')
    # Continue from the saved position; read from 0; ignore a file that does not match the log.
    for position_file in (saved, None, garbled):
        again = PatternFollower(q.store, q.bus.handle, actor="patterns:again",
                                position_file=position_file)
        assert again.poll_once() == 0
        assert again.position == head
    assert q.store.head() == head


def test_manage_patterns_answers_stay_small_at_their_largest(tmp_path: Path) -> None:
    """A full page of 50 patterns with the longest names and symptoms, and one pattern with
    every text at its cap: the sizes an agent's context pays."""
    from quipu.core.patterns.commands import RecordPatternOccurrences

    q = make_project(tmp_path, ONE_STAGE, {"solo": FAILING})
    try:
        stage = "s" * 64
        for i in range(60):
            q.bus.handle(RecordPatternOccurrences(
                run=f"stage-{i:012x}", stage=stage, outcome="failed", position=i + 1,
                actor="patterns:test", findings=[{
                    "signal": "x" * 64, "severity": "error", "source": "y" * 64,
                    "stage": stage, "message": chr(97 + i % 26) + chr(97 + i // 26) + "m" * 500,
                    "fix": "f" * 500}]))
        page = q.manage_patterns("list", limit=50)
        assert len(page["patterns"]) == 50 and page["next_offset"] == 50
        assert len(json.dumps(page)) <= 20_000, len(json.dumps(page))
        pid = page["patterns"][0]["pattern_id"]
        q.manage_patterns("approve", pattern_id=pid, reason="r" * 5000, root_cause="c" * 1000,
                          prevention="p" * 1000,
                          detection={"kind": "code", "regex": "a" * 500, "files": "*" * 200})
        got = q.manage_patterns("get", pattern_id=pid)
        assert len(json.dumps(got)) <= 6_000, len(json.dumps(got))
    finally:
        q.close()
