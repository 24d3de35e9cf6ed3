"""``verify_log`` catches every kind of tampering with a real log, at the exact position.

Each test writes a real log through the store, then edits the table behind the store's back with
a plain database connection (sqlite3 or psycopg), the way an attacker or a bad migration would,
and checks the audit names the first bad position. Runs on a SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from psycopg import sql

from quipu.adapters.eventstore import open_memory_store, open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.adapters.seals import open_local_seals
from quipu.core.audit import Seal, make_seal, verify_log
from quipu.core.chain import event_hash, split_state
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput
from quipu.core.log import decode, encode_data
from quipu.core.ports import NewEvent
from quipu.core.project.events import ThoughtLogged
from quipu.projections import Views

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
EVENTS = 20
PAGE = 3  # small pages, so breaks also land on page boundaries and prev carries across pages

MODIFIED = "does not match its hash"
OUT_OF_PLACE = "does not follow the event before it"
TRUNCATED = "log truncated or rewritten before sealed position"
RENUMBERED = "does not match its hash: it was modified or renumbered"


def thought(text: str) -> ThoughtLogged:
    return ThoughtLogged(actor="agent-1", reason="tamper test", at=AT, thought=text)


@dataclass(frozen=True)
class Row:
    """One raw row of the events table; ``position`` is rowid / notification_id."""

    position: int
    stream: uuid.UUID
    version: int
    topic: str
    state: bytes


class RawLog(Protocol):
    """Direct access to the events table, bypassing the store."""

    def rows(self) -> list[Row]: ...
    def update(self, row: Row) -> None: ...
    def delete(self, *positions: int) -> None: ...
    def insert(self, row: Row) -> None: ...
    def shift_up(self, from_position: int) -> None: ...
    def renumber(self, from_position: int, by: int) -> None: ...
    def set_state(self, position: int, value: object) -> None: ...


class SQLiteRaw:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def rows(self) -> list[Row]:
        cur = self.conn.execute("SELECT rowid, originator_id, originator_version, topic, state "
                                "FROM stored_events ORDER BY rowid")
        return [Row(p, uuid.UUID(hex=s), v, t, bytes(st)) for p, s, v, t, st in cur]

    def update(self, row: Row) -> None:
        self.conn.execute(
            "UPDATE stored_events SET originator_id=?, originator_version=?, topic=?, state=? "
            "WHERE rowid=?", (row.stream.hex, row.version, row.topic, row.state, row.position))

    def delete(self, *positions: int) -> None:
        for p in positions:
            self.conn.execute("DELETE FROM stored_events WHERE rowid=?", (p,))

    def insert(self, row: Row) -> None:
        self.conn.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)", (row.position, row.stream.hex, row.version, row.topic,
                                       row.state))

    def shift_up(self, from_position: int) -> None:
        # Two steps so no intermediate rowid collides.
        self.conn.execute("UPDATE stored_events SET rowid = rowid + 1000000 WHERE rowid >= ?",
                          (from_position,))
        self.conn.execute("UPDATE stored_events SET rowid = rowid - 999999 WHERE rowid >= ?",
                          (from_position + 1000000,))

    def renumber(self, from_position: int, by: int) -> None:
        # Via a far range, so no intermediate rowid collides; order is kept.
        self.conn.execute("UPDATE stored_events SET rowid = rowid + 1000000 WHERE rowid >= ?",
                          (from_position,))
        self.conn.execute("UPDATE stored_events SET rowid = rowid - 1000000 + ? WHERE rowid >= ?",
                          (by, 1000000 + from_position))

    def set_state(self, position: int, value: object) -> None:
        self.conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (value, position))

    def close(self) -> None:
        self.conn.close()


class PostgresRaw:
    def __init__(self, url: str, table: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.table = sql.Identifier(table)

    def _run(self, query: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql.SQL(query).format(t=self.table), params)

    def rows(self) -> list[Row]:
        cur = self._run("SELECT notification_id, originator_id, originator_version, topic, state "
                        "FROM {t} ORDER BY notification_id")
        return [Row(p, s, v, t, bytes(st)) for p, s, v, t, st in cur.fetchall()]

    def update(self, row: Row) -> None:
        self._run("UPDATE {t} SET originator_id=%s, originator_version=%s, topic=%s, state=%s "
                  "WHERE notification_id=%s",
                  (row.stream, row.version, row.topic, row.state, row.position))

    def delete(self, *positions: int) -> None:
        for p in positions:
            self._run("DELETE FROM {t} WHERE notification_id=%s", (p,))

    def insert(self, row: Row) -> None:
        self._run("INSERT INTO {t} (notification_id, originator_id, originator_version, topic, "
                  "state) VALUES (%s, %s, %s, %s, %s)",
                  (row.position, row.stream, row.version, row.topic, row.state))

    def shift_up(self, from_position: int) -> None:
        self._run("UPDATE {t} SET notification_id = notification_id + 1000000 "
                  "WHERE notification_id >= %s", (from_position,))
        self._run("UPDATE {t} SET notification_id = notification_id - 999999 "
                  "WHERE notification_id >= %s", (from_position + 1000000,))

    def renumber(self, from_position: int, by: int) -> None:
        self._run("UPDATE {t} SET notification_id = notification_id + 1000000 "
                  "WHERE notification_id >= %s", (from_position,))
        self._run("UPDATE {t} SET notification_id = notification_id - 1000000 + %s "
                  "WHERE notification_id >= %s", (by, 1000000 + from_position))

    def set_state(self, position: int, value: object) -> None:
        if isinstance(value, str):  # a bytea column only takes text through an explicit cast
            self._run("UPDATE {t} SET state = convert_to(%s, 'UTF8') WHERE notification_id = %s",
                      (value, position))
        else:
            self._run("UPDATE {t} SET state = %s WHERE notification_id = %s", (value, position))

    def close(self) -> None:
        self.conn.close()


@dataclass
class Log:
    store: RecorderEventStore
    raw: RawLog

    def row(self, position: int) -> Row:
        return next(r for r in self.raw.rows() if r.position == position)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    """A log of 20 events over three streams, with raw access to its table."""
    raw: SQLiteRaw | PostgresRaw
    if request.param == "sqlite":
        store = open_sqlite_store(tmp_path / "events.db")
        raw = SQLiteRaw(tmp_path / "events.db")
    else:
        table = f"quipu_test_{uuid.uuid4().hex[:12]}"
        store = request.getfixturevalue("pg_store")(table)
        raw = PostgresRaw(request.getfixturevalue("postgres_url"), table)
    streams = [uuid.uuid4() for _ in range(3)]
    versions = dict.fromkeys(streams, 0)
    n = 0
    while n < EVENTS:  # batches of 1, 2, 3, ... so the log mixes single and multi-event appends
        batch = []
        for _ in range(min(n % 3 + 1, EVENTS - n)):
            stream = streams[n % 3]
            versions[stream] += 1
            batch.append(NewEvent(stream, versions[stream], thought(f"event {n + 1}")))
            n += 1
        store.append(batch)
    assert [r.position for r in raw.rows()] == list(range(1, EVENTS + 1))
    yield Log(store, raw)
    raw.close()
    store.close()


def forged_row(log: Log, position: int, *, honest_hash: bool) -> Row:
    """A new event at ``position`` whose header chains it after the event at ``position - 1``.

    With ``honest_hash`` the forger computed the hash over the forged content correctly;
    otherwise the header holds a plausible 64-hex hash that does not match the content.
    """
    prev = split_state(log.row(position - 1).state).hash
    stream, version = uuid.uuid4(), 1
    event = thought("forged: the baseline was never run")
    data = encode_data(event)
    h = (event_hash(prev, stream.hex, version, event.TYPE, event.SCHEMA_VERSION, data,
                    position=position)
         if honest_hash else prev[::-1])
    header = json.dumps({"v": event.SCHEMA_VERSION, "f": 2, "p": prev, "h": h},
                        separators=(",", ":")).encode()
    return Row(position, stream, version, event.TYPE, header + b"\n" + data)


def assert_bad_at(log: Log, position: int, problem: str, seals: tuple[Seal, ...] = ()) -> None:
    report = verify_log(log.store, seals, page=PAGE)
    assert report.ok is False
    assert report.first_bad_position == position
    assert report.problem is not None and problem in report.problem


# --- an untouched log --------------------------------------------------------------------------


@pytest.mark.parametrize("page", [1, PAGE, 5000])
def test_an_untampered_log_verifies(log: Log, page: int) -> None:
    seen: list[int] = []
    seal = make_seal(log.store, NOW)
    report = verify_log(log.store, [seal], page=page, progress=seen.append)
    assert report.ok is True
    assert (report.events_checked, report.head_position) == (EVENTS, EVENTS)
    assert report.head_hash == split_state(log.row(EVENTS).state).hash == seal.hash
    assert (report.first_bad_position, report.problem) == (None, None)
    assert seen == sorted(seen) and seen[-1] == EVENTS


# --- (a) modified ------------------------------------------------------------------------------


def test_a_modified_event_is_reported_at_its_position(log: Log) -> None:
    row = log.row(7)
    log.raw.update(replace(row, state=row.state.replace(b"event 7", b"event 8")))
    assert_bad_at(log, 7, MODIFIED)


def test_a_single_flipped_byte_is_reported_at_its_position(log: Log) -> None:
    row = log.row(13)
    state = bytearray(row.state)
    state[-3] ^= 0x01
    log.raw.update(replace(row, state=bytes(state)))
    assert_bad_at(log, 13, MODIFIED)


def test_moving_an_event_to_another_stream_or_version_is_reported(log: Log) -> None:
    row = log.row(4)
    log.raw.update(replace(row, version=row.version + 100))
    assert_bad_at(log, 4, MODIFIED)


def test_a_destroyed_chain_header_is_reported_at_its_position(log: Log) -> None:
    row = log.row(9)
    log.raw.update(replace(row, state=row.state.split(b"\n", 1)[1]))
    assert_bad_at(log, 9, "chain header")


# --- (b) deleted -------------------------------------------------------------------------------


def test_a_deleted_middle_event_is_reported_at_the_event_after_it(log: Log) -> None:
    log.raw.delete(10)
    assert_bad_at(log, 11, OUT_OF_PLACE)


def test_a_deleted_first_event_is_reported_at_the_new_first_event(log: Log) -> None:
    log.raw.delete(1)
    assert_bad_at(log, 2, OUT_OF_PLACE)


# --- (c) inserted ------------------------------------------------------------------------------


def test_a_forged_event_inserted_in_the_middle_is_reported_at_its_position(log: Log) -> None:
    forged = forged_row(log, 10, honest_hash=False)
    log.raw.shift_up(10)
    log.raw.insert(forged)
    assert_bad_at(log, 10, MODIFIED)


def test_a_forged_event_with_a_correct_hash_breaks_the_chain_right_after_it(log: Log) -> None:
    """A self-consistent forgery can't be told apart alone; the real event after it can."""
    forged = forged_row(log, 10, honest_hash=True)
    log.raw.shift_up(10)
    log.raw.insert(forged)
    assert_bad_at(log, 11, OUT_OF_PLACE)


def test_a_forged_event_in_a_gap_left_by_a_deleted_one_is_reported(log: Log) -> None:
    forged = forged_row(log, 6, honest_hash=False)
    log.raw.delete(6)
    log.raw.insert(forged)
    assert_bad_at(log, 6, MODIFIED)


def test_a_forged_event_appended_with_a_wrong_hash_is_reported(log: Log) -> None:
    log.raw.insert(forged_row(log, EVENTS + 1, honest_hash=False))
    assert_bad_at(log, EVENTS + 1, MODIFIED)


# --- (d) reordered -----------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [(5, 12), (8, 9), (1, EVENTS)])
def test_swapped_events_are_reported_at_the_earlier_position(
    log: Log, first: int, second: int
) -> None:
    a, b = log.row(first), log.row(second)
    log.raw.delete(first, second)
    log.raw.insert(replace(b, position=first))
    log.raw.insert(replace(a, position=second))
    assert_bad_at(log, first, OUT_OF_PLACE)


# --- (e) renumbered ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", [1000, 1])
def test_renumbering_every_position_is_reported_at_the_first_event(log: Log, by: int) -> None:
    """Order and content stay, only positions move: each link hashes its position."""
    log.raw.renumber(1, by)
    assert [r.position for r in log.raw.rows()] == list(range(1 + by, EVENTS + 1 + by))
    assert_bad_at(log, 1 + by, RENUMBERED)


def test_renumbering_the_tail_is_reported_at_the_first_moved_event(log: Log) -> None:
    log.raw.renumber(12, 5)
    assert_bad_at(log, 17, RENUMBERED)


def test_an_old_format_link_after_a_new_one_is_reported(log: Log) -> None:
    """Downgrading a link to format 1 (which ignores positions) is itself a break."""
    row = log.row(EVENTS)
    link = split_state(row.state)
    event = json.loads(link.data)
    h = event_hash(link.prev, row.stream.hex, row.version, row.topic, link.schema_version,
                   link.data)
    header = json.dumps({"v": link.schema_version, "p": link.prev, "h": h},
                        separators=(",", ":")).encode()
    assert event["thought"] == f"event {EVENTS}"
    log.raw.update(replace(row, state=header + b"\n" + link.data))
    assert_bad_at(log, EVENTS, "link format 1 after an event in format 2")


# --- (f) a stored state that is not bytes ------------------------------------------------------


@pytest.mark.parametrize(("value", "found"), [(None, "NULL"), ("a text state", "TEXT")])
def test_a_state_that_is_not_bytes_is_reported_at_its_position(
    log: Log, value: object, found: str
) -> None:
    log.raw.set_state(7, value)
    if isinstance(log.raw, PostgresRaw) and found == "TEXT":
        found = "chain header"  # a bytea column turns text into bytes: a header-less state
    assert_bad_at(log, 7, found)
    assert verify_log(log.store, page=1).first_bad_position == 7
    assert verify_log(log.store, page=7).first_bad_position == 7  # the bad row ends a page


@pytest.mark.parametrize("value", [None, "a text state"])
def test_rebuilding_views_over_a_state_that_is_not_bytes_refuses_naming_it(
    log: Log, value: object, tmp_path: Path
) -> None:
    log.raw.set_state(7, value)
    views = Views(tmp_path / "views.db", log.store)
    try:
        with pytest.raises(IntegrityFailure) as caught:
            views.rebuild()
    finally:
        views.close()
    assert "position 7" in caught.value.message
    assert "quipu audit verify" in caught.value.hint


def test_loading_a_stream_with_a_null_state_is_an_integrity_failure(log: Log) -> None:
    row = log.row(7)
    log.raw.set_state(7, None)
    with pytest.raises(IntegrityFailure) as caught:
        log.store.load(row.stream)
    assert caught.value.code == "state_unreadable" and "position 7" in caught.value.message


# --- a log written before positions were chained ----------------------------------------------

V1_FIXTURE = Path(__file__).parent.parent / "fixtures" / "events_chain_v1.db"
V1_EVENTS = 9  # written by the format-1 code (commit 5a53a58), see tests/fixtures/README.md


@pytest.fixture
def old_log(tmp_path: Path) -> Iterator[Log]:
    """A copy of a real SQLite log written in link format 1, plus 4 events appended now."""
    path = tmp_path / "events.db"
    shutil.copyfile(V1_FIXTURE, path)
    store = open_sqlite_store(path)
    raw = SQLiteRaw(path)
    assert {split_state(r.state).format for r in raw.rows()} == {1}
    stream = uuid.uuid4()
    store.append([NewEvent(stream, 1, thought("new 1")), NewEvent(stream, 2, thought("new 2"))])
    store.append([NewEvent(stream, 3, thought("new 3"))])
    store.append([NewEvent(stream, 4, thought("new 4"))])
    yield Log(store, raw)
    raw.close()
    store.close()


def test_a_log_mixing_old_and_new_link_formats_verifies(old_log: Log) -> None:
    rows = old_log.raw.rows()
    assert [split_state(r.state).format for r in rows] == [1] * V1_EVENTS + [2] * 4
    report = verify_log(old_log.store, [make_seal(old_log.store, NOW)], page=PAGE)
    assert (report.ok, report.events_checked) == (True, V1_EVENTS + 4)
    assert [decode(r).event.thought for r in old_log.store.read()] == (  # type: ignore[attr-defined]
        [f"old event {n}" for n in range(1, V1_EVENTS + 1)] + [f"new {n}" for n in range(1, 5)])


def test_renumbering_a_mixed_log_is_reported_at_the_first_new_format_event(
    old_log: Log,
) -> None:
    """Format-1 events never covered their positions; the first format-2 one does."""
    old_log.raw.renumber(1, 100)
    assert_bad_at(old_log, V1_EVENTS + 1 + 100, RENUMBERED)


def test_an_old_format_event_modified_is_still_reported(old_log: Log) -> None:
    row = old_log.row(4)
    old_log.raw.update(replace(row, state=row.state.replace(b"old event 4", b"old event X")))
    assert_bad_at(old_log, 4, "content does not match its hash: it was modified")


# --- (e) truncated -----------------------------------------------------------------------------


def test_truncation_is_invisible_to_the_chain_alone_but_caught_by_a_seal(
    log: Log, tmp_path: Path
) -> None:
    keeper = open_local_seals(tmp_path / ".quipu" / "seals.jsonl")
    keeper.append(make_seal(log.store, NOW))
    log.raw.delete(18, 19, 20)

    unsealed = verify_log(log.store, page=PAGE)
    assert unsealed.ok and unsealed.head_position == 17  # why seals exist

    report = verify_log(log.store, keeper.read_all(), page=PAGE)
    assert (report.ok, report.first_bad_position, report.events_checked) == (False, EVENTS, 17)
    assert report.problem == f"{TRUNCATED} {EVENTS}"


def test_truncation_then_new_appends_is_caught_by_the_seal(log: Log) -> None:
    seal = make_seal(log.store, NOW)
    log.raw.delete(16, 17, 18, 19, 20)
    stream = uuid.uuid4()
    log.store.append([NewEvent(stream, v, thought(f"rewritten {v}")) for v in range(1, 7)])
    assert verify_log(log.store, page=PAGE).ok  # a rewritten tail is a valid chain...
    assert_bad_at(log, EVENTS, TRUNCATED, (seal,))  # ...that no longer matches the seal


def test_the_earliest_failing_seal_is_reported(log: Log) -> None:
    early = make_seal(log.store, NOW)
    log.store.append([NewEvent(uuid.uuid4(), 1, thought("later"))])
    late = make_seal(log.store, NOW)
    log.raw.delete(EVENTS + 1)
    report = verify_log(log.store, [late, early], page=PAGE)
    assert (report.first_bad_position, report.problem) == (EVENTS + 1,
                                                            f"{TRUNCATED} {EVENTS + 1}")
    log.raw.delete(EVENTS)
    assert_bad_at(log, EVENTS, TRUNCATED, (late, early))


def test_a_chain_break_before_a_failing_seal_wins(log: Log) -> None:
    seal = make_seal(log.store, NOW)
    row = log.row(5)
    log.raw.update(replace(row, state=row.state.replace(b"event 5", b"event X")))
    log.raw.delete(EVENTS)
    assert_bad_at(log, 5, MODIFIED, (seal,))


# --- sealing and the seal file -----------------------------------------------------------------


def test_sealing_an_empty_log_is_refused() -> None:
    with pytest.raises(Conflict) as caught:
        make_seal(open_memory_store(), NOW)
    assert caught.value.code == "log_empty"


def test_sealing_a_modified_head_is_refused(log: Log) -> None:
    row = log.row(EVENTS)
    log.raw.update(replace(row, state=row.state.replace(b"event 20", b"event 21")))
    with pytest.raises(IntegrityFailure) as caught:
        make_seal(log.store, NOW)
    assert caught.value.code == "chain_broken"


def test_a_seal_needs_a_timezone_aware_time(log: Log) -> None:
    with pytest.raises(InvalidInput):
        make_seal(log.store, NOW.replace(tzinfo=None))


def test_seals_round_trip_through_the_seal_file(tmp_path: Path) -> None:
    keeper = open_local_seals(tmp_path / "nested" / "seals.jsonl")
    assert keeper.read_all() == []
    seals = [Seal(3, "a" * 64, NOW.isoformat()), Seal(9, "b" * 64, NOW.isoformat())]
    for seal in seals:
        keeper.append(seal)
    assert open_local_seals(tmp_path / "nested" / "seals.jsonl").read_all() == seals
    assert len((tmp_path / "nested" / "seals.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"position": 3, "hash": "', "not JSON"),
        ('{"position": 3, "hash": "' + "a" * 64 + '"}', "keys"),
        ('{"position": 0, "hash": "' + "a" * 64 + '", "at": "x"}', "position"),
        ('{"position": "3", "hash": "' + "a" * 64 + '", "at": "x"}', "position"),
        ('{"position": 3, "hash": "xyz", "at": "x"}', "hash"),
        ('[1, 2, 3]', "keys"),
    ],
)
def test_a_malformed_seal_file_is_invalid_input_naming_the_line(
    tmp_path: Path, line: str, why: str
) -> None:
    path = tmp_path / "seals.jsonl"
    keeper = open_local_seals(path)
    keeper.append(Seal(1, "c" * 64, NOW.isoformat()))
    with path.open("a") as fh:
        fh.write(line + "\n")
    with pytest.raises(InvalidInput) as caught:
        keeper.read_all()
    assert caught.value.code == "malformed_seal_file"
    assert "line 2" in caught.value.message and why in caught.value.message
    assert "line 2" in caught.value.hint

