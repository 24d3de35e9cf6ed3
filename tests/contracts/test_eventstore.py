"""The EventStore contract: one suite, run against memory, SQLite and PostgreSQL.

Each adapter subclasses ``EventStoreContract`` and says how to open a store; every behaviour the
rest of Quipu relies on (atomic appends, optimistic concurrency, ordered reads, one hash chain
under concurrent writers) is tested once, here, for all of them.
"""

from __future__ import annotations

import abc
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from waiting import wait_until

from quipu.adapters.eventstore import open_memory_store, open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.core.chain import GENESIS, split_state
from quipu.core.errors import Conflict, Unavailable
from quipu.core.log import ChainBreak, decode, verify_chain
from quipu.core.ports import NewEvent, StoredRecord
from quipu.core.project.events import ThoughtLogged
from quipu.core.workspaces.events import WorkspaceCreated

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def thought(text: str) -> ThoughtLogged:
    return ThoughtLogged(actor="agent-1", reason="testing the log", at=AT, thought=text)


def created(name: str) -> WorkspaceCreated:
    return WorkspaceCreated(actor="agent-1", reason="testing the log", at=AT, workspace=name,
                            goal="g")


def read_all(store: RecorderEventStore) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    while page := store.read(after=records[-1].position if records else 0, limit=500):
        records.extend(page)
    return records


def assert_chain_verifies(records: list[StoredRecord]) -> None:
    breaks = [item for item in verify_chain(records) if isinstance(item, ChainBreak)]
    assert breaks == []


def texts(records: list[StoredRecord]) -> list[str]:
    return [decode(r).event.thought for r in records]  # type: ignore[attr-defined]


# A separate Python process appending to a shared log (argv: kind, where, table, tag, n,
# barrier). Once its store is open it says so (<barrier>.<tag>) and waits for <barrier>.go, so
# both writers append at the same time however long each took to start.
WRITER = r"""
import sys, time, uuid
from datetime import UTC, datetime
from pathlib import Path
from quipu.core.project.events import ThoughtLogged
from quipu.core.ports import NewEvent

kind, where, table, tag, n, barrier = sys.argv[1:7]
if kind == "sqlite":
    from quipu.adapters.eventstore import open_sqlite_store
    store = open_sqlite_store(where)
else:
    from quipu.adapters.eventstore.postgres import open_postgres_store
    store = open_postgres_store(where, table=table)
stream = uuid.uuid4()
at = datetime(2024, 5, 1, tzinfo=UTC)
Path(f"{barrier}.{tag}").touch()
while not Path(f"{barrier}.go").exists():
    time.sleep(0.01)
for i in range(int(n)):
    store.append([
        NewEvent(stream, 2 * i + 1, ThoughtLogged(actor=tag, reason="race", at=at,
                                                  thought=f"{tag}-{2 * i}")),
        NewEvent(stream, 2 * i + 2, ThoughtLogged(actor=tag, reason="race", at=at,
                                                  thought=f"{tag}-{2 * i + 1}")),
    ])
store.close()
"""


class EventStoreContract(abc.ABC):
    """Behaviour every EventStore adapter must have."""

    @abc.abstractmethod
    def create_store(self) -> RecorderEventStore:
        """A store on this test's log; for shared backends, another call opens the same log."""

    def writer_process_args(self) -> tuple[str, str, str] | None:
        """(kind, where, table) for a writer in another process, or None if not shareable."""
        return None

    @pytest.fixture
    def store(self) -> Iterator[RecorderEventStore]:
        store = self.create_store()
        yield store
        store.close()

    # --- append ----------------------------------------------------------------------------

    def test_an_empty_log_has_head_zero_and_reads_nothing(self, store: RecorderEventStore) -> None:
        assert store.head() == 0
        assert store.read() == []
        assert store.append([]) == []

    def test_a_multi_event_append_stores_every_event_at_increasing_positions(
        self, store: RecorderEventStore
    ) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        positions = store.append(
            [NewEvent(a, 1, thought("one")), NewEvent(b, 1, created("w")),
             NewEvent(a, 2, thought("two"))]
        )
        assert len(positions) == 3
        assert positions == sorted(set(positions))
        records = store.read()
        assert [r.position for r in records] == positions
        assert [(r.stream, r.version, r.type) for r in records] == [
            (a, 1, "ThoughtLogged"), (b, 1, "WorkspaceCreated"), (a, 2, "ThoughtLogged")
        ]
        assert store.head() == positions[-1]

    def test_a_conflicting_version_writes_nothing_from_the_whole_batch(
        self, store: RecorderEventStore
    ) -> None:
        a, fresh = uuid.uuid4(), uuid.uuid4()
        store.append([NewEvent(a, 1, thought("first"))])
        head, before = store.head(), store.read()
        with pytest.raises(Conflict) as caught:
            store.append([NewEvent(fresh, 1, thought("would be new")),
                          NewEvent(a, 1, thought("lost the race"))])
        assert caught.value.code == "concurrency_conflict"
        assert store.head() == head
        assert store.read() == before
        assert store.load(fresh) == []
        assert texts(store.load(a)) == ["first"]

    def test_a_batch_that_repeats_a_version_conflicts_and_writes_nothing(
        self, store: RecorderEventStore
    ) -> None:
        a = uuid.uuid4()
        with pytest.raises(Conflict):
            store.append([NewEvent(a, 1, thought("x")), NewEvent(a, 1, thought("y"))])
        assert store.head() == 0
        assert store.read() == []

    def test_the_log_keeps_working_and_chaining_after_a_conflict(
        self, store: RecorderEventStore
    ) -> None:
        a = uuid.uuid4()
        store.append([NewEvent(a, 1, thought("one"))])
        with pytest.raises(Conflict):
            store.append([NewEvent(a, 1, thought("stale"))])
        store.append([NewEvent(a, 2, thought("two"))])
        records = read_all(store)
        assert texts(records) == ["one", "two"]
        assert_chain_verifies(records)

    def test_positions_strictly_increase_across_appends(self, store: RecorderEventStore) -> None:
        returned: list[int] = []
        for i in range(10):
            returned += store.append([NewEvent(uuid.uuid4(), 1, thought(str(i)))])
        assert returned == sorted(set(returned))
        assert [r.position for r in store.read()] == returned
        assert store.head() == returned[-1]

    # --- load and read ---------------------------------------------------------------------

    def test_load_returns_only_that_stream_in_version_order(
        self, store: RecorderEventStore
    ) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        for v in range(1, 5):
            store.append([NewEvent(b, v, thought(f"b{v}")), NewEvent(a, v, thought(f"a{v}"))])
        loaded = store.load(a)
        assert [r.version for r in loaded] == [1, 2, 3, 4]
        assert {r.stream for r in loaded} == {a}
        assert texts(loaded) == ["a1", "a2", "a3", "a4"]
        assert store.load(uuid.uuid4()) == []

    def test_read_honours_after_limit_until_and_types(self, store: RecorderEventStore) -> None:
        positions = []
        for i in range(10):
            event = created(f"w{i}") if i % 3 == 0 else thought(f"t{i}")
            positions += store.append([NewEvent(uuid.uuid4(), 1, event)])
        p = positions
        assert [r.position for r in store.read(after=p[3])] == p[4:]
        assert [r.position for r in store.read(limit=4)] == p[:4]
        assert [r.position for r in store.read(after=p[1], limit=3)] == p[2:5]
        assert [r.position for r in store.read(until=p[5])] == p[:6]
        assert [r.position for r in store.read(after=p[2], until=p[6])] == p[3:7]
        assert store.read(after=p[6], until=p[6]) == []
        workspaces = store.read(types=["WorkspaceCreated"])
        assert [r.position for r in workspaces] == [p[0], p[3], p[6], p[9]]
        assert [r.position for r in store.read(types=["WorkspaceCreated"], after=p[0], limit=2)
                ] == [p[3], p[6]]
        assert [r.position for r in store.read(types=["WorkspaceCreated"], until=p[5])
                ] == [p[0], p[3]]
        assert store.read(types=["NoSuchEvent"]) == []
        assert store.read(after=p[-1]) == []

    def test_scan_returns_the_same_rows_as_read_without_stream_ids(
            self, store: RecorderEventStore) -> None:
        """The raw page reader projections use agrees with read() for every filter."""
        for i in range(10):
            event = created(f"w{i}") if i % 3 == 0 else thought(f"t{i}")
            store.append([NewEvent(uuid.uuid4(), 1, event)])
        p = [r.position for r in store.read()]
        for kwargs in ({}, {"after": p[3]}, {"limit": 4}, {"after": p[1], "limit": 3},
                       {"until": p[5]}, {"types": ["WorkspaceCreated"]},
                       {"types": ["WorkspaceCreated"], "after": p[0], "limit": 2},
                       {"after": p[6], "until": p[6]}, {"types": ["NoSuchEvent"]}):
            expected = [(r.position, r.type, r.state) for r in store.read(**kwargs)]
            assert store.scan(**kwargs) == expected, kwargs

    def test_hash_at_is_the_chain_hash_of_the_newest_event_at_or_before_a_position(
            self, store: RecorderEventStore) -> None:
        """What the views store beside their position to notice a log that changed under them."""
        assert store.hash_at(0) == store.hash_at(5) == GENESIS  # an empty log
        for i in range(4):
            store.append([NewEvent(uuid.uuid4(), 1, thought(f"t{i}"))])
        records = read_all(store)
        for r in records:
            assert store.hash_at(r.position) == split_state(r.state).hash
        assert store.hash_at(0) == GENESIS
        assert store.hash_at(records[-1].position + 100) == split_state(records[-1].state).hash

    def test_hash_at_a_gap_in_the_positions_is_the_hash_before_it(
            self, store: RecorderEventStore) -> None:
        stream = uuid.uuid4()
        store.append([NewEvent(stream, 1, thought("first"))])
        with pytest.raises(Conflict):  # a sequence-backed log may burn positions here
            store.append([NewEvent(uuid.uuid4(), 1, thought("lost")),
                          NewEvent(stream, 1, thought("taken"))])
        store.append([NewEvent(stream, 2, thought("second"))])
        records = read_all(store)
        for p in range(records[-1].position + 1):
            before = [r for r in records if r.position <= p]
            expected = split_state(before[-1].state).hash if before else GENESIS
            assert store.hash_at(p) == expected, p

    # --- the chain -------------------------------------------------------------------------

    def test_the_chain_verifies_after_many_appends(self, store: RecorderEventStore) -> None:
        streams = [uuid.uuid4() for _ in range(5)]
        for i in range(60):
            batch = [NewEvent(streams[i % 5], i // 5 * 2 + 1, thought(f"{i}a")),
                     NewEvent(streams[i % 5], i // 5 * 2 + 2, thought(f"{i}b"))]
            store.append(batch)
        records = read_all(store)
        assert len(records) == 120
        assert_chain_verifies(records)

    def test_concurrent_threads_form_one_chain_with_no_lost_events(
        self, store: RecorderEventStore
    ) -> None:
        threads, per_thread = 4, 25
        barrier = threading.Barrier(threads)
        failures: list[BaseException] = []

        def write(tag: int) -> None:
            stream = uuid.uuid4()
            barrier.wait()
            try:
                for v in range(1, per_thread + 1):
                    store.append([NewEvent(stream, v, thought(f"{tag}-{v}"))])
            except BaseException as exc:  # surfaced in the main thread below
                failures.append(exc)

        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert failures == []
        records = read_all(store)
        assert sorted(texts(records)) == sorted(
            f"{t}-{v}" for t in range(threads) for v in range(1, per_thread + 1)
        )
        assert_chain_verifies(records)

    def test_concurrent_processes_form_one_chain_with_no_lost_events(
        self, store: RecorderEventStore, tmp_path: Path
    ) -> None:
        args = self.writer_process_args()
        assert args is not None
        kind, where, table = args
        batches, barrier = 30, tmp_path / "barrier"
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, kind, where, table, tag, str(batches),
                              str(barrier)], stderr=subprocess.PIPE, text=True)
            for tag in ("p", "q")
        ]
        wait_until(lambda: all(Path(f"{barrier}.{tag}").exists() for tag in ("p", "q"))
                   or any(proc.poll() is not None for proc in procs),
                   what="both writer processes open the store")
        Path(f"{barrier}.go").touch()
        errors = [proc.communicate(timeout=120)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], errors
        records = read_all(store)
        assert sorted(texts(records)) == sorted(
            f"{tag}-{i}" for tag in ("p", "q") for i in range(2 * batches)
        )
        for tag in ("p", "q"):  # each writer's events are in its own order
            mine = [t for t in texts(records) if t.startswith(f"{tag}-")]
            assert mine == [f"{tag}-{i}" for i in range(2 * batches)]
        assert_chain_verifies(records)

    # --- waiting for appends -----------------------------------------------------------------

    def _wait_in_thread(self, store: RecorderEventStore, after: int) -> tuple[
            threading.Thread, list[int]]:
        """A thread blocked in ``wait_for_append(after)`` with a timeout no test reaches."""
        woke: list[int] = []
        waiter = threading.Thread(
            target=lambda: woke.append(store.wait_for_append(after=after, timeout=3600)),
            daemon=True)
        waiter.start()
        return waiter, woke

    def test_a_wait_returns_the_head_at_once_when_it_is_already_past_after(
            self, store: RecorderEventStore) -> None:
        [p] = store.append([NewEvent(uuid.uuid4(), 1, thought("there"))])
        assert store.wait_for_append(after=0, timeout=3600) == p

    def test_a_wait_with_nothing_appended_ends_at_its_timeout_with_the_same_head(
            self, store: RecorderEventStore) -> None:
        [p] = store.append([NewEvent(uuid.uuid4(), 1, thought("there"))])
        assert store.wait_for_append(after=p, timeout=0.05) == p
        assert store.wait_for_append(after=p + 5, timeout=0.0) == p

    def test_an_append_through_the_same_store_wakes_a_waiting_thread(
            self, store: RecorderEventStore) -> None:
        head = store.head()
        waiter, woke = self._wait_in_thread(store, head)
        [p] = store.append([NewEvent(uuid.uuid4(), 1, thought("wake up"))])
        waiter.join(timeout=60)  # the wait's own timeout is an hour: only the append ends it
        assert not waiter.is_alive()
        assert woke == [p]

    def test_an_append_through_another_connection_wakes_a_waiting_thread(
            self, store: RecorderEventStore) -> None:
        other = self.create_store()
        try:
            waiter, woke = self._wait_in_thread(store, store.head())
            [p] = other.append([NewEvent(uuid.uuid4(), 1, thought("from elsewhere"))])
            waiter.join(timeout=60)
            assert not waiter.is_alive()
            assert woke == [p]
        finally:
            other.close()

    def test_an_append_from_another_process_wakes_a_waiting_thread(
            self, store: RecorderEventStore, tmp_path: Path) -> None:
        args = self.writer_process_args()
        assert args is not None
        kind, where, table = args
        waiter, woke = self._wait_in_thread(store, store.head())
        barrier = tmp_path / "barrier"
        Path(f"{barrier}.go").touch()  # a lone writer: nobody to start together with
        proc = subprocess.run([sys.executable, "-c", WRITER, kind, where, table, "p", "1",
                               str(barrier)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        waiter.join(timeout=60)
        assert not waiter.is_alive()
        assert woke == [store.head()] and woke[0] > 0


class TestMemoryEventStore(EventStoreContract):
    def create_store(self) -> RecorderEventStore:
        return open_memory_store()

    # A memory store lives in one process: there is no second process or connection to race
    # with or to be woken by.
    test_concurrent_processes_form_one_chain_with_no_lost_events = None  # type: ignore[assignment]
    test_an_append_through_another_connection_wakes_a_waiting_thread = None  # type: ignore[assignment]
    test_an_append_from_another_process_wakes_a_waiting_thread = None  # type: ignore[assignment]


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _log_file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    def create_store(self) -> RecorderEventStore:
        return open_sqlite_store(self.path)

    def writer_process_args(self) -> tuple[str, str, str] | None:
        return ("sqlite", str(self.path), "")

    def test_a_locked_database_is_unavailable_and_nothing_is_written(self) -> None:
        store = open_sqlite_store(self.path, lock_timeout=1, lock_retries=1)
        store.append([NewEvent(uuid.uuid4(), 1, thought("before"))])
        blocker = sqlite3.connect(self.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(Unavailable) as caught:
                store.append([NewEvent(uuid.uuid4(), 1, thought("blocked"))])
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert caught.value.code == "database_locked"
        assert texts(read_all(store)) == ["before"]
        store.append([NewEvent(uuid.uuid4(), 1, thought("after"))])
        assert texts(read_all(store)) == ["before", "after"]
        store.close()

    @pytest.mark.parametrize(("asked", "expected"), [(None, 2), ("NORMAL", 1), ("FULL", 2)])
    def test_the_synchronous_setting_is_applied_to_the_stores_connections(
        self, asked: str | None, expected: int
    ) -> None:
        store = (open_sqlite_store(self.path) if asked is None
                 else open_sqlite_store(self.path, synchronous=asked))  # type: ignore[arg-type]
        store.append([NewEvent(uuid.uuid4(), 1, thought("x"))])
        # Ask the store's own pooled connections (a fresh sqlite3 connection would show the
        # compile-time default and prove nothing).
        datastore = store._recorder.datastore  # type: ignore[attr-defined]
        for writer in (True, False):
            with datastore.get_connection(commit=writer) as conn:
                cursor = conn.cursor()
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == expected
        store.close()

    def test_the_log_file_is_in_wal_mode(self) -> None:
        open_sqlite_store(self.path).close()
        conn = sqlite3.connect(self.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


@pytest.mark.postgres
class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _table(self, pg_store: object, postgres_url: str) -> None:
        self.pg_store = pg_store
        self.url = postgres_url
        self.table = f"quipu_test_{uuid.uuid4().hex[:12]}"

    def create_store(self) -> RecorderEventStore:
        return self.pg_store(self.table)  # type: ignore[operator]

    def writer_process_args(self) -> tuple[str, str, str] | None:
        return ("postgres", self.url, self.table)

