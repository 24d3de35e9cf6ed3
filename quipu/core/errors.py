"""Every error Quipu raises on purpose.

The tree is deliberately shallow::

    QuipuError                  anything Quipu refuses or cannot do; has .code and .hint
     +-- InvalidInput           the caller sent something malformed (bad name, short reason, ...)
     +-- NotFound               a workspace, slot, version or run that does not exist
     +-- Conflict               the request is well formed but the current state forbids it
     +-- Unavailable            storage is locked, unreachable or lost a race too often
     +-- IntegrityFailure       the log or a blob is not what was written

Each instance carries a specific, stable ``code`` (``"reason_too_short"``, ``"slot_occupied"``)
that tools and scripts can match on, and a ``hint`` that tells the caller what to do next.
Entry points (MCP, CLI) translate these into tool errors and exit codes; nothing else does.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "IntegrityFailure",
    "InvalidInput",
    "NotFound",
    "QuipuError",
    "Unavailable",
]


class QuipuError(Exception):
    """Quipu refused or could not complete a request."""

    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None, hint: str = "",
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.hint = hint
        self.details = details
        """Every problem found, when there were several (e.g. each bad metadata field:
        ``{path, expected, found}``); the message names them too."""

    def as_dict(self) -> dict[str, Any]:
        """The error as the plain mapping that tools and ``--json`` output return."""
        out: dict[str, Any] = {"error": type(self).__name__, "code": self.code,
                               "message": self.message, "hint": self.hint}
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InvalidInput(QuipuError):
    """The request is malformed: fix the argument named in the message and retry."""

    default_code = "invalid_input"


class NotFound(QuipuError):
    """The named workspace, slot, version or record does not exist."""

    default_code = "not_found"


class Conflict(QuipuError):
    """The request is valid but the current state forbids it."""

    default_code = "conflict"


class Unavailable(QuipuError):
    """Storage is locked or unreachable, or a write kept losing races; nothing was written."""

    default_code = "unavailable"


class IntegrityFailure(QuipuError):
    """Stored data does not match what was written (tampering or corruption)."""

    default_code = "integrity_failure"
