"""What the server writes to stderr: bounded per record, and never an argument's value.

Over stdio, stderr is the only place a server can log, and agents (or hostile inputs) can send
arguments of any size. fastmcp logs an argument-validation failure with pydantic's error list,
which carries every offending ``input`` value; a domain refusal's message may quote a name the
caller sent. So every record that reaches a handler of ours or fastmcp's goes through
``Bounded``: argument-validation records keep where and what was wrong but lose the values, and
any record (its traceback included) is cut to ``LIMIT`` characters.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["LIMIT", "Bounded", "log_to_stderr"]

LIMIT = 2000
"""Most characters one log record may write (message and traceback together)."""

_INVALID_ARGUMENTS = "Invalid arguments for tool %r: %s"


def _without_values(errors: Any) -> Any:
    """pydantic's error dicts without ``input`` and ``ctx`` (which hold the caller's values)."""
    if not isinstance(errors, list):
        return "(details withheld)"
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")}
            if isinstance(e, dict) else "(withheld)" for e in errors]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} characters not logged]"


class Bounded(logging.Filter):
    """Drops argument values from validation records and caps every record's length."""

    def __init__(self, limit: int = LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place (it is always let through)."""
        if record.msg == _INVALID_ARGUMENTS and isinstance(record.args, tuple) \
                and len(record.args) == 2:
            record.args = (_cut(str(record.args[0]), 200), _without_values(record.args[1]))
        message = record.getMessage()
        if len(message) > self.limit:
            record.msg, record.args = _cut(message, self.limit), ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, _cut(text, self.limit)
        elif record.exc_text:
            record.exc_text = _cut(record.exc_text, self.limit)
        return True


def log_to_stderr() -> None:
    """Send Quipu's records to stderr and bound every record ours and fastmcp's handlers get."""
    bounded = Bounded()
    ours = logging.getLogger("quipu")
    if not ours.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        ours.addHandler(stream)
        ours.setLevel(logging.INFO)
    for logger in (ours, logging.getLogger("fastmcp"), logging.getLogger()):
        for handler in logger.handlers:
            if not any(isinstance(f, Bounded) for f in handler.filters):
                handler.addFilter(bounded)
