"""The ``llm`` reviewer: asks a language model over HTTP, and accepts only a JSON verdict.

Two wire formats, both over ``httpx``:

* ``openai``: an OpenAI-compatible chat completions API. ``endpoint`` is the API's base URL
  including its version (``https://api.openai.com/v1``, ``http://localhost:8000/v1``); the
  request is ``POST {endpoint}/chat/completions`` with ``Authorization: Bearer <key>`` and
  ``response_format: {"type": "json_object"}``; the verdict is ``choices[0].message.content``.
* ``anthropic``: the Anthropic messages API. ``endpoint`` is the base URL
  (``https://api.anthropic.com``); the request is ``POST {endpoint}/v1/messages`` with the
  ``x-api-key`` and ``anthropic-version`` headers; the verdict is the text of ``content``.

The model is sent the review context (stage code, config, diff since the stage last succeeded,
the structured reason, the results spec, the approved failure patterns) and the JSON schema of
``ReviewReply``. A reply that is not valid JSON for that schema is a ``reviewer_failed``
finding, never read as free text. ``429`` (waiting ``Retry-After``, within the time left) and
``5xx`` answers are retried at most ``retries`` times; anything else that goes wrong (refused
connection, timeout, another status) is a ``reviewer_failed`` finding. The API key is sent
only in its header: it is never logged, never part of a finding, never recorded.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

import httpx

from quipu.core.reviews.review import ReviewContext, ReviewVerdict, failed

from ._reply import REPLY_SCHEMA, verdict_from

__all__ = ["ANTHROPIC_VERSION", "SYSTEM_PROMPT", "LlmReviewer", "unfenced"]

log = logging.getLogger("quipu.reviewer")

ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 2048
_MAX_WAIT = 30.0  # seconds one Retry-After may make us wait at most

SYSTEM_PROMPT = (
    "You review one stage of a machine-learning pipeline before it runs. You are given the "
    "stage's code, its config, the diff since its last successful run, why the agent runs it "
    "(hypothesis), the results spec, and known failure patterns. Look for defects that would "
    "make the run fail, waste compute, or produce a result that does not test the stated "
    "hypothesis (data leakage, wrong split, a metric that is not the primary metric, a label "
    "shift, a silent NaN). Decide 'block' only for such defects, 'warn' for doubts, "
    "'approve' otherwise. Answer with ONLY one JSON object, no prose, matching this JSON "
    "schema: ")


class LlmReviewer:
    """Reviews a run with a language model (see the module docstring)."""

    name = "llm"

    def __init__(self, *, api: Literal["openai", "anthropic"], endpoint: str, model: str,
                 api_key: str | None, timeout: float = 120.0, retries: int = 2,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.api = api
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self._key = api_key
        self.timeout = timeout
        self.retries = retries
        self._transport = transport

    def __repr__(self) -> str:  # never the key
        return f"LlmReviewer(api={self.api!r}, endpoint={self.endpoint!r}, model={self.model!r})"

    # --- the request ---------------------------------------------------------------------------

    def request_for(self, context: ReviewContext) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, headers, JSON body) of the pre-run review request for ``context``."""
        system = SYSTEM_PROMPT + json.dumps(REPLY_SCHEMA, separators=(",", ":"))
        return self.request(system, json.dumps(context.as_json(), separators=(",", ":")))

    def request(self, system: str, user: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, headers, JSON body) of one request: ``system`` instructions, ``user`` text."""
        headers = {"content-type": "application/json"}
        if self.api == "anthropic":
            if self._key:
                headers["x-api-key"] = self._key
            headers["anthropic-version"] = ANTHROPIC_VERSION
            return (f"{self.endpoint}/v1/messages", headers,
                    {"model": self.model, "max_tokens": MAX_TOKENS, "system": system,
                     "messages": [{"role": "user", "content": user}], "temperature": 0})
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        return (f"{self.endpoint}/chat/completions", headers,
                {"model": self.model, "temperature": 0,
                 "response_format": {"type": "json_object"},
                 "messages": [{"role": "system", "content": system},
                              {"role": "user", "content": user}]})

    # --- the review ----------------------------------------------------------------------------

    def review(self, context: ReviewContext) -> ReviewVerdict:
        """Ask the model; its verdict, or a failure saying what went wrong."""
        if not self.endpoint or not self.model:
            return failed(self.name, "the llm reviewer has no endpoint or model (svs.llm_endpoint"
                          " / svs.llm_model or $QUIPU_LLM_ENDPOINT / $QUIPU_LLM_MODEL)",
                          stage=context.stage)
        url, headers, body = self.request_for(context)
        text, why, evidence = self.complete(url, headers, body)
        if text is None:
            return self._failed(context, why, **evidence)
        return verdict_from(self.name, unfenced(text), context)

    def complete(self, url: str, headers: dict[str, str],
                 body: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
        """Send one request (``request``); (the model's text, "", {}) or (None, why it
        failed, evidence). 429 and 5xx answers are retried within ``timeout``."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        with httpx.Client(transport=self._transport) as client:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None, f"no answer within {self.timeout:g} s", {}
                try:
                    response = client.post(url, headers=headers, json=body,
                                           timeout=httpx.Timeout(remaining))
                except httpx.TimeoutException:
                    return None, f"the API did not answer within {self.timeout:g} s", {}
                except httpx.HTTPError as exc:
                    return None, f"the API could not be reached ({type(exc).__name__})", {}
                status = response.status_code
                if status == 200:
                    return self._text(response)
                wait = self._retry_wait(response, attempt)
                if wait is None or attempt >= self.retries:
                    return (None, f"the API answered HTTP {status}"
                            + (f" after {attempt + 1} attempts" if attempt else ""),
                            {"status": status})
                if time.monotonic() + wait >= deadline:
                    return (None, f"the API answered HTTP {status} and asked to wait "
                            f"{wait:g} s, beyond the review's time", {"status": status})
                log.info("llm reviewer: HTTP %d, retrying in %.1f s", status, wait)
                attempt += 1
                time.sleep(wait)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the status is not worth a retry."""
        status = response.status_code
        if status == 429:
            try:
                given = float(response.headers.get("retry-after", "1"))
            except ValueError:
                given = 1.0
            return min(max(given, 0.0), _MAX_WAIT)
        if status >= 500:
            return min(0.5 * 2.0 ** attempt, _MAX_WAIT)
        return None

    def _text(self, response: httpx.Response) -> tuple[str | None, str, dict[str, Any]]:
        """The assistant's text of a 200 answer, or why the answer is not one."""
        try:
            data = response.json()
            if self.api == "anthropic":
                text = "".join(part["text"] for part in data["content"]
                               if part.get("type") == "text")
            else:
                text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("the message content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return (None, f"the API's answer is not a {self.api} response "
                    f"({type(exc).__name__})", {})
        return text, "", {}

    def _failed(self, context: ReviewContext, why: str, **evidence: Any) -> ReviewVerdict:
        log.warning("llm reviewer: %s (run %s)", why, context.run_id)
        return failed(self.name, f"the llm reviewer failed: {why}", stage=context.stage,
                      evidence=evidence)


def unfenced(text: str) -> str:
    """The text without one surrounding Markdown code fence (models add them despite being
    told not to); what is inside must still be exactly the JSON asked for."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        inner = stripped[3:-3]
        first, _, rest = inner.partition("\n")
        return rest if first.strip() in ("", "json") else inner
    return stripped
