"""Waiting on a condition with a bound, the one way tests let something happen.

A test never sleeps a fixed time and hopes: it names what it waits for, polls it, and fails
with that name if it does not happen within ``timeout``. The bound is there so a broken build
fails instead of hanging; it is not a claim about speed, so it is generous (a loaded machine
may be many times slower than a laptop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_until", "wait_until_async"]


def wait_until(predicate: Callable[[], object], *, what: str, timeout: float = 60.0,
               interval: float = 0.05, step: Callable[[], object] | None = None) -> None:
    """Return once ``predicate()`` is truthy; raise AssertionError naming ``what`` after
    ``timeout`` seconds. ``step()``, if given, runs between checks (e.g. one executor poll).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: did not happen within {timeout:g} s")
        if step is not None:
            step()
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Awaitable[object]], *, what: str,
                           timeout: float = 60.0, interval: float = 0.1) -> object:
    """``wait_until`` for a coroutine check (an MCP call); returns the first truthy answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await predicate()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: did not happen within {timeout:g} s")
        await asyncio.sleep(interval)
