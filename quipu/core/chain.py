"""The hash chain that makes the log tamper-evident.

Every stored event's state is ``HEADER \\n DATA`` where DATA is the event's JSON exactly as it
was serialised and HEADER is a small JSON object. Linking happens inside the event store's write
lock, so the chain follows the log's global order and a changed, removed, inserted, reordered or
renumbered event breaks it at a position that ``verify`` can name.

Two link formats exist; the header says which one an event was written with, so a log written
before positions were chained still verifies, event by event, with the formula of its time:

- format 1 (header ``{"v":S,"p":PREV,"h":HASH}``, no ``"f"``):
  ``HASH = sha256(PREV|stream|version|type|S|DATA)``. The global position is *not* covered.
- format 2 (header ``{"v":S,"f":2,"p":PREV,"h":HASH}``, optionally ``,"k":MAC``):
  ``HASH = sha256("quipu-chain-2|" PREV|position|stream|version|type|S|DATA)``, so moving an
  event to another position breaks it too. ``MAC = HMAC-SHA256(key, HASH)`` is present when the
  log is written with an audit key kept outside the database (the *keyed chain*): without the key
  nobody can append a link that verifies with it.

``"v"`` stays the first key in every format: readers take a fast path on that prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from .errors import IntegrityFailure

__all__ = [
    "CURRENT_FORMAT",
    "GENESIS",
    "Link",
    "UnreadableState",
    "event_hash",
    "link_mac",
    "link_state",
    "split_state",
    "stored_state",
]

GENESIS = "0" * 64
"""The ``prev`` hash of the first event in a log."""

CURRENT_FORMAT = 2
"""The link format new events are written with (see the module docstring)."""

_KNOWN_FORMATS = (1, 2)


@dataclass(frozen=True, slots=True)
class Link:
    """The chain fields read back from a stored state."""

    schema_version: int
    prev: str
    hash: str
    data: bytes
    format: int = 1
    """Which link formula the hash was computed with (1 = without the position)."""
    mac: str | None = None
    """HMAC-SHA256 of ``hash`` under the audit key, when the log is keyed."""


class UnreadableState(IntegrityFailure):
    """A stored row's state is not bytes (NULL, TEXT, a number): the row was damaged."""

    def __init__(self, position: int, found: str) -> None:
        super().__init__(
            f"the stored event at position {position} has a {found} state instead of bytes",
            code="state_unreadable",
            hint="the log was edited or damaged outside Quipu; run `quipu audit verify` to see "
            "every bad position, then restore the log from a backup",
        )
        self.position = position
        self.found = found


def stored_state(position: int, value: object) -> bytes:
    """The state column of the row at ``position`` as bytes, or ``UnreadableState``.

    Adapters call this on every row they read, so a NULL or TEXT state becomes a typed failure
    naming the position instead of a ``TypeError`` deep inside a fold.
    """
    if type(value) is bytes:
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    found = _SQL_TYPES.get(type(value), type(value).__name__)
    raise UnreadableState(position, found)


_SQL_TYPES: dict[type, str] = {type(None): "NULL", str: "TEXT", int: "INTEGER", float: "REAL"}


def event_hash(
    prev: str,
    stream: str,
    version: int,
    type_name: str,
    schema_version: int,
    data: bytes,
    *,
    position: int | None = None,
) -> str:
    """The chain hash of one event given the hash of the event before it.

    With ``position`` the format-2 formula (which covers the global position); without it the
    format-1 formula, kept only to verify logs written before positions were chained.
    """
    digest = hashlib.sha256()
    if position is None:
        digest.update(f"{prev}|{stream}|{version}|{type_name}|{schema_version}|".encode())
    else:
        digest.update(
            f"quipu-chain-2|{prev}|{position}|{stream}|{version}|{type_name}|{schema_version}|"
            .encode()
        )
    digest.update(data)
    return digest.hexdigest()


def link_mac(key: bytes, link_hash: str) -> str:
    """The keyed-chain MAC of one link: HMAC-SHA256 of its hash under the audit key."""
    return hmac.new(key, link_hash.encode(), hashlib.sha256).hexdigest()


def link_state(
    prev: str,
    stream: str,
    version: int,
    type_name: str,
    schema_version: int,
    data: bytes,
    *,
    position: int,
    key: bytes | None = None,
) -> tuple[bytes, str]:
    """Build the stored (format-2) state of an event at ``position`` after ``prev``.

    Returns (state, its hash). With ``key`` the header also carries the link's MAC.
    """
    h = event_hash(prev, stream, version, type_name, schema_version, data, position=position)
    mac = f',"k":"{link_mac(key, h)}"' if key is not None else ""
    header = f'{{"v":{schema_version},"f":2,"p":"{prev}","h":"{h}"{mac}}}\n'.encode()
    return header + data, h


def split_state(state: bytes) -> Link:
    """Parse a stored state back into its chain fields and the event's JSON bytes.

    Raises ``ValueError`` if the state has no valid header (``KeyError`` if a field is missing).
    """
    if not isinstance(state, bytes):
        raise ValueError(f"stored state is {type(state).__name__}, not bytes")
    newline = state.find(b"\n")
    if newline < 0:
        raise ValueError("stored state has no chain header")
    header = json.loads(state[:newline])
    if not isinstance(header, dict):
        raise ValueError("stored state header is not an object")
    link_format = header.get("f", 1)
    if type(link_format) is not int or link_format not in _KNOWN_FORMATS:
        raise ValueError(f"unknown link format {link_format!r}")
    mac = header.get("k")
    if mac is not None and not isinstance(mac, str):
        raise ValueError("the link's key MAC is not a string")
    return Link(int(header["v"]), str(header["p"]), str(header["h"]), state[newline + 1 :],
                link_format, mac)
