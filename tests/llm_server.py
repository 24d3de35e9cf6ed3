"""A local HTTP server that speaks the shapes of the OpenAI chat completions and Anthropic
messages APIs, answering from a script: real HTTP on a free port, in a thread.

Each scripted answer is an ``Answer``: a status, headers, a JSON body (or raw bytes), and
optionally a delay (to be slower than the client's timeout). Every request is kept
(path, headers, parsed body) so a test can assert its shape.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "LlmServer", "anthropic_reply", "llm_server", "openai_reply"]


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


def openai_reply(content: str) -> Answer:
    """A chat completion whose assistant message is ``content``."""
    return Answer(body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})


def anthropic_reply(content: str) -> Answer:
    """A message whose text block is ``content``."""
    return Answer(body={
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": content}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 10}})


class LlmServer:
    """The running server: ``url``, the ``script`` it answers from, what it ``seen``."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.seen: list[Seen] = []
        self.release = threading.Event()  # ends every pending delay (teardown)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(length)
                try:
                    body = json.loads(data)
                except ValueError:
                    body = data
                with server._lock:
                    server.seen.append(Seen(self.path, {k.lower(): v for k, v in
                                                        self.headers.items()}, body))
                    answer = server.script.pop(0) if server.script else Answer(
                        status=500, body={"error": "nothing scripted"})
                if answer.delay:
                    server.release.wait(answer.delay)
                payload = answer.raw if answer.raw is not None else json.dumps(
                    answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self.script.extend(answers)


@contextmanager
def llm_server() -> Iterator[LlmServer]:
    server = LlmServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
