"""The llm post-run review against a local server speaking the OpenAI and Anthropic wire shapes:
only a reply that is JSON of the outcome schema is an opinion; everything else is the reason
there is none, and the key stays in its header."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from llm_server import Answer, LlmServer, anthropic_reply, llm_server, openai_reply

from quipu.adapters.reviewers.llm import LlmReviewer
from quipu.adapters.reviewers.outcome import LlmOutcomeReview, LlmWindowReview
from quipu.core.reviews.monitoring import RunWatch

KEY = "sk-test-outcome-0123456789"
FACTS = {"run_id": "stage-1", "stage": "train", "state": "succeeded",
         "hypothesis": "a smaller lr reaches 0.9 accuracy",
         "results_spec": {"primary_metric": "accuracy", "direction": "maximize", "goal": 0.9},
         "metrics": {"accuracy": {"last": 0.86, "max": 0.87}},
         "outputs": {"model": None},
         "deterministic": {"outcome": "partial", "evidence": ["accuracy 0.86 < goal 0.9"]}}
GOOD = json.dumps({"outcome": "miss", "evidence": ["accuracy 0.86 is below the 0.9 goal",
                                                   "no gain over the baseline's 0.86"]})


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def review(server: LlmServer, api: str = "openai") -> LlmOutcomeReview:
    endpoint = f"{server.url}/v1" if api == "openai" else server.url
    return LlmOutcomeReview(LlmReviewer(api=api, endpoint=endpoint,  # type: ignore[arg-type]
                                        model="m-1", api_key=KEY, timeout=10.0, retries=0))


@pytest.mark.parametrize(("api", "reply"), [("openai", openai_reply),
                                            ("anthropic", anthropic_reply)])
def test_a_good_reply_is_the_opinion_and_the_request_carries_the_facts(
        server: LlmServer, api: str, reply: Callable[[str], Answer]) -> None:
    server.answer(reply(GOOD))
    assert review(server, api)(FACTS) == ("miss", ["accuracy 0.86 is below the 0.9 goal",
                                                   "no gain over the baseline's 0.86"])
    [seen] = server.seen
    system = seen.body["system"] if api == "anthropic" else seen.body["messages"][0]["content"]
    assert '"outcome"' in system and "OutcomeReply" in system  # the schema is asked for
    assert json.loads(seen.body["messages"][-1]["content"]) == FACTS  # the facts are sent
    assert KEY not in json.dumps(seen.body)
    header = seen.headers.get("authorization") or seen.headers.get("x-api-key")
    assert header is not None and KEY in header


@pytest.mark.parametrize(("answer", "why"), [
    (openai_reply("the run looks fine to me"), "not JSON of the outcome schema"),
    (openai_reply(json.dumps({"outcome": "great", "evidence": ["x"]})),
     "not JSON of the outcome schema"),
    (openai_reply(json.dumps({"outcome": "miss", "evidence": []})),
     "not JSON of the outcome schema"),
    (Answer(status=500, body={"error": "boom"}), "HTTP 500"),
    (Answer(status=200, body={"unexpected": True}), "is not a openai response"),
])
def test_anything_but_the_schema_is_the_reason_there_is_no_opinion(
        server: LlmServer, answer: Answer, why: str) -> None:
    server.answer(answer)
    result = review(server)(FACTS)
    assert isinstance(result, str) and why in result


def test_no_endpoint_is_a_reason_not_a_request() -> None:
    empty = LlmOutcomeReview(LlmReviewer(api="openai", endpoint="", model="", api_key=None))
    assert empty(FACTS) == "the llm has no endpoint or model"


# --- the window review during a run ------------------------------------------------------------


def watch() -> RunWatch:
    seen = {"loss": deque([0.9, 0.7, 3.5, 9.0], maxlen=20)}
    return RunWatch(run_id="stage-1", stage="train", progress_at=datetime.now(UTC), points=4,
                    seen=seen)


def window(server: LlmServer) -> LlmWindowReview:
    return LlmWindowReview(LlmReviewer(api="openai", endpoint=f"{server.url}/v1", model="m-1",
                                       api_key=KEY, timeout=10.0, retries=0))


def test_a_window_reply_becomes_monitor_findings_from_the_llm(server: LlmServer) -> None:
    server.answer(openai_reply(json.dumps({"findings": [
        {"severity": "error", "message": "the loss diverges after step 2", "metric": "loss"}]})))
    [found] = window(server)(watch())
    assert (found.signal, found.severity, found.source, found.phase) == (
        "llm_window", "error", "llm", "during_run")
    assert found.evidence == {"metric": "loss"} and found.stage == "train"
    sent = json.loads(server.seen[0].body["messages"][-1]["content"])
    assert sent["metrics"] == {"loss": [0.9, 0.7, 3.5, 9.0]}


def test_a_healthy_window_has_no_findings(server: LlmServer) -> None:
    server.answer(openai_reply(json.dumps({"findings": []})))
    assert window(server)(watch()) == []


@pytest.mark.parametrize("answer", [openai_reply("all good"),
                                    openai_reply(json.dumps({"findings": [{"severity": "x"}]})),
                                    Answer(status=503, body={})])
def test_a_window_reply_that_is_not_the_schema_raises_so_the_monitor_counts_it(
        server: LlmServer, answer: Answer) -> None:
    server.answer(answer)
    with pytest.raises(RuntimeError, match="llm window review"):
        window(server)(watch())
