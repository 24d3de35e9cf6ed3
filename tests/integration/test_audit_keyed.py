"""The keyed chain and automatic seals, on real SQLite files and PostgreSQL.

The attacker here has write access to the events table (a plain sqlite3 / psycopg connection)
but not the audit key: they can recompute every plain hash, never a key MAC.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from test_audit_tamper import PostgresRaw, RawLog, Row, SQLiteRaw, thought

from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.seals import AutoSealingStore, open_local_seals
from quipu.app.bootstrap import init_project, open_project, seal_paths
from quipu.core.audit import Seal, verify_log
from quipu.core.chain import event_hash, link_mac, split_state
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput
from quipu.core.log import encode_data
from quipu.core.ports import EventStore, NewEvent

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
EVENTS = 10
NOW = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)


class KeyedLog:
    def __init__(self, open_store: Callable[..., EventStore], raw: RawLog) -> None:
        self.open = open_store
        self.raw = raw
        self.store = open_store(key=KEY)

    def row(self, position: int) -> Row:
        return next(r for r in self.raw.rows() if r.position == position)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def keyed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyedLog]:
    """A log of 10 events written with the audit key."""
    if request.param == "sqlite":
        path = tmp_path / "events.db"
        log = KeyedLog(lambda key=None: open_sqlite_store(path, key=key), SQLiteRaw(path))
    else:
        table = f"quipu_test_{uuid.uuid4().hex[:12]}"
        factory = request.getfixturevalue("pg_store")
        raw = PostgresRaw(request.getfixturevalue("postgres_url"), table)
        log = KeyedLog(lambda key=None: factory(table, key=key), raw)
    stream = uuid.uuid4()
    for version in range(1, EVENTS + 1):
        log.store.append([NewEvent(stream, version, thought(f"event {version}"))])
    yield log
    log.raw.close()  # type: ignore[attr-defined]
    log.store.close()


def forge(log: KeyedLog, position: int, *, mac: str | None, prev: str | None = None) -> Row:
    """A format-2 event at ``position`` with an honest plain hash, as a keyless attacker makes."""
    prev = prev if prev is not None else split_state(log.row(position - 1).state).hash
    stream, version = uuid.uuid4(), 1
    event = thought("forged after the last seal")
    data = encode_data(event)
    h = event_hash(prev, stream.hex, version, event.TYPE, event.SCHEMA_VERSION, data,
                   position=position)
    header: dict[str, object] = {"v": event.SCHEMA_VERSION, "f": 2, "p": prev, "h": h}
    if mac is not None:
        header["k"] = mac
    return Row(position, stream, version, event.TYPE,
               json.dumps(header, separators=(",", ":")).encode() + b"\n" + data)


# --- the keyed chain ---------------------------------------------------------------------------


def test_a_keyed_log_verifies_with_its_key_and_every_link_is_keyed(keyed: KeyedLog) -> None:
    report = verify_log(keyed.store, key=KEY)
    assert (report.ok, report.events_checked, report.keyed_links, report.key_checked) == (
        True, EVENTS, EVENTS, True)
    assert all(split_state(r.state).mac == link_mac(KEY, split_state(r.state).hash)
               for r in keyed.raw.rows())


def test_without_the_key_the_plain_chain_verifies_and_the_report_says_macs_went_unchecked(
    keyed: KeyedLog,
) -> None:
    report = verify_log(keyed.store)
    assert (report.ok, report.keyed_links, report.key_checked) == (True, EVENTS, False)


@pytest.mark.parametrize("mac", [None, "0" * 64])
def test_an_event_appended_without_the_key_is_caught_with_the_key(
    keyed: KeyedLog, mac: str | None
) -> None:
    keyed.raw.insert(forge(keyed, EVENTS + 1, mac=mac))
    report = verify_log(keyed.store, key=KEY)
    assert (report.ok, report.first_bad_position) == (False, EVENTS + 1)
    assert report.problem is not None and (
        "no key MAC" in report.problem if mac is None else "does not match the audit key"
        in report.problem)


def test_an_unkeyed_event_after_keyed_ones_is_caught_even_without_the_key(
    keyed: KeyedLog,
) -> None:
    keyed.raw.insert(forge(keyed, EVENTS + 1, mac=None))
    report = verify_log(keyed.store)
    assert (report.ok, report.first_bad_position) == (False, EVENTS + 1)


def test_a_rewritten_tail_with_recomputed_hashes_is_caught_by_the_key(keyed: KeyedLog) -> None:
    """The attacker edits event 4 and re-hashes 4..10 honestly, copying the old MACs."""
    prev = split_state(keyed.row(3).state).hash
    for position in range(4, EVENTS + 1):
        row = keyed.row(position)
        link = split_state(row.state)
        data = link.data.replace(b"event 4", b"event X")
        h = event_hash(prev, row.stream.hex, row.version, row.topic, link.schema_version, data,
                       position=position)
        header = {"v": link.schema_version, "f": 2, "p": prev, "h": h, "k": link.mac}
        keyed.raw.update(replace(row, state=json.dumps(header, separators=(",", ":")).encode()
                                 + b"\n" + data))
        prev = h
    assert verify_log(keyed.store).ok  # what a keyless audit sees
    report = verify_log(keyed.store, key=KEY)
    assert (report.ok, report.first_bad_position) == (False, 4)


def test_the_wrong_key_fails_at_the_first_keyed_event(keyed: KeyedLog) -> None:
    report = verify_log(keyed.store, key=OTHER_KEY)
    assert (report.ok, report.first_bad_position) == (False, 1)


def test_a_writer_without_the_key_or_with_another_is_refused_and_writes_nothing(
    keyed: KeyedLog,
) -> None:
    for key, error, code in [(None, Conflict, "audit_key_missing"),
                             (OTHER_KEY, IntegrityFailure, "audit_key_mismatch")]:
        other = keyed.open(key=key)
        try:
            with pytest.raises(error) as caught:
                other.append([NewEvent(uuid.uuid4(), 1, thought("no key"))])
        finally:
            other.close()
        assert caught.value.code == code
    assert len(keyed.raw.rows()) == EVENTS


def test_keying_a_log_that_was_written_without_a_key_keys_what_follows(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    plain = open_sqlite_store(path)
    stream = uuid.uuid4()
    plain.append([NewEvent(stream, 1, thought("before the key"))])
    plain.close()
    store = open_sqlite_store(path, key=KEY)
    store.append([NewEvent(stream, 2, thought("with the key"))])
    report = verify_log(store, key=KEY)
    store.close()
    assert (report.ok, report.keyed_links, report.key_checked) == (True, 1, True)


# --- automatic seals ---------------------------------------------------------------------------


class Clock:
    """A hand-moved clock (a port: the store only asks it for now)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def append_one(store: AutoSealingStore, n: int) -> None:
    store.append([NewEvent(uuid.uuid4(), 1, thought(f"event {n}"))])


def test_every_n_events_the_head_is_sealed_and_truncation_after_it_is_caught(
    tmp_path: Path,
) -> None:
    keeper = open_local_seals(tmp_path / "auto.jsonl")
    store = AutoSealingStore(open_sqlite_store(tmp_path / "events.db"), keeper,
                             every_events=5, every_minutes=None, clock=Clock())
    for n in range(1, 13):
        append_one(store, n)
    assert [s.position for s in keeper.read_all()] == [5, 10]
    raw = SQLiteRaw(tmp_path / "events.db")
    raw.delete(9, 10, 11, 12)
    raw.close()
    assert verify_log(store).ok  # the chain alone cannot see a cut tail...
    report = verify_log(store, keeper.read_all())
    assert (report.ok, report.first_bad_position) == (False, 10)  # ...the automatic seal can
    store.close()


def test_a_reopened_store_counts_from_the_last_seal_in_the_file(tmp_path: Path) -> None:
    keeper = open_local_seals(tmp_path / "auto.jsonl")
    for batch in range(3):  # three "processes", four events each
        store = AutoSealingStore(open_sqlite_store(tmp_path / "events.db"), keeper,
                                 every_events=5, every_minutes=None, clock=Clock())
        for n in range(4):
            append_one(store, batch * 4 + n)
        store.close()
    assert [s.position for s in keeper.read_all()] == [5, 10]


def test_every_m_minutes_a_seal_is_made_at_the_next_append(tmp_path: Path) -> None:
    keeper = open_local_seals(tmp_path / "auto.jsonl")
    clock = Clock()
    store = AutoSealingStore(open_sqlite_store(tmp_path / "events.db"), keeper,
                             every_events=None, every_minutes=10, clock=clock)
    append_one(store, 1)  # no seal in the file yet: the first append seals at once
    clock.now += timedelta(minutes=9)
    append_one(store, 2)
    clock.now += timedelta(minutes=1)
    append_one(store, 3)
    append_one(store, 4)
    assert [(s.position, s.at) for s in keeper.read_all()] == [
        (1, NOW.isoformat()), (3, (NOW + timedelta(minutes=10)).isoformat())]
    store.close()


def test_a_seal_that_cannot_be_written_never_fails_the_committed_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = AutoSealingStore(open_sqlite_store(tmp_path / "events.db"),
                             open_local_seals("/dev/full"), every_events=1, every_minutes=None,
                             clock=Clock())
    with caplog.at_level(logging.WARNING):
        append_one(store, 1)
        append_one(store, 2)
    assert store.head() == 2
    # Each append tried again, since no seal was written.
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "automatic seal at position 1 not written", "automatic seal at position 2 not written"]
    assert all("the disk is full" in r.message for r in caplog.records)
    store.close()


# --- configured in quipu.yaml ------------------------------------------------------------------


def configure(root: Path, audit: dict[str, object]) -> None:
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config["audit"] = audit
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))


def test_a_project_configured_with_a_key_and_auto_seals_writes_both(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root, name="keyed").close()
    (tmp_path / "audit.key").write_bytes(KEY + b"\n")
    configure(root, {"key_file": str(tmp_path / "audit.key"),
                     "auto_seal": {"every_events": 2, "path": "seals/auto.jsonl"}})
    with open_project(root, actor="agent-1") as q:
        for n in range(5):
            q.log_thought(f"thought number {n} with the key")
        head = q.store.head()
        seals = open_local_seals(root / "seals" / "auto.jsonl").read_all()
        assert seals and seals[-1].position >= head - 1
        report = verify_log(q.store, seals, key=KEY)
    # The project's first event was written by `init`, before the key was configured.
    assert (report.ok, report.keyed_links, report.events_checked) == (True, head - 1, head)
    assert seal_paths(root, q.config) == [root / ".quipu" / "seals.jsonl",
                                          root / "seals" / "auto.jsonl"]


def test_a_missing_or_short_key_file_is_invalid_input(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root, name="keyed").close()
    configure(root, {"key_file": "nowhere.key"})
    with pytest.raises(InvalidInput) as missing:
        open_project(root)
    (root / "short.key").write_bytes(b"short\n")
    configure(root, {"key_file": "short.key"})
    with pytest.raises(InvalidInput) as short:
        open_project(root)
    assert (missing.value.code, short.value.code) == ("audit_key_unreadable",
                                                      "audit_key_too_short")


def test_seal_positions_are_the_heads_they_sealed(tmp_path: Path) -> None:
    keeper = open_local_seals(tmp_path / "auto.jsonl")
    store = AutoSealingStore(open_sqlite_store(tmp_path / "events.db"), keeper,
                             every_events=3, every_minutes=None, clock=Clock())
    for n in range(1, 7):
        append_one(store, n)
    rows = {r.position: split_state(r.state).hash for r in store.read()}
    assert keeper.read_all() == [Seal(p, rows[p], NOW.isoformat()) for p in (3, 6)]
    store.close()
