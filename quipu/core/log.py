"""Turning events into stored bytes and back, and checking the chain.

Pure functions shared by every event store adapter and by ``audit verify``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID, uuid5

from quipu.core.messages import Event, decode_event

from .chain import GENESIS, event_hash, split_state
from .ports import StoredRecord

__all__ = [
    "ChainBreak",
    "Recorded",
    "decode",
    "encode_data",
    "stream_id",
    "verify_chain",
]

_NAMESPACE = UUID("6d1f1b52-2f8c-4f7e-9b0e-2b0a8f4b7c11")


def stream_id(kind: str, name: str) -> UUID:
    """The stable stream (aggregate) id for a named thing, e.g. ``stream_id("workspace", "w")``."""
    return uuid5(_NAMESPACE, f"{kind}:{name}")


def encode_data(event: Event) -> bytes:
    """The event's JSON as it is stored (and hashed)."""
    return event.model_dump_json().encode()


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decoded event with its place in the log."""

    position: int
    stream: UUID
    version: int
    event: Event


def decode(record: StoredRecord) -> Recorded:
    """Decode one stored record into its current event model (upcasting old versions)."""
    link = split_state(record.state)
    event = decode_event(record.type, link.schema_version, json.loads(link.data))
    return Recorded(record.position, record.stream, record.version, event)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where and why the chain stops matching."""

    position: int
    problem: str


def verify_chain(
    records: Iterable[StoredRecord], *, prev: str = GENESIS
) -> Iterator[tuple[StoredRecord, str] | ChainBreak]:
    """Walk records in log order; yield (record, its hash) or the first ChainBreak, then stop."""
    for record in records:
        try:
            link = split_state(record.state)
        except (ValueError, KeyError) as exc:
            yield ChainBreak(record.position, f"unreadable chain header ({exc})")
            return
        if link.prev != prev:
            yield ChainBreak(
                record.position,
                "does not follow the event before it: an event was removed, inserted or "
                "reordered here",
            )
            return
        expected = event_hash(
            prev, record.stream.hex, record.version, record.type, link.schema_version, link.data
        )
        if expected != link.hash:
            yield ChainBreak(record.position, "content does not match its hash: it was modified")
            return
        prev = link.hash
        yield record, prev
