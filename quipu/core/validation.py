"""Checks shared by every command: names and reasons."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from .errors import InvalidInput

__all__ = ["MIN_REASON_LENGTH", "check_name", "check_reason", "did_you_mean", "suggest"]

MIN_REASON_LENGTH = 15
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")


def check_name(value: str, *, what: str = "workspace") -> str:
    """Return ``value`` if it is a safe name for a workspace, slot or tag, else raise.

    Safe: 1-64 characters of letters, digits, ``_``, ``-`` and ``.``, starting and ending with a
    letter or digit; no ``/``, no ``..`` and no control characters.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"a {what} name is required", code="invalid_name",
                           hint=f"give the {what} a short name such as 'baseline-cnn'")
    problems = []
    if len(value) > 64:
        problems.append(f"is {len(value)} characters long (at most 64)")
    if "/" in value or "\\" in value:
        problems.append("contains a path separator")
    if ".." in value:
        problems.append("contains '..'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problems.append("contains control characters")
    if not problems and not _NAME.match(value):
        problems.append("uses characters other than letters, digits, '_', '-' and '.', "
                        "or does not start and end with a letter or digit")
    if problems:
        raise InvalidInput(
            f"invalid {what} name {value!r}: it " + "; it ".join(problems),
            code="invalid_name",
            hint="use 1-64 letters, digits, '_', '-' or '.', starting and ending with a letter "
            "or digit, e.g. 'lr-sweep-2'",
        )
    return value


def check_reason(reason: str | None, *, minimum: int = MIN_REASON_LENGTH,
                 what: str = "reason") -> str:
    """Return the stripped reason if it is at least ``minimum`` characters, else raise."""
    text = (reason or "").strip()
    if len(text) < minimum:
        code = "reason_missing" if not text else "reason_too_short"
        raise InvalidInput(
            f"a {what} of at least {minimum} characters is required"
            + (f" (got {len(text)}: {text!r})" if text else ""),
            code=code,
            hint=f"say why, in a sentence a reader will understand a year from now, e.g. "
            f"\"{what}: try a wider first layer to reduce underfitting\"",
        )
    return text


def suggest(word: str, options: Iterable[str]) -> str | None:
    """The closest of ``options`` to a misspelt ``word``, or None when nothing is close.

    The one did-you-mean rule for every name an agent types (stages, workspaces, slots,
    versions, tags, config keys), so every refusal suggests the same way.
    """
    matches = difflib.get_close_matches(word, sorted(set(options)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the option closest to ``word``, or ``""`` (to prefix a hint)."""
    best = suggest(word, options)
    return f"did you mean {best!r}? " if best else ""
