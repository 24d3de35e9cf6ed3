"""From a run that went wrong to pattern occurrences: pure, deterministic, deduplicated.

An occurrence is one finding (or the run's error, or one of its exit problems) of a run that
ended failed, crashed or stopped, or that review blocked. Two occurrences are the same pattern
when their ``key`` is equal: the signal, who found it, the stage, and the message normalised
so that what differs from run to run (numbers, ids, hashes, quoted values, paths' run
directories) does not split them. The pattern id is derived from the key, so every follower
that sees the same failure names the same pattern stream, and a race between two of them is
an ordinary optimistic-concurrency conflict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PROPOSED_FROM", "Occurrence", "normalise", "occurrences", "pattern_id",
           "pattern_key"]

PROPOSED_FROM = ("warning", "error")
"""Finding severities that make a candidate (``info`` is context, not a failure)."""
MAX_PER_RUN = 10
"""Occurrences taken from one run at most (the most severe first): a run with fifty
findings is one failure, not fifty patterns."""

_HEX = re.compile(r"\b[0-9a-f]{8,}\b", re.IGNORECASE)
_RUN_ID = re.compile(r"\b(?:run|r|pr|pipe)-[0-9a-z]{4,}\b", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\"")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def normalise(message: str) -> str:
    """``message`` with what varies between runs replaced: run ids and hex digests by
    ``<id>``, quoted values by ``<q>``, numbers by ``<n>``; lower case, spaces collapsed,
    at most 300 characters."""
    text = _RUN_ID.sub("<id>", message)
    text = _HEX.sub("<id>", text)
    text = _QUOTED.sub("<q>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACE.sub(" ", text).strip().lower()[:300]


def pattern_key(signal: str, source: str, stage: str | None, message: str) -> str:
    """The deduplication key: ``signal|source|stage|normalised message``."""
    return f"{signal}|{source}|{stage or '*'}|{normalise(message)}"


def pattern_id(key: str) -> str:
    """The stable id of the pattern with ``key``: ``pat-`` and 12 hex digits of its sha256."""
    return "pat-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Occurrence:
    """One observation of a run that went wrong, ready to propose or count."""

    key: str
    signal: str
    source: str
    stage: str | None
    symptom: str
    severity: str
    prevention: str | None
    finding: dict[str, Any]

    @property
    def pattern_id(self) -> str:
        """The id of the pattern this occurrence belongs to."""
        return pattern_id(self.key)


_RANK = {"info": 0, "warning": 1, "error": 2}


def _of(finding: Mapping[str, Any], stage: str | None) -> Occurrence | None:
    signal, source = finding.get("signal"), finding.get("source")
    message, severity = finding.get("message"), finding.get("severity")
    if not (isinstance(signal, str) and isinstance(source, str) and isinstance(message, str)):
        return None
    if severity not in PROPOSED_FROM or finding.get("pattern_id"):
        # Info is context; a finding made BY a pattern is that pattern seen again, which the
        # checker that made it reports on its own.
        return None
    where = finding.get("stage") if isinstance(finding.get("stage"), str) else stage
    fix = finding.get("fix")
    return Occurrence(key=pattern_key(signal, source, where, message), signal=signal,
                      source=source, stage=where, symptom=message[:500], severity=severity,
                      prevention=fix if isinstance(fix, str) else None,
                      finding=dict(finding))


def occurrences(*, stage: str | None, findings: Iterable[Mapping[str, Any]],
                error: str | None = None, problems: Iterable[str] = ()) -> list[Occurrence]:
    """The distinct occurrences of one run: its findings (warning and error), the exception
    that ended it, and each exit problem, most severe first, at most ``MAX_PER_RUN``.

    Exit problems count only when the stage did not raise: a stage that raised did not write
    its outputs because it raised, and that is one failure, not two."""
    found: dict[str, Occurrence] = {}
    extra: list[dict[str, Any]] = []
    if error:
        extra.append({"signal": "stage_error", "source": "executor", "severity": "error",
                      "message": error[:500], "stage": stage})
    for problem in () if error else problems:
        extra.append({"signal": "exit_problem", "source": "executor", "severity": "error",
                      "message": str(problem)[:500], "stage": stage})
    for raw in [*findings, *extra]:
        occurrence = _of(raw, stage)
        if occurrence is not None and occurrence.key not in found:
            found[occurrence.key] = occurrence
    ranked = sorted(found.values(), key=lambda o: -_RANK[o.severity])
    return ranked[:MAX_PER_RUN]
