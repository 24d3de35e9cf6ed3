"""The post-run review with the llm's second opinion: a real run of a real stage, the real
post-run follower, and the real HTTP client talking to a local server that speaks the OpenAI
wire shape. The deterministic review always runs; the model's opinion is used only when it is
JSON of the outcome schema, and a failure is named in the suggestion's evidence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest
from llm_server import Answer, LlmServer, llm_server, openai_reply
from test_executor_helpers import ONE_STAGE, drive, ended, executor, make_project, start
from waiting import wait_until

from quipu.adapters.monitor import PostRunReviewer, RunMonitor
from quipu.adapters.monitor.monitor import WINDOW_FAILURES
from quipu.adapters.reviewers.llm import LlmReviewer
from quipu.adapters.reviewers.outcome import LlmOutcomeReview, LlmWindowReview
from quipu.app.facade import Quipu
from quipu.core.log import decode
from quipu.core.reviews.events import FindingsRecorded, OutcomeSuggested
from quipu.core.reviews.monitoring import MonitorRules
from quipu.core.runs.lifecycle import State

LOGS = dedent("""\
    from quipu import sdk
    sdk.log_metric("loss", 0.25, step=0)
    sdk.save_output("result", {"loss": 0.25})
    """)


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def suggestion(q: Quipu, run_id: str) -> OutcomeSuggested | None:
    found = [e for e in (decode(r).event for r in q.store.read(after=0, limit=100_000))
             if isinstance(e, OutcomeSuggested) and e.run_id == run_id]
    return found[0] if found else None


def reviewed(q: Quipu, server: LlmServer, tmp_path: Path) -> OutcomeSuggested:
    run_id = start(q)["solo"]
    drive(executor(q), ended(q, run_id))
    llm = LlmReviewer(api="openai", endpoint=f"{server.url}/v1", model="m-1",
                      api_key="sk-post-run-secret", timeout=10.0, retries=0)
    reviewer = PostRunReviewer(q.store, q.runs, tick=0.05,
                               second_opinion=LlmOutcomeReview(llm))
    reviewer.poll_once()
    found = suggestion(q, run_id)
    assert found is not None, "the post-run review suggested nothing"
    return found


def test_the_models_opinion_leads_and_the_deterministic_evidence_follows(
        server: LlmServer, tmp_path: Path) -> None:
    server.answer(openai_reply(json.dumps({"outcome": "miss",
                                           "evidence": ["loss 0.25 did not beat the 0.2 bar"]})))
    q = make_project(tmp_path, ONE_STAGE, {"solo": LOGS})
    found = reviewed(q, server, tmp_path)
    assert found.reviewers == ["post_run", "llm"] and found.outcome == "miss"
    assert found.evidence[0] == "loss 0.25 did not beat the 0.2 bar"
    assert len(found.evidence) > 1  # the deterministic review's lines follow
    [seen] = server.seen
    facts = json.loads(seen.body["messages"][-1]["content"])
    assert facts["state"] == "succeeded" and facts["metrics"]["loss"]["last"] == 0.25
    assert "sk-post-run-secret" not in json.dumps([e.model_dump(mode="json") for e in
                                                   (decode(r).event for r in q.store.read(
                                                       after=0, limit=100_000))])
    q.close()


def test_a_model_that_fails_leaves_the_deterministic_suggestion_and_says_why(
        server: LlmServer, tmp_path: Path) -> None:
    server.answer(Answer(status=500, body={"error": "overloaded"}))
    q = make_project(tmp_path, ONE_STAGE, {"solo": LOGS})
    found = reviewed(q, server, tmp_path)
    assert found.reviewers == ["post_run"]
    assert found.evidence[-1] == "llm post-run review failed: the API answered HTTP 500"
    q.close()


WAITS = dedent("""\
    import time
    from quipu import sdk
    for step, value in enumerate([0.9, 0.7, 3.5, 9.0]):
        sdk.log_metric("loss", value, step=step)
    while not sdk.should_stop():
        time.sleep(0.05)
    """)


def test_the_monitors_llm_window_review_records_findings_and_an_error_stops_the_run(
        server: LlmServer, tmp_path: Path) -> None:
    """The monitor shows the model the running stage's recent metrics; its error finding is a
    monitor finding from the llm and, with auto_stop, the run ends stopped."""
    server.answer(openai_reply(json.dumps({"findings": [
        {"severity": "error", "message": "the loss diverges after step 1", "metric": "loss"}]})))
    q = make_project(tmp_path, ONE_STAGE, {"solo": WAITS})
    run_id = start(q)["solo"]
    llm = LlmReviewer(api="openai", endpoint=f"{server.url}/v1", model="m-1", api_key=None,
                      timeout=10.0, retries=0)
    monitor = RunMonitor(q.store, q.runs, MonitorRules(auto_stop=True, min_points=100),
                         tick=0.05, window_review=LlmWindowReview(llm), window_every=0.01)
    ex = executor(q)

    def step() -> None:
        ex.poll_once()
        monitor.poll_once()

    wait_until(lambda: q.runs.load_run(run_id).current is State.STOPPED, step=step,
               timeout=120, what="the llm's error finding stops the run")
    found = [f for e in (decode(r).event for r in q.store.read(after=0, limit=100_000))
             if isinstance(e, FindingsRecorded) and e.run_id == run_id for f in e.findings]
    assert [(f["signal"], f["source"], f["severity"]) for f in found] == [
        ("llm_window", "llm", "error")]
    assert server.seen, "the model was asked"
    q.close()


STEADY = dedent("""\
    import time
    from quipu import sdk
    for step, value in enumerate([0.9, 0.8, 0.7]):
        sdk.log_metric("loss", value, step=step)
    while not sdk.should_stop():
        time.sleep(0.05)
    """)


def test_the_window_review_is_switched_off_after_repeated_failures_and_the_run_goes_on(
        server: LlmServer, tmp_path: Path) -> None:
    """Failures in a row are counted (a good answer starts the count again); after
    WINDOW_FAILURES of them the model is not asked again, its failures never became findings,
    and the run, still running, ends only when asked to."""
    failed = Answer(status=500, body={"error": "overloaded"})
    diverges = openai_reply(json.dumps({"findings": [
        {"severity": "error", "message": "the loss diverges", "metric": "loss"}]}))
    server.answer(failed, Answer(raw=b"{not json"), openai_reply('{"findings": []}'),
                  *[failed] * WINDOW_FAILURES, diverges)
    q = make_project(tmp_path, ONE_STAGE, {"solo": STEADY})
    run_id = start(q)["solo"]
    llm = LlmReviewer(api="openai", endpoint=f"{server.url}/v1", model="m-1", api_key=None,
                      timeout=10.0, retries=0)
    monitor = RunMonitor(q.store, q.runs, MonitorRules(auto_stop=True, min_points=100),
                         tick=0.05, window_review=LlmWindowReview(llm), window_every=0.01)
    ex = executor(q)
    polls = [0]

    def step() -> None:
        ex.poll_once()
        monitor.poll_once()
        polls[0] += 1

    wait_until(lambda: monitor.window_review is None, step=step, timeout=120,
               what="the window review is switched off")
    asked = 2 + 1 + WINDOW_FAILURES
    assert len(server.seen) == asked and monitor.window_failures == WINDOW_FAILURES
    # Many more windows come due; the model is not asked again (its error reply stays unsent).
    polls[0] = 0
    wait_until(lambda: polls[0] >= 20, step=step, what="twenty more monitor steps")
    assert len(server.seen) == asked and server.script == [diverges]
    assert q.runs.load_run(run_id).current is State.RUNNING
    q.request_stop(run_id, "the window review test is done with this run")
    wait_until(lambda: q.runs.load_run(run_id).current is State.STOPPED, step=step,
               timeout=120, what="the run stops when asked")
    found = [f for e in (decode(r).event for r in q.store.read(after=0, limit=100_000))
             if isinstance(e, FindingsRecorded) and e.run_id == run_id for f in e.findings]
    assert [f for f in found if f.get("source") == "llm"] == []
    q.close()
