"""Turning events into stored bytes and back, and checking the chain.

Pure functions shared by every event store adapter and by ``audit verify``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID, uuid5

from quipu.core import events as _catalog  # noqa: F401  (registers every event type)
from quipu.core.messages import Event, decode_event

from .chain import GENESIS, event_hash, link_mac, split_state
from .errors import IntegrityFailure
from .ports import StoredRecord

__all__ = [
    "ChainBreak",
    "ChainVerifier",
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
    try:
        link = split_state(record.state)
    except (ValueError, KeyError) as exc:
        where = (f"position {record.position}" if record.position
                 else f"stream {record.stream} version {record.version}")
        raise IntegrityFailure(
            f"the stored event at {where} has an unreadable chain header ({exc})",
            code="chain_broken",
            hint="the log was edited or damaged outside Quipu; run `quipu audit verify` to find "
            "every bad position",
        ) from exc
    event = decode_event(record.type, link.schema_version, json.loads(link.data))
    return Recorded(record.position, record.stream, record.version, event)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where and why the chain stops matching."""

    position: int
    problem: str


class ChainVerifier:
    """Checks stored records one at a time, in log order, carrying what the chain implies.

    Beyond each link's own hash it enforces two rules that span links: the link format never goes
    back (a format-2 event followed by a format-1 one was rewritten to escape the position
    check), and once a link carries a key MAC every later one does (an unkeyed event after keyed
    ones was appended without the audit key). With ``key`` every MAC is checked against it.
    """

    def __init__(self, *, prev: str = GENESIS, key: bytes | None = None) -> None:
        self.prev = prev
        self.key = key
        self.format = 1
        self.keyed_links = 0
        self.first_keyed: int | None = None

    def check(self, record: StoredRecord) -> ChainBreak | None:
        """Verify one record after the ones already checked; a ChainBreak, or None if it holds."""
        try:
            link = split_state(record.state)
        except (ValueError, KeyError) as exc:
            return ChainBreak(record.position, f"unreadable chain header ({exc})")
        if link.prev != self.prev:
            return ChainBreak(
                record.position,
                "does not follow the event before it: an event was removed, inserted or "
                "reordered here",
            )
        if link.format < self.format:
            return ChainBreak(
                record.position,
                f"written in link format {link.format} after an event in format "
                f"{self.format}: it was rewritten in the old format, which does not cover "
                "positions",
            )
        positioned = link.format >= 2
        expected = event_hash(
            self.prev, record.stream.hex, record.version, record.type, link.schema_version,
            link.data, position=record.position if positioned else None,
        )
        if expected != link.hash:
            return ChainBreak(
                record.position,
                "content or position does not match its hash: it was modified or renumbered"
                if positioned else "content does not match its hash: it was modified",
            )
        if link.mac is None:
            if self.keyed_links:
                return ChainBreak(
                    record.position,
                    "carries no key MAC although the events before it do: it was appended "
                    "without the audit key",
                )
        else:
            if self.key is not None and not hmac.compare_digest(
                link.mac, link_mac(self.key, link.hash)
            ):
                return ChainBreak(
                    record.position,
                    "its key MAC does not match the audit key: it was forged or rewritten "
                    "without the key (or the key given is not this log's)",
                )
            self.keyed_links += 1
            if self.first_keyed is None:
                self.first_keyed = record.position
        self.format = link.format
        self.prev = link.hash
        return None


def verify_chain(
    records: Iterable[StoredRecord], *, prev: str = GENESIS, key: bytes | None = None
) -> Iterator[tuple[StoredRecord, str] | ChainBreak]:
    """Walk records in log order; yield (record, its hash) or the first ChainBreak, then stop."""
    verifier = ChainVerifier(prev=prev, key=key)
    for record in records:
        found = verifier.check(record)
        if found is not None:
            yield found
            return
        yield record, verifier.prev
