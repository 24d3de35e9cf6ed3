"""The ports: small Protocols for everything outside the domain.

Adapters in ``quipu.adapters`` implement them; ``quipu.app.bootstrap`` picks which. Unit tests use
small fakes of these ports, never mocks of Quipu's own code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from quipu.core.messages import Event

__all__ = [
    "BlobStore",
    "Clock",
    "EventStore",
    "Executor",
    "FileFacts",
    "NewEvent",
    "PatternIndex",
    "RunIndex",
    "SlotFiles",
    "SourceFiles",
    "StoredRecord",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended at ``version`` of ``stream`` (optimistic concurrency)."""

    stream: UUID
    version: int
    event: Event


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One stored event, undecoded: its global position, stream, version, type and state."""

    position: int
    stream: UUID
    version: int
    type: str
    state: bytes


class EventStore(Protocol):
    """The one ordered, append-only, hash-chained log."""

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append all events atomically and return their positions.

        Raises ``Conflict(code="concurrency_conflict")`` when any (stream, version) is taken,
        and ``Unavailable`` when storage is locked or unreachable. Either way nothing is written.
        """
        ...

    def load(self, stream: UUID, *, after: int = 0) -> list[StoredRecord]:
        """The events of one stream with a version above ``after``, in version order
        (positions are 0: not needed there)."""
        ...

    def read(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[StoredRecord]:
        """Up to ``limit`` events with ``after < position <= until``, in log order."""
        ...

    def scan(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[tuple[int, str, bytes]]:
        """Like ``read`` but only (position, type, state) straight from the database cursor.

        The fast path for folding projections, which need neither stream ids nor versions.
        """
        ...

    def head(self) -> int:
        """The position of the newest event, 0 for an empty log."""
        ...

    def hash_at(self, position: int) -> str:
        """The chain hash of the newest event at or before ``position`` (positions may have
        gaps), or ``chain.GENESIS`` when there is none.

        What a reader stores beside its position to notice later that the log under it changed
        (an older file restored, a different log put in its place).
        """
        ...

    def wait_for_append(self, *, after: int, timeout: float) -> int:
        """Block until the head is beyond ``after`` or ``timeout`` seconds pass; return the head.

        What followers of the log (the executor, a caller waiting for its runs) use instead of
        polling on a timer. An append through this store wakes the call at once; an append by
        another process or connection wakes it soon after it commits (how soon depends on the
        adapter). A returned head ``<= after`` means the timeout passed with nothing new.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class BlobStore(Protocol):
    """Content-addressed storage for everything too big for the log (sha256 hex digests)."""

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; return their digest. Storing the same bytes twice is a no-op."""
        ...

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file's content; return (digest, size)."""
        ...

    def get_bytes(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; ``NotFound`` if absent.

        Raises ``IntegrityFailure(code="blob_corrupt")`` when the stored bytes do not hash to
        ``digest``.
        """
        ...

    def verify(self, digest: str) -> None:
        """Check the stored bytes against ``digest``: ``NotFound`` or ``blob_corrupt`` if not."""
        ...

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write the blob to ``dest`` (parents created, replaced atomically).

        The hash is checked while copying: a damaged blob raises ``blob_corrupt`` and leaves
        ``dest`` untouched.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Whether ``digest`` is stored (its content is not read)."""
        ...


class SlotFiles(Protocol):
    """The slot directories agents edit (plain folders, no git)."""

    def snapshot(self, slot: str) -> tuple[str, bytes]:
        """Store every file of the slot as blobs; return (manifest digest, manifest bytes).

        Raises ``InvalidInput(code="symlink_escapes_slot")`` and
        ``Conflict(code="file_vanished")``.
        """
        ...

    def manifest(self, slot: str) -> bytes:
        """The slot's current manifest bytes, without storing anything."""
        ...

    def read_file(self, slot: str, rel: str) -> bytes:
        """The current bytes of one file in the slot."""
        ...

    def restore(self, slot: str, manifest: bytes) -> int:
        """Make the slot exactly the manifest's tree; return how many paths changed."""
        ...

    def is_dirty(self, slot: str, manifest_digest: str | None) -> bool:
        """Whether the slot's files differ from the given manifest (None = empty tree)."""
        ...

    def is_empty(self, slot: str) -> bool:
        """Whether the slot directory is absent or holds no files."""
        ...

    def clear(self, slot: str) -> None:
        """Remove every file from the slot (the directory itself stays)."""
        ...

    def path(self, slot: str) -> Path:
        """Where the slot lives on disk."""
        ...


class Clock(Protocol):
    """Where time comes from (injected so the domain stays deterministic)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Executor(Protocol):
    """Runs queued stages: follows the log in the background and answers with run events.

    Built by ``quipu.app.bootstrap`` from ``quipu.yaml`` (the local-process executor by default)
    and started by ``quipu serve`` / ``quipu worker``. It claims queued runs (exactly one
    executor wins a claim), launches them, records heartbeats, metrics, exits and outputs, and
    applies every state's deadline (the supervisor).
    """

    def start(self) -> None:
        """Begin following the log in a background thread."""
        ...

    def stop(self) -> None:
        """Stop following the log and wait for the thread (stage processes keep running)."""
        ...


class RunIndex(Protocol):
    """Read-side facts run commands need across runs (served by the runs view).

    A command that uses one records what it chose in its event (an input's ``via`` and run id,
    a finalized run's comparison), so replaying the log never depends on a projection.
    """

    def latest_output(self, workspace: str, stage: str, signal: str) -> str | None:
        """The newest succeeded, not-bad run of ``stage`` that produced ``signal``."""
        ...

    def previous_finalized(self, workspace: str, stage: str, metric: str,
                           exclude: str) -> tuple[str, float] | None:
        """(run_id, value) of the newest finalized run of the stage with a value."""
        ...

    def best(self, workspace: str, stage: str, metric: str, exclude: str, *,
             direction: str) -> tuple[str, float] | None:
        """(run_id, value) of the stage's reference result: the newest finalized run tagged
        ``best*``, else the best finalized value so far by ``direction`` (``maximize`` or
        ``minimize``). Values of runs that did not run to their end never count."""
        ...


class PatternIndex(Protocol):
    """The approved failure patterns, asked by the reviewers and the monitor (the views
    implement it). Rows as ``patterns_view.approved`` returns them; build matchers' input with
    ``core.patterns.detection.ApprovedPattern.from_row``."""

    def approved_patterns(self, *, stage: str | None = None) -> list[dict[str, Any]]:
        """Approved patterns that apply to ``stage`` (every approved one when None)."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state as of ``version`` of its stream (a cache, never a record).

    ``last_hash`` is the chain hash of the event at ``version``: the snapshot is valid only while
    the log holds that very event there. ``schema`` is the aggregate's ``SNAPSHOT_SCHEMA``; a
    snapshot of another schema is ignored.
    """

    stream: UUID
    kind: str
    schema: int
    version: int
    last_hash: str
    state: bytes


class SnapshotStore(Protocol):
    """Where aggregate snapshots are cached (per machine; losing them only costs a replay)."""

    def get(self, stream: UUID) -> Snapshot | None:
        """The newest snapshot of ``stream``, or None."""
        ...

    def put(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the stream's newest (replacing an older one)."""
        ...

    def discard(self, stream: UUID) -> None:
        """Forget the stream's snapshot (it no longer matches the log)."""
        ...

    def close(self) -> None:
        """Release files or connections."""
        ...


@dataclass(frozen=True)
class FileFacts:
    """What a source file is, read from its headers without loading its data.

    ``arrays``: each array's name -> (shape, dtype name, dtype str), for npy (one array, named
    ``""``) and npz; ``columns``/``rows``: a csv's header and data row count; ``ragged``: the
    line number and field count of the first csv row whose field count differs from the
    header's; ``unreadable``: why the file is not the format it was said to be (then the format
    facts are None).
    """

    path: str
    size: int
    sha256: str
    arrays: dict[str, tuple[tuple[int, ...], str, str]] | None = None
    columns: list[str] | None = None
    rows: int | None = None
    ragged: tuple[int, int] | None = None
    unreadable: str | None = None


class SourceFiles(Protocol):
    """The local files sources point at: resolved, hashed and described from their headers."""

    def realpath(self, path: str) -> str:
        """``path`` with every symlink resolved (absolute)."""
        ...

    def describe(self, path: str, *, fmt: str, delimiter: str | None = None) -> FileFacts:
        """Size, sha256 and the format's facts of the regular file at ``path``.

        Raises ``NotFound(source_file_missing)`` when nothing is there and
        ``InvalidInput(source_not_a_file)`` when it is not a regular file.
        """
        ...

    def digest(self, path: str) -> tuple[str, int]:
        """(sha256, size) of the file now; ``NotFound(source_file_missing)`` if it is gone."""
        ...

    def describe_blob(self, digest: str, *, fmt: str,
                      delimiter: str | None = None) -> FileFacts:
        """``describe`` of a blob in the blob store, read in place (a promoted artifact);
        ``NotFound(unknown_blob)`` when the store does not hold it."""
        ...
