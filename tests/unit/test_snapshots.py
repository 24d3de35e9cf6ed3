"""Aggregate snapshots: loading costs the same at any history length, and a snapshot never
answers differently from a full replay of the log.

Real SQLite logs and real SQLite snapshot files throughout. The property test drives random
workspace and run commands through the handlers with snapshots taken every few events, and checks
after every step that snapshot + tail == full replay for every aggregate touched.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from unit_support import ACTOR, REASON, FakeIndex, FixedClock

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.slots import LocalSlotFiles
from quipu.adapters.snapshots import SQLiteSnapshotStore
from quipu.core.chain import link_state, split_state
from quipu.core.runs.aggregate import Run
from quipu.core.runs.events import RunRequested
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.workspaces.aggregate import Slot, Workspace
from quipu.core.workspaces.handlers import Service, Settings

SPEC = {"primary_metric": "accuracy", "direction": "maximize", "min_value": 0.9,
        "goal_value": 0.98, "dataset_split": "test", "tolerance": 0.01,
        "context": "test accuracy of the digits classifier"}
PIPELINE = """
stages:
  - name: prep
    outputs:
      features: {type: npy, schema: {shape: [null, 4], dtype: float32}}
  - name: train
    inputs:
      features: {type: npy, from_stage: prep, schema: {shape: [null, 4], dtype: float32}}
    outputs:
      model: {type: file, schema: null}
"""


class Lab:
    """A project on a real SQLite log whose unit of work snapshots every ``every`` events."""

    def __init__(self, root: Path, every: int) -> None:
        self.root = root
        self.store = open_sqlite_store(root / "events.db", synchronous="OFF")
        self.snapshots = SQLiteSnapshotStore(root / "snapshots.db")
        self.uow = UnitOfWork(self.store, FixedClock(), snapshots=self.snapshots,
                              snapshot_every=every)
        blobs = LocalBlobStore(root / "blobs", fsync=False)
        self.files = LocalSlotFiles(root / "workspaces", blobs, root / "cache")
        self.service = Service(self.uow, blobs, self.files, Settings(slots=("w1", "w2")))
        counter = iter(range(1, 100_000))
        self.runs = RunService(self.service, FakeIndex(), new_id=lambda: f"{next(counter):05d}")
        # The same project with the pre-run review on (runs wait for a review's decision).
        self.reviewed = RunService(self.service, FakeIndex(), reviewed=True,
                                   new_id=lambda: f"{next(counter):05d}")
        self.run_ids: list[str] = []
        self.saves = 0

    def write(self, rel: str, text: str) -> None:
        path = self.files.path("w1") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def full(self) -> UnitOfWork:
        """A unit of work without snapshots: the truth."""
        return UnitOfWork(self.store, FixedClock())

    def close(self) -> None:
        self.snapshots.close()
        self.store.close()


def setup_lab(root: Path, every: int) -> Lab:
    lab = Lab(root, every)
    lab.service.create_workspace("busy", "goal of the busy workspace", REASON, actor=ACTOR)
    lab.service.mount("busy", "w1", REASON, actor=ACTOR)
    lab.write("pipeline.yaml", PIPELINE)
    lab.write("modules/prep.py", "print('prep')\n")
    lab.write("modules/train.py", "print('train')\n")
    return lab


def step(lab: Lab, op: str) -> None:
    """One command (or a whole run cycle) through the real handlers."""
    if op == "save":
        lab.saves += 1
        lab.write("notes.txt", f"edit {lab.saves}\n")
        lab.service.save_version("w1", f"save number {lab.saves} of the notes", actor=ACTOR)
    elif op == "tag" and lab.saves:
        lab.service.tag_version("busy", "v1", "first", REASON, actor=ACTOR)
    elif op in ("run_ok", "run_fail", "run_stop"):
        started = lab.runs.run("w1", reason="does the pipeline still work after the edit",
                               results_spec=SPEC, actor=ACTOR)
        ids = [q["stage_run_id"] for q in started["queued"]]
        lab.run_ids += ids
        prep = ids[0]
        assert lab.runs.record_claim(prep, "worker-1")
        lab.runs.record_launch(prep, worker="worker-1", host="h", pid=7, run_dir="/r", inputs={})
        lab.runs.record_heartbeat(prep, worker="worker-1", message="alive")
        state = State.SUCCEEDED if op == "run_ok" else State.FAILED
        if op == "run_stop":  # the SVS facts: findings, a stop (asked twice), a suggestion
            lab.runs.record_findings(prep, actor="monitor", phase="during_run", source="monitor",
                                     findings=[{"signal": "nan_metric", "severity": "error"}])
            for _ in range(2):
                lab.runs.request_stop(prep, "the loss went nan, stop it", actor="monitor",
                                      requested_by="monitor")
            state = State.STOPPED
        lab.runs.record_exit(prep, worker="worker-1", state=state,
                             exit_code=1 if op == "run_fail" else 0)
        for outcome in ("miss", "partial"):  # the first suggestion is the one kept
            lab.runs.record_suggestion(prep, actor="post_run", outcome=outcome,
                                       evidence=["a line"], reviewers=["post_run"])
        for run_id in ids:
            run = lab.full().load(Run, run_id)
            if run.current is State.QUEUED:
                lab.runs.cancel(run_id, "the experiment is over; stop the rest", actor=ACTOR)
            elif run.current is not State.FINALIZED and run.current is not State.CANCELED:
                lab.runs.finalize(run_id, {"ml_outcome": "unknown",
                                           "notes": "a run of the snapshot property test"},
                                  actor=ACTOR)
    elif op == "run_blocked":
        started = lab.reviewed.run("w1", reason="does the review let this pipeline run",
                                   results_spec=SPEC, actor=ACTOR)
        ids = [q["stage_run_id"] for q in started["queued"]]
        lab.run_ids += ids
        assert lab.reviewed.record_review_started(ids[0], actor="reviewer:t",
                                                  reviewers=["static"])
        lab.reviewed.record_review(ids[0], actor="reviewer:t", decision="block",
                                   reviewers=["static"], fix="define the missing name",
                                   findings=[{"signal": "undefined_name", "severity": "error",
                                              "message": "x is undefined", "phase": "pre_run",
                                              "source": "static"}])
        lab.runs.finalize(ids[0], {"ml_outcome": "unknown",
                                   "notes": "blocked by the review in the snapshot test"},
                          actor=ACTOR)
    elif op == "remount":
        lab.service.hibernate("w1", REASON, actor=ACTOR)
        lab.service.mount("busy", "w1", REASON, actor=ACTOR)


def assert_snapshots_agree(lab: Lab) -> None:
    full = lab.full()
    pairs: list[tuple[type[Any], str]] = [(Workspace, "busy"), (Slot, "w1"),
                                          *((Run, r) for r in lab.run_ids)]
    for cls, name in pairs:
        fresh = UnitOfWork(lab.store, FixedClock(), snapshots=lab.snapshots,
                           snapshot_every=lab.uow.snapshot_every)
        via_snapshot, replayed = fresh.load(cls, name), full.load(cls, name)
        assert via_snapshot.state_dict() == replayed.state_dict(), (cls.KIND, name)
        assert via_snapshot.version == replayed.version


OPS = st.lists(st.sampled_from(["save", "tag", "run_ok", "run_fail", "run_stop", "run_blocked",
                                 "remount"]),
               min_size=1, max_size=12)


@settings(max_examples=20)
@given(ops=OPS, every=st.integers(min_value=1, max_value=5))
def test_snapshot_plus_tail_equals_a_full_replay_after_any_commands(
        tmp_path_factory: Any, ops: list[str], every: int) -> None:
    lab = setup_lab(tmp_path_factory.mktemp("lab"), every)
    try:
        for op in ops:
            step(lab, op)
            assert_snapshots_agree(lab)
    finally:
        lab.close()


def test_loading_a_busy_workspace_replays_only_the_tail(tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=10)
    try:
        for _ in range(12):
            step(lab, "run_ok")
        full = lab.full()
        full.load(Workspace, "busy")
        assert full.replayed > 12 * 3  # each run cycle adds several events to the workspace
        fresh = UnitOfWork(lab.store, FixedClock(), snapshots=lab.snapshots, snapshot_every=10)
        fresh.load(Workspace, "busy")
        assert fresh.replayed < 10
    finally:
        lab.close()


def test_a_snapshot_ahead_of_a_log_restored_from_an_older_copy_is_ignored(
        tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=1)
    try:
        step(lab, "save")
        lab.store.close()
        shutil.copy(tmp_path / "events.db", tmp_path / "older.db")
        lab.store = open_sqlite_store(tmp_path / "events.db", synchronous="OFF")
        lab.uow.store = lab.store
        for _ in range(3):
            step(lab, "save")
        ahead = lab.uow.load(Workspace, "busy")
        assert ahead.current == 4
        lab.store.close()
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"events.db{suffix}").unlink(missing_ok=True)
        shutil.copy(tmp_path / "older.db", tmp_path / "events.db")
        lab.store = open_sqlite_store(tmp_path / "events.db", synchronous="OFF")
        uow = UnitOfWork(lab.store, FixedClock(), snapshots=lab.snapshots, snapshot_every=1)
        restored = uow.load(Workspace, "busy")
        assert restored.current == 1 and sorted(restored.versions) == [1]
        assert restored.state_dict() == UnitOfWork(lab.store, FixedClock()).load(
            Workspace, "busy").state_dict()
    finally:
        lab.close()


def test_a_log_rewritten_at_the_snapshot_version_is_caught_by_the_hash(tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=1)
    try:
        step(lab, "save")
        step(lab, "save")
        snap = lab.snapshots.get(Workspace("busy").stream)
        assert snap is not None
        # Another history of the same length: the snapshot's event is no longer in the log.
        lab.snapshots.put(type(snap)(stream=snap.stream, kind=snap.kind, schema=snap.schema,
                                     version=snap.version, last_hash="f" * 64,
                                     state=b'{"garbage": true}'))
        ws = UnitOfWork(lab.store, FixedClock(), snapshots=lab.snapshots).load(Workspace, "busy")
        assert ws.current == 2 and ws.exists
        assert lab.snapshots.get(ws.stream) is None or \
            lab.snapshots.get(ws.stream).last_hash != "f" * 64  # type: ignore[union-attr]
    finally:
        lab.close()


def test_a_garbled_snapshot_file_is_a_cache_miss_not_an_error(tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=1)
    try:
        for _ in range(3):
            step(lab, "save")
        lab.snapshots.close()
        data = bytearray((tmp_path / "snapshots.db").read_bytes())
        data[:64] = b"\xff" * 64  # the header: no longer a SQLite file
        (tmp_path / "snapshots.db").write_bytes(bytes(data))
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"snapshots.db{suffix}").unlink(missing_ok=True)
        snapshots = SQLiteSnapshotStore(tmp_path / "snapshots.db")
        ws = UnitOfWork(lab.store, FixedClock(), snapshots=snapshots,
                        snapshot_every=1).load(Workspace, "busy")
        assert ws.current == 3
        assert snapshots.get(ws.stream) is not None  # started afresh and re-taken
        snapshots.close()
    finally:
        lab.close()


def test_a_snapshot_of_another_schema_is_ignored(tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=1)
    try:
        step(lab, "save")
        snap = lab.snapshots.get(Workspace("busy").stream)
        assert snap is not None
        lab.snapshots.put(type(snap)(stream=snap.stream, kind=snap.kind, schema=99,
                                     version=snap.version, last_hash=snap.last_hash,
                                     state=b"{}"))
        uow = UnitOfWork(lab.store, FixedClock(), snapshots=lab.snapshots, snapshot_every=50)
        assert uow.load(Workspace, "busy").current == 1
        assert uow.replayed == lab.full().load(Workspace, "busy").version
    finally:
        lab.close()


def test_a_snapshot_survives_an_upcast_event_in_its_tail_and_in_its_state(
        tmp_path: Path) -> None:
    """A run requested by a v1 writer (no ``siblings``): snapshot + tail still equals a full
    replay, and the upcast default is what both see."""
    store = open_sqlite_store(tmp_path / "events.db")
    run = Run("stage-old")
    current = RunRequested(actor=ACTOR, reason=REASON, at=FixedClock().now(),
                           run_id="stage-old", pipeline_run_id="prun-old", workspace="busy",
                           stage="prep", version=1, manifest="0" * 64,
                           entrypoint="modules/prep.py", config={}, config_hash="0" * 64,
                           inputs={}, outputs={}, depends_on=[], results_spec=SPEC,
                           detail={"description": REASON})
    v1 = current.model_dump(mode="json")
    del v1["siblings"]
    data = json.dumps(v1, separators=(",", ":")).encode()
    state, _ = link_state("0" * 64, run.stream.hex, 1, "RunRequested", 1, data, position=1)
    raw = sqlite3.connect(tmp_path / "events.db")
    with raw:
        raw.execute("INSERT INTO stored_events (rowid, originator_id, originator_version, topic, "
                    "state) VALUES (?, ?, ?, ?, ?)", (1, run.stream.hex, 1, "RunRequested", state))
    raw.close()
    assert split_state(store.load(run.stream)[0].state).schema_version == 1
    snapshots = SQLiteSnapshotStore(tmp_path / "snapshots.db")
    uow = UnitOfWork(store, FixedClock(), snapshots=snapshots, snapshot_every=1)
    loaded = uow.load(Run, "stage-old")  # replays the v1 event, snapshots the upcast state
    assert loaded.request is not None and loaded.request.siblings == {}
    again = UnitOfWork(store, FixedClock(), snapshots=snapshots, snapshot_every=1)
    via_snapshot = again.load(Run, "stage-old")
    assert again.replayed == 0
    assert via_snapshot.state_dict() == UnitOfWork(store, FixedClock()).load(
        Run, "stage-old").state_dict()
    snapshots.close()
    store.close()


def test_a_snapshot_whose_bytes_changed_into_other_valid_json_is_not_used(
        tmp_path: Path) -> None:
    """SQLite has no page checksums: a snapshot's state altered on disk into other valid JSON
    (here: the gate's pending runs emptied) must not be believed; its digest catches it."""
    lab = setup_lab(tmp_path, every=1)
    try:
        step(lab, "save")
        started = lab.runs.run("w1", reason="hold the gate with an ended run", results_spec=SPEC,
                               actor=ACTOR, stages=["prep"])
        prep = started["queued"][0]["stage_run_id"]
        assert lab.runs.record_claim(prep, "worker-1")
        lab.runs.record_launch(prep, worker="worker-1", host="h", pid=7, run_dir="/r", inputs={})
        lab.runs.record_exit(prep, worker="worker-1", state=State.FAILED, exit_code=1)
        held = lab.uow.load(Workspace, "busy")
        assert prep in held.awaiting
        forged = held.state_dict() | {"awaiting": {}}
        raw = sqlite3.connect(tmp_path / "snapshots.db")
        with raw:
            raw.execute("UPDATE snapshots SET state = ? WHERE stream = ?",
                        (json.dumps(forged, sort_keys=True).encode(), str(held.stream)))
        raw.close()
        fresh = UnitOfWork(lab.store, FixedClock(), snapshots=SQLiteSnapshotStore(
            tmp_path / "snapshots.db"), snapshot_every=1000)
        assert prep in fresh.load(Workspace, "busy").awaiting  # the gate still holds
    finally:
        lab.close()


def test_a_locked_snapshot_file_is_a_cache_miss_and_is_left_alone(tmp_path: Path) -> None:
    lab = setup_lab(tmp_path, every=1)
    try:
        step(lab, "save")
        lab.snapshots.close()
        holder = sqlite3.connect(tmp_path / "snapshots.db", isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # nobody else may even read
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE snapshots SET version = version")
        inode = (tmp_path / "snapshots.db").stat().st_ino
        try:
            snapshots = SQLiteSnapshotStore(tmp_path / "snapshots.db")
            ws = UnitOfWork(lab.store, FixedClock(), snapshots=snapshots,
                            snapshot_every=1).load(Workspace, "busy")
            assert ws.current == 1
            # Not deleted and recreated under the other process's feet.
            assert (tmp_path / "snapshots.db").stat().st_ino == inode
            snapshots.close()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        again = SQLiteSnapshotStore(tmp_path / "snapshots.db")
        assert again.get(Workspace("busy").stream) is not None  # the file was not discarded
        again.close()
    finally:
        lab.close()
