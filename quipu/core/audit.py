"""Auditing the log: verify the whole hash chain and check it against seals.

The chain (``core.chain``) shows that no event was changed, removed, inserted or reordered
*inside* the log, but on its own it cannot show that the newest events were cut off: a shorter
chain is still a valid chain. A :class:`Seal` closes that hole. It is the head position and its
chain hash, recorded somewhere else (a file, another machine); if the event at a sealed position
is missing or has a different hash, the log was truncated or rewritten after the seal was made.

Everything here works over the ``EventStore`` port only: no files, no clock (the caller passes
``now``), so the same audit runs on SQLite, PostgreSQL and the in-memory store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .chain import UnreadableState, split_state
from .errors import Conflict, IntegrityFailure, InvalidInput
from .log import ChainBreak, ChainVerifier, verify_chain
from .ports import EventStore, StoredRecord

__all__ = ["AuditReport", "Seal", "make_seal", "verify_log"]


@dataclass(frozen=True, slots=True)
class Seal:
    """The log's head at one moment: its position, its chain hash and when it was taken."""

    position: int
    hash: str
    at: str
    """ISO 8601 timestamp of when the seal was made."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``verify_log`` found.

    ``head_position`` and ``head_hash`` describe the last event whose chain verified: the log's
    head when ``ok`` (0 and the genesis hash for an empty log or a break at the first event).
    ``first_bad_position`` is the lowest position known to be wrong. ``keyed_links`` counts the
    verified events that carry a key MAC and ``key_checked`` says whether those MACs were checked
    against a key (False when the log is keyed but no key was given: then only the plain chain
    was verified and events appended after the last seal by someone without the key are not
    ruled out).
    """

    ok: bool
    events_checked: int
    head_position: int
    head_hash: str
    first_bad_position: int | None
    problem: str | None
    keyed_links: int = 0
    key_checked: bool = False


def make_seal(store: EventStore, now: datetime) -> Seal:
    """Seal the log's current head so a later audit can detect truncation or rewriting.

    Checks that the head event's content still matches its own hash (cheap); run
    ``verify_log`` first to be sure the whole log is sound before trusting it to a seal.
    Raises ``Conflict(code="log_empty")`` when there is nothing to seal and
    ``IntegrityFailure`` when the head event does not match its hash.
    """
    if now.tzinfo is None:
        raise InvalidInput(
            "the seal time has no timezone",
            code="naive_datetime",
            hint="pass a timezone-aware UTC datetime (the injected clock gives one)",
        )
    head = store.head()
    records = store.read(after=head - 1, limit=1) if head > 0 else []
    if not records:
        raise Conflict(
            "the log is empty: there is no head to seal",
            code="log_empty",
            hint="seal after the first event has been recorded",
        )
    record = records[0]
    try:
        prev = split_state(record.state).prev
    except (ValueError, KeyError) as exc:
        raise IntegrityFailure(
            f"the head event at position {record.position} has an unreadable chain header",
            code="chain_broken",
            hint="run `quipu audit verify` to find where the log was damaged",
        ) from exc
    for item in verify_chain([record], prev=prev):
        if isinstance(item, ChainBreak):
            raise IntegrityFailure(
                f"the head event at position {record.position} does not match its hash: "
                f"{item.problem}",
                code="chain_broken",
                hint="run `quipu audit verify` to find where the log was damaged",
            )
        return Seal(position=record.position, hash=item[1], at=now.isoformat())
    raise AssertionError("verify_chain yields one item per record")  # pragma: no cover


def verify_log(
    store: EventStore,
    seals: Sequence[Seal] = (),
    page: int = 5000,
    progress: Callable[[int], None] | None = None,
    *,
    key: bytes | None = None,
) -> AuditReport:
    """Walk the whole log, check its hash chain and every seal; name the first bad position.

    The log is read in pages of ``page`` events up to the head it had when the audit started
    (events appended meanwhile are left for the next audit). ``progress`` is called with the
    number of events checked after each page. A chain break is reported at the first event that
    does not verify; a stored row whose state is not bytes (NULL, TEXT) is such a break. A seal
    whose position is missing or holds a different hash is reported as "log truncated or
    rewritten before sealed position N". When both happen the lower position wins, so
    ``first_bad_position`` is always the earliest known damage. With ``key`` (the audit key)
    every key MAC is checked too.
    """
    if page < 1:
        raise InvalidInput("page must be at least 1", code="invalid_page", hint="use e.g. 5000")
    wanted = {seal.position for seal in seals}
    seen: dict[int, str] = {}
    until = store.head()
    verifier = ChainVerifier(key=key)
    last_position = 0
    checked = 0
    chain_break: ChainBreak | None = None
    after = 0
    while chain_break is None and after < until:
        records, damaged = _read_page(store, after, page, until)
        for record in records:
            chain_break = verifier.check(record)
            if chain_break is not None:
                break
            last_position = record.position
            checked += 1
            if record.position in wanted:
                seen[record.position] = verifier.prev
        if chain_break is None and damaged is not None:
            chain_break = damaged
        if not records:
            break
        after = records[-1].position
        if progress is not None:
            progress(checked)

    prev = verifier.prev
    keyed = (verifier.keyed_links, key is not None and verifier.keyed_links > 0)
    bad: list[tuple[int, str]] = []
    if chain_break is not None:
        bad.append((chain_break.position, chain_break.problem))
    limit = chain_break.position if chain_break is not None else None
    for seal in sorted(seals, key=lambda s: s.position):
        if limit is not None and seal.position >= limit:
            break  # past a chain break nothing can be trusted, so the seal adds nothing
        if seen.get(seal.position) != seal.hash:
            bad.append(
                (seal.position,
                 f"log truncated or rewritten before sealed position {seal.position}")
            )
            break  # seals are sorted: the first failing one is the earliest
    if bad:
        position, problem = min(bad)
        return AuditReport(False, checked, last_position, prev, position, problem, *keyed)
    return AuditReport(True, checked, last_position, prev, None, None, *keyed)


def _read_page(
    store: EventStore, after: int, page: int, until: int
) -> tuple[list[StoredRecord], ChainBreak | None]:
    """One page of records; a row whose state is unreadable ends the page as a ChainBreak."""
    try:
        return store.read(after=after, limit=page, until=until), None
    except UnreadableState as exc:
        # The rows before the damaged one are still worth checking: a break among them is
        # earlier, and so is what they tell the seals.
        before = (store.read(after=after, limit=page, until=exc.position - 1)
                  if exc.position - 1 > after else [])
        return before, ChainBreak(
            exc.position, f"stored state is {exc.found}, not bytes: the row was damaged"
        )
