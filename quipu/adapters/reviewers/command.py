"""The ``command`` reviewer: an external program (an agent CLI, a script) reviews the run.

The program gets the review context as one JSON object on stdin (``ReviewContext.as_json()``
plus ``reply_schema``, the JSON schema of the answer) and must print one ``ReviewReply`` JSON
object on stdout and exit 0. It runs in its own process group with a clean stdin; past
``timeout`` seconds or ``max_output_bytes`` of output the whole group is killed. A crash, a
hang, a non-zero exit or garbage on stdout is a ``reviewer_failed`` finding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

from quipu.core.reviews.review import ReviewContext, ReviewVerdict, failed

from ._reply import REPLY_SCHEMA, verdict_from

__all__ = ["CommandReviewer"]

_STDERR_KEPT = 2000


class CommandReviewer:
    """Pipes the review context to ``argv`` and reads its verdict back."""

    name = "command"

    def __init__(self, argv: Sequence[str], *, timeout: float = 120.0,
                 max_output_bytes: int = 1_000_000, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self.max_output_bytes = max_output_bytes
        self.env = env

    def review(self, context: ReviewContext) -> ReviewVerdict:
        """Run the program once; its reply, or a failure saying what went wrong."""
        payload = json.dumps({**context.as_json(), "reply_schema": REPLY_SCHEMA}).encode()
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    close_fds=True, env=self.env)
        except OSError as exc:
            return failed(self.name, f"the review command could not start: {exc}",
                          stage=context.stage)
        out = bytearray()
        err = bytearray()
        too_big = threading.Event()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        threads = [
            threading.Thread(target=_feed, args=(proc.stdin, payload), daemon=True),
            threading.Thread(target=self._drain, args=(proc, proc.stdout, out, too_big),
                             daemon=True),
            threading.Thread(target=_tail, args=(proc.stderr, err), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return failed(self.name, f"the review command did not answer within "
                          f"{self.timeout:g} s and was killed", stage=context.stage,
                          evidence={"timeout_seconds": self.timeout})
        finally:
            for thread in threads:
                thread.join(5)
        if too_big.is_set():
            return failed(self.name, f"the review command wrote more than "
                          f"{self.max_output_bytes} bytes and was killed", stage=context.stage)
        if code != 0:
            tail = bytes(err[-300:]).decode("utf-8", "replace").strip()
            return failed(self.name, f"the review command exited with status {code}"
                          + (f": {tail}" if tail else ""), stage=context.stage)
        return verdict_from(self.name, bytes(out), context)

    def _drain(self, proc: subprocess.Popen[bytes], stream: IO[bytes], out: bytearray,
               too_big: threading.Event) -> None:
        while chunk := stream.read(65536):
            out.extend(chunk)
            if len(out) > self.max_output_bytes:
                too_big.set()
                _kill(proc)
                return

    def __repr__(self) -> str:
        return f"CommandReviewer({self.argv[0]!r})"


def _feed(stream: IO[bytes], payload: bytes) -> None:
    try:
        stream.write(payload)
        stream.close()
    except OSError:  # the program exited without reading it all; its exit says what happened
        pass


def _tail(stream: IO[bytes], kept: bytearray) -> None:
    while chunk := stream.read(65536):
        kept.extend(chunk)
        del kept[:-_STDERR_KEPT]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
