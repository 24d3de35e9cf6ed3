"""The hash chain that makes the log tamper-evident.

Every stored event's state is ``HEADER \\n DATA`` where DATA is the event's JSON exactly as it
was serialised and HEADER is a small JSON object ``{"v": schema_version, "p": prev, "h": hash}``.
``hash = sha256(prev | stream | version | type | schema_version | DATA)``. Linking happens inside
the event store's write lock, so the chain follows the log's global order and a changed, removed,
inserted or reordered event breaks it at a position that ``verify`` can name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

__all__ = ["GENESIS", "Link", "event_hash", "link_state", "split_state"]

GENESIS = "0" * 64
"""The ``prev`` hash of the first event in a log."""


@dataclass(frozen=True, slots=True)
class Link:
    """The chain fields read back from a stored state."""

    schema_version: int
    prev: str
    hash: str
    data: bytes


def event_hash(
    prev: str, stream: str, version: int, type_name: str, schema_version: int, data: bytes
) -> str:
    """The chain hash of one event given the hash of the event before it."""
    digest = hashlib.sha256()
    digest.update(f"{prev}|{stream}|{version}|{type_name}|{schema_version}|".encode())
    digest.update(data)
    return digest.hexdigest()


def link_state(
    prev: str, stream: str, version: int, type_name: str, schema_version: int, data: bytes
) -> tuple[bytes, str]:
    """Build the stored state for an event placed after ``prev``; returns (state, its hash)."""
    h = event_hash(prev, stream, version, type_name, schema_version, data)
    header = f'{{"v":{schema_version},"p":"{prev}","h":"{h}"}}\n'.encode()
    return header + data, h


def split_state(state: bytes) -> Link:
    """Parse a stored state back into its chain fields and the event's JSON bytes.

    Raises ``ValueError`` if the state has no valid header.
    """
    newline = state.find(b"\n")
    if newline < 0:
        raise ValueError("stored state has no chain header")
    header = json.loads(state[:newline])
    if not isinstance(header, dict):
        raise ValueError("stored state header is not an object")
    return Link(int(header["v"]), str(header["p"]), str(header["h"]), state[newline + 1 :])
