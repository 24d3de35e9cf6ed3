"""Properties of the log that must hold for any sequence of appends, on memory and SQLite.

A simple model (a list of what was accepted) runs next to the real store: whatever random
batches arrive, positions strictly increase, everything accepted reads back equal, a conflicting
batch leaves no trace, and the hash chain always verifies.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quipu.adapters.eventstore import open_memory_store, open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.core.chain import GENESIS, link_state
from quipu.core.errors import Conflict
from quipu.core.log import ChainBreak, decode, encode_data, verify_chain
from quipu.core.messages import Event
from quipu.core.ports import NewEvent, StoredRecord
from quipu.core.project.events import ThoughtLogged
from quipu.core.workspaces.events import WorkspaceCreated

STREAMS = [uuid.UUID(int=n + 1) for n in range(4)]

texts = st.text(max_size=30)
datetimes = st.datetimes(timezones=st.just(UTC))
thoughts = st.builds(
    ThoughtLogged, actor=st.text(min_size=1, max_size=10), reason=texts, at=datetimes,
    thought=texts, workspace=st.none() | texts, run_id=st.none() | texts,
)
workspaces = st.builds(
    WorkspaceCreated, actor=st.text(min_size=1, max_size=10), reason=texts, at=datetimes,
    workspace=texts, goal=texts, forked_from=st.none() | texts,
    from_version=st.none() | st.integers(min_value=1, max_value=10**6),
)
events = thoughts | workspaces

# A batch: events for streams (by index) and whether to spoil it with a version already taken.
batches = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, len(STREAMS) - 1), events), min_size=1, max_size=4),
        st.integers(0, 3).map(lambda n: n == 0),
    ),
    max_size=8,
)


@contextmanager
def memory_store() -> Iterator[RecorderEventStore]:
    store = open_memory_store()
    yield store
    store.close()


@contextmanager
def sqlite_store() -> Iterator[RecorderEventStore]:
    # A fresh real file per example (tmp_path is per test, not per hypothesis example).
    with tempfile.TemporaryDirectory() as tmp:
        store = open_sqlite_store(Path(tmp) / "events.db")
        yield store
        store.close()


def read_all(store: RecorderEventStore) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    while page := store.read(after=records[-1].position if records else 0, limit=7):
        records.extend(page)  # a small page size exercises paging too
    return records


def check_log_against_model(
    open_store: Callable[[], AbstractContextManager[RecorderEventStore]],
    plan: list[tuple[list[tuple[int, Event]], bool]],
) -> None:
    accepted: list[tuple[uuid.UUID, int, Event]] = []
    versions = dict.fromkeys(STREAMS, 0)
    returned: list[int] = []
    with open_store() as store:
        for items, spoil in plan:
            batch, next_versions = [], dict(versions)
            for index, event in items:
                stream = STREAMS[index]
                next_versions[stream] += 1
                batch.append(NewEvent(stream, next_versions[stream], event))
            if spoil:
                first = batch[0]
                taken = versions[first.stream]
                # Reuse a version already in the log, or else repeat one inside the batch.
                batch = ([NewEvent(first.stream, taken, first.event), *batch[1:]] if taken
                         else [*batch, first])
                head, before = store.head(), read_all(store)
                try:
                    store.append(batch)
                except Conflict as exc:
                    assert exc.code == "concurrency_conflict"
                else:
                    raise AssertionError("a taken version was accepted")
                assert store.head() == head
                assert read_all(store) == before
                continue
            positions = store.append(batch)
            assert len(positions) == len(batch)
            tail = [*returned[-1:], *positions]
            assert all(a < b for a, b in pairwise(tail))
            returned += positions
            versions = next_versions
            accepted += [(e.stream, e.version, e.event) for e in batch]

        records = read_all(store)
        assert [r.position for r in records] == returned
        assert [(r.stream, r.version, decode(r).event) for r in records] == accepted
        assert store.head() == (returned[-1] if returned else 0)
        assert [item for item in verify_chain(records) if isinstance(item, ChainBreak)] == []
        for stream in STREAMS:
            assert [decode(r).event for r in store.load(stream)] == [
                e for s, _, e in accepted if s == stream
            ]


@settings(max_examples=60, deadline=None)
@given(plan=batches)
def test_memory_log_matches_the_model_for_any_batches(
    plan: list[tuple[list[tuple[int, Event]], bool]],
) -> None:
    check_log_against_model(memory_store, plan)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=batches)
def test_sqlite_log_matches_the_model_for_any_batches(
    plan: list[tuple[list[tuple[int, Event]], bool]],
) -> None:
    check_log_against_model(sqlite_store, plan)


@settings(max_examples=200, deadline=None)  # no timing flakes on a busy CI box
@given(event=events, version=st.integers(min_value=1, max_value=2**40))
def test_decoding_an_encoded_event_gives_it_back(event: Event, version: int) -> None:
    stream = uuid.uuid4()
    state, _ = link_state(GENESIS, stream.hex, version, event.TYPE, event.SCHEMA_VERSION,
                          encode_data(event), position=1)
    record = StoredRecord(position=1, stream=stream, version=version, type=event.TYPE,
                          state=state)
    recorded = decode(record)
    assert recorded.event == event
    assert type(recorded.event) is type(event)
    assert (recorded.stream, recorded.version, recorded.position) == (stream, version, 1)
