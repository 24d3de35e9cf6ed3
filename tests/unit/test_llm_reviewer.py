"""The llm reviewer against a local server speaking the OpenAI and Anthropic wire shapes: real
HTTP on a free port, scripted answers. Only a reply that is JSON of the review schema is a
verdict; everything else is a recorded reviewer failure, and the key stays in its header."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import Answer, LlmServer, anthropic_reply, llm_server, openai_reply

from quipu.adapters.reviewers.llm import ANTHROPIC_VERSION, LlmReviewer
from quipu.core.reviews.review import REVIEWER_FAILED, ReviewContext, ReviewVerdict

KEY = "sk-test-0123456789-secret"
GOOD = json.dumps({"decision": "warn", "fix": "split before scaling",
                   "findings": [{"severity": "warning", "file": "modules/train.py",
                                 "line": 3, "message": "the scaler sees the test rows"}]})


@pytest.fixture
def server() -> Iterator[LlmServer]:
    with llm_server() as running:
        yield running


def context() -> ReviewContext:
    return ReviewContext(
        run_id="stage-1", workspace="w", stage="train", version=2,
        entrypoint="modules/train.py", files={"modules/train.py": "print('hi')\n"},
        pipeline="stages: []\n", config={"lr": 0.1}, inputs={}, outputs={},
        results_spec={"primary_metric": "accuracy"},
        reason={"description": "try a smaller lr", "hypothesis": "less overfitting"},
        diff="--- a/x\n+++ b/x\n", patterns=[{"id": "p1", "symptom": "NaN loss"}])


def reviewer(server: LlmServer, api: str = "openai", **kwargs: Any) -> LlmReviewer:
    endpoint = f"{server.url}/v1" if api == "openai" else server.url
    kwargs.setdefault("timeout", 10.0)
    return LlmReviewer(api=api, endpoint=endpoint, model="m-1",  # type: ignore[arg-type]
                       api_key=KEY, **kwargs)


def failure(verdict: ReviewVerdict) -> str:
    assert verdict.reviewer_failed, verdict
    [found] = verdict.findings
    assert found.signal == REVIEWER_FAILED and found.source == "llm"
    return found.message


class TestOpenAI:
    def test_a_good_reply_is_the_verdict(self, server: LlmServer) -> None:
        server.answer(openai_reply(GOOD))
        verdict = reviewer(server).review(context())
        assert verdict.decision == "warn" and verdict.fix == "split before scaling"
        [found] = verdict.findings
        assert (found.file, found.line, found.severity) == ("modules/train.py", 3, "warning")

    def test_the_request_has_the_chat_completions_shape_and_a_bearer_key(self, server):
        server.answer(openai_reply(GOOD))
        reviewer(server).review(context())
        [seen] = server.seen
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == f"Bearer {KEY}"
        assert seen.body["model"] == "m-1"
        assert seen.body["response_format"] == {"type": "json_object"}
        roles = [m["role"] for m in seen.body["messages"]]
        assert roles == ["system", "user"]
        assert '"decision"' in seen.body["messages"][0]["content"]  # the schema is asked for
        sent = json.loads(seen.body["messages"][1]["content"])
        assert sent["files"] == {"modules/train.py": "print('hi')\n"}
        assert sent["diff"] and sent["reason"]["hypothesis"] == "less overfitting"
        assert sent["results_spec"] == {"primary_metric": "accuracy"}
        assert sent["patterns"] == [{"id": "p1", "symptom": "NaN loss"}]
        assert KEY not in json.dumps(seen.body)

    def test_a_fenced_json_reply_is_accepted(self, server: LlmServer) -> None:
        server.answer(openai_reply(f"```json\n{GOOD}\n```"))
        assert reviewer(server).review(context()).decision == "warn"


class TestAnthropic:
    def test_a_good_reply_is_the_verdict(self, server: LlmServer) -> None:
        server.answer(anthropic_reply(json.dumps({"decision": "block", "fix": "stop it",
                                                  "findings": []})))
        verdict = reviewer(server, "anthropic").review(context())
        assert verdict.decision == "block" and not verdict.reviewer_failed

    def test_the_request_has_the_messages_shape_and_the_key_header(self, server) -> None:
        server.answer(anthropic_reply(GOOD))
        reviewer(server, "anthropic").review(context())
        [seen] = server.seen
        assert seen.path == "/v1/messages"
        assert seen.headers["x-api-key"] == KEY
        assert seen.headers["anthropic-version"] == ANTHROPIC_VERSION
        assert "authorization" not in seen.headers
        assert seen.body["model"] == "m-1" and seen.body["max_tokens"] > 0
        assert '"decision"' in seen.body["system"]
        assert [m["role"] for m in seen.body["messages"]] == ["user"]
        assert KEY not in json.dumps(seen.body)


class TestBadAnswers:
    def test_a_reply_that_is_not_json_is_a_failure_not_free_text(self, server) -> None:
        server.answer(openai_reply("Looks good to me, approve!"))
        assert "not JSON" in failure(reviewer(server).review(context()))

    def test_json_of_the_wrong_schema_is_a_failure(self, server: LlmServer) -> None:
        server.answer(openai_reply(json.dumps({"decision": "ship it", "findings": []})))
        assert "does not fit the review schema" in failure(reviewer(server).review(context()))

    def test_extra_keys_are_the_wrong_schema(self, server: LlmServer) -> None:
        server.answer(anthropic_reply(json.dumps({"decision": "approve", "mood": "happy"})))
        assert "does not fit" in failure(reviewer(server, "anthropic").review(context()))

    def test_an_answer_not_in_the_apis_shape_is_a_failure(self, server: LlmServer) -> None:
        server.answer(Answer(body={"text": GOOD}))
        assert "not a openai response" in failure(reviewer(server).review(context()))

    def test_a_slow_api_is_a_timeout_failure(self, server: LlmServer) -> None:
        server.answer(Answer(delay=30, body={}))
        message = failure(reviewer(server, timeout=0.5).review(context()))
        assert "did not answer within" in message

    def test_an_unreachable_api_is_a_failure(self) -> None:
        with llm_server() as gone:
            url = gone.url
        verdict = LlmReviewer(api="openai", endpoint=url, model="m", api_key=KEY,
                              timeout=5).review(context())
        assert "could not be reached" in failure(verdict)

    def test_no_endpoint_is_a_failure(self) -> None:
        verdict = LlmReviewer(api="openai", endpoint="", model="", api_key=None).review(
            context())
        assert "no endpoint" in failure(verdict)


class TestRetries:
    def test_429_waits_retry_after_and_retries(self, server: LlmServer) -> None:
        server.answer(Answer(status=429, headers={"retry-after": "0"}, body={}),
                      openai_reply(GOOD))
        assert reviewer(server).review(context()).decision == "warn"
        assert len(server.seen) == 2

    def test_429_retries_are_bounded(self, server: LlmServer) -> None:
        server.answer(*[Answer(status=429, headers={"retry-after": "0"}, body={})] * 5)
        message = failure(reviewer(server, retries=2).review(context()))
        assert "HTTP 429 after 3 attempts" in message and len(server.seen) == 3

    def test_a_retry_after_beyond_the_time_left_is_not_waited_for(self, server) -> None:
        server.answer(Answer(status=429, headers={"retry-after": "20"}, body={}))
        message = failure(reviewer(server, timeout=2).review(context()))
        assert "beyond the review's time" in message and len(server.seen) == 1

    def test_500_is_retried_then_answered(self, server: LlmServer) -> None:
        server.answer(Answer(status=500, body={}), openai_reply(GOOD))
        assert reviewer(server).review(context()).decision == "warn"

    def test_500s_that_persist_are_a_failure(self, server: LlmServer) -> None:
        server.answer(*[Answer(status=503, body={})] * 3)
        assert "HTTP 503" in failure(reviewer(server, retries=1).review(context()))
        assert len(server.seen) == 2

    def test_a_client_error_is_not_retried(self, server: LlmServer) -> None:
        server.answer(Answer(status=401, body={"error": "bad key"}))
        assert "HTTP 401" in failure(reviewer(server).review(context()))
        assert len(server.seen) == 1


def test_the_key_never_reaches_the_log_or_the_findings(server: LlmServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.answer(Answer(status=429, headers={"retry-after": "0"}, body={}),
                  openai_reply("not json"), Answer(status=401, body={}))
    first = reviewer(server).review(context())
    second = reviewer(server).review(context())
    shown = caplog.text + repr(reviewer(server)) + json.dumps(
        [f.as_dict() for v in (first, second) for f in v.findings])
    assert KEY not in shown
