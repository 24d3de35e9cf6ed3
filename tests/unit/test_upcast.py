"""Old events stay as they were written and are upcast on read.

ThoughtLogged is at schema_version 2; version 1 stored the text under ``"text"``. A genuine v1
event is placed in a real SQLite log exactly as a v1 writer would have stored it (chain header
with ``"v":1`` and the v1 JSON), between events written by today's code.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.eventstore._base import RecorderEventStore
from quipu.core.audit import verify_log
from quipu.core.chain import link_state, split_state
from quipu.core.log import decode
from quipu.core.ports import NewEvent
from quipu.core.project.events import ThoughtLogged

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

V1_DATA = json.dumps(
    {"actor": "agent-old", "reason": "an early note", "at": "2023-11-02T09:30:00Z",
     "text": "try a smaller learning rate", "workspace": "baseline"},
    separators=(",", ":"),
).encode()


def stored_one(tmp_path: Path, type_name: str, schema_version: int, data: bytes
               ) -> RecorderEventStore:
    """A SQLite log holding one event of ``type_name`` stored as ``data`` bytes at
    ``schema_version``, written the way an older Quipu wrote it (straight into the table)."""
    path = tmp_path / "events.db"
    store = open_sqlite_store(path)
    stream = uuid.uuid4()
    state, _ = link_state("0" * 64, stream.hex, 1, type_name, schema_version, data,
                          position=1)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                    (stream.hex, 1, type_name, state))
    raw.close()
    return store


def test_thought_logged_is_at_schema_version_2() -> None:
    assert ThoughtLogged.SCHEMA_VERSION == 2


def test_a_stored_v1_thought_decodes_as_the_v2_model_and_the_chain_still_verifies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = open_sqlite_store(path)
    stream = uuid.uuid4()
    store.append([NewEvent(stream, 1, ThoughtLogged(actor="a", reason="r", at=AT,
                                                    thought="first, in v2"))])
    first = store.read()[0]

    # Write the v1 event by hand, chained after the head like the recorder would.
    state, _ = link_state(split_state(first.state).hash, stream.hex, 2, "ThoughtLogged", 1,
                          V1_DATA, position=2)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)",
            (stream.hex, 2, "ThoughtLogged", state),
        )
    raw.close()
    store.append([NewEvent(stream, 3, ThoughtLogged(actor="a", reason="r", at=AT,
                                                    thought="after the old one"))])

    records = store.read()
    old = decode(records[1]).event
    assert isinstance(old, ThoughtLogged)
    assert old == ThoughtLogged(
        actor="agent-old", reason="an early note",
        at=datetime(2023, 11, 2, 9, 30, tzinfo=UTC),
        thought="try a smaller learning rate", workspace="baseline", run_id=None,
    )
    assert [decode(r).event.thought for r in store.load(stream)] == [  # type: ignore[attr-defined]
        "first, in v2", "try a smaller learning rate", "after the old one"
    ]
    report = verify_log(store)
    assert (report.ok, report.events_checked) == (True, 3)
    store.close()


def test_upcasting_never_rewrites_the_stored_v1_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = open_sqlite_store(path)
    stream = uuid.uuid4()
    state, _ = link_state("0" * 64, stream.hex, 1, "ThoughtLogged", 1, V1_DATA, position=1)
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                    (stream.hex, 1, "ThoughtLogged", state))

    for record in store.read():
        decode(record)
    stored = raw.execute("SELECT state FROM stored_events").fetchone()[0]
    raw.close()
    assert stored == state
    assert split_state(stored).schema_version == 1
    assert json.loads(split_state(stored).data)["text"] == "try a smaller learning rate"
    assert verify_log(store).ok
    store.close()


V1_FINALIZED = json.dumps(
    {"actor": "agent-old", "reason": "reached 0.91 on the validation split",
     "at": "2024-01-03T10:00:00Z", "run_id": "stage-0001", "workspace": "baseline",
     "stage": "train", "ml_outcome": "success",
     "results": {"primary_metric": "val_acc", "value": 0.91}, "results_auto": {},
     "comparison": None},
    separators=(",", ":"),
).encode()


def test_a_stored_v1_run_finalized_decodes_as_a_verdict_on_the_run_itself(
    tmp_path: Path,
) -> None:
    """RunFinalized v2 added ``closed_by``; every v1 verdict was given on the run itself."""
    from quipu.core.runs.events import RunFinalized

    assert RunFinalized.SCHEMA_VERSION == 2
    store = stored_one(tmp_path, "RunFinalized", 1, V1_FINALIZED)

    event = decode(store.read()[0]).event
    assert isinstance(event, RunFinalized)
    assert (event.closed_by, event.ml_outcome, event.results) == (
        None, "success", {"primary_metric": "val_acc", "value": 0.91})
    assert verify_log(store).ok
    store.close()


V1_LAUNCHED = json.dumps(
    {"actor": "test:1", "reason": "stage process 4242 started on box", "at": "2024-02-01T08:00:00Z",
     "run_id": "stage-0123456789ab", "worker": "test:1", "host": "box", "pid": 4242,
     "run_dir": "/tmp/runs/stage-0123456789ab",
     "inputs": {"x": {"sha256": "ab" * 32, "size": 8, "kind": "file"}}},
    separators=(",", ":"),
).encode()


def test_a_stored_run_launched_without_environment_decodes_with_none(tmp_path: Path) -> None:
    """RunLaunched gained ``environment`` with a default: a launch written before it reads as
    one whose environment is unknown, and its other facts are unchanged."""
    from quipu.core.runs.events import RunLaunched

    assert RunLaunched.SCHEMA_VERSION == 1
    store = stored_one(tmp_path, "RunLaunched", 1, V1_LAUNCHED)

    event = decode(store.read()[0]).event
    assert isinstance(event, RunLaunched)
    assert (event.environment, event.pid, event.inputs["x"]["size"]) == (None, 4242, 8)
    assert verify_log(store).ok
    store.close()


V2_REQUESTED = json.dumps(
    {"actor": "agent:1", "reason": "train the baseline once more", "at": "2024-02-01T08:00:00Z",
     "run_id": "stage-0123456789ab", "pipeline_run_id": "prun-0123456789ab", "workspace": "w",
     "stage": "train", "version": 3, "manifest": "cd" * 32, "entrypoint": "modules/train.py",
     "config": {"lr": 0.1}, "config_hash": "ef" * 32, "inputs": {}, "outputs": {},
     "depends_on": [], "results_spec": {}, "detail": {"description": "train"},
     "siblings": {"train": "stage-0123456789ab"}},
    separators=(",", ":"),
).encode()


def test_a_stored_run_requested_without_resume_from_decodes_with_none(tmp_path: Path) -> None:
    """RunRequested gained ``resume_from`` with a default (no new schema version): a request
    written before it reads as a run that resumed from nothing, its other facts unchanged."""
    from quipu.core.runs.events import RunRequested

    assert RunRequested.SCHEMA_VERSION == 2
    store = stored_one(tmp_path, "RunRequested", 2, V2_REQUESTED)

    event = decode(store.read()[0]).event
    assert isinstance(event, RunRequested)
    assert (event.resume_from, event.version, event.config) == (None, 3, {"lr": 0.1})
    assert verify_log(store).ok
    store.close()


def test_a_stored_source_consumed_without_input_decodes_with_none(tmp_path: Path) -> None:
    """SourceConsumed gained ``input`` with a default: an older event reads as one that does
    not say which input read the source."""
    from quipu.core.sources.events import SourceConsumed

    data = json.dumps({"actor": "agent:1", "reason": "run the baseline on the raw data",
                       "at": "2024-02-01T08:00:00Z", "source": "raw",
                       "run_id": "stage-0123456789ab", "workspace": "w", "sha256": "ab" * 32},
                      separators=(",", ":")).encode()
    store = stored_one(tmp_path, "SourceConsumed", 1, data)
    event = decode(store.read()[0]).event
    assert isinstance(event, SourceConsumed)
    assert (event.input, event.source, event.run_id) == (None, "raw", "stage-0123456789ab")
    assert verify_log(store).ok
    store.close()


def test_a_stored_review_completed_without_resumed_from_decodes_with_none(
        tmp_path: Path) -> None:
    """ReviewCompleted gained ``resumed_from`` with a default (no new schema version): a
    decision written before it reads as one by the reviewer that started the review."""
    from quipu.core.reviews.events import ReviewCompleted

    assert ReviewCompleted.SCHEMA_VERSION == 1
    data = json.dumps({"actor": "reviewer:host:41", "reason": "pre-run review decided warn",
                       "at": "2024-02-01T08:00:00Z", "run_id": "stage-0123456789ab",
                       "decision": "warn", "reviewers": ["static"], "findings": [],
                       "fix": None, "omitted": 0}, separators=(",", ":")).encode()
    store = stored_one(tmp_path, "ReviewCompleted", 1, data)
    event = decode(store.read()[0]).event
    assert isinstance(event, ReviewCompleted)
    assert (event.resumed_from, event.decision, event.actor) == (
        None, "warn", "reviewer:host:41")
    assert verify_log(store).ok
    store.close()


def test_a_stored_gs_source_registered_without_remote_decodes_with_none(tmp_path: Path) -> None:
    """SourceRegistered gained ``remote`` (the object's fingerprint) with a default: a gs://
    source registered before objects could be read decodes unverified, with no fingerprint."""
    from quipu.core.sources.events import SourceRegistered

    data = json.dumps({"actor": "agent:1", "reason": "register the raw data kept in a bucket",
                       "at": "2024-02-01T08:00:00Z", "source": "raw",
                       "uri": "gs://bucket/raw.npy", "path": None, "sha256": None,
                       "size_bytes": 128, "format": "npy", "description": "raw data",
                       "metadata": {}, "verified": False},
                      separators=(",", ":")).encode()
    store = stored_one(tmp_path, "SourceRegistered", 1, data)
    event = decode(store.read()[0]).event
    assert isinstance(event, SourceRegistered)
    assert (event.remote, event.verified, event.sha256) == (None, False, None)
    assert verify_log(store).ok
    store.close()
