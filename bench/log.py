"""Benchmark the log: append throughput, full projection rebuild, repair, and query latency.

Every figure is printed next to a baseline measured in the same run on the same machine with
plain ``sqlite3`` doing the same work without Quipu's layers, so the ratio says what those layers
cost here, whatever the machine::

    python -m bench.log                 # full size (1,000,000-event rebuild; a few minutes)
    python -m bench.log --quick         # ~30 s smoke run at small sizes
    python -m bench.log --events 200000 --json

Generated logs are cached under ``/tmp/quipu-bench`` (``$QUIPU_BENCH_DIR``), so reruns skip the
generation. Speed is never asserted in tests; the results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from quipu.adapters.eventstore import open_sqlite_store
from quipu.core.log import stream_id
from quipu.core.messages import Event
from quipu.core.ports import NewEvent
from quipu.core.project.events import ProjectInitialized, ThoughtLogged
from quipu.core.workspaces.events import (
    SlotClaimed,
    SlotReleased,
    VersionSaved,
    VersionTagged,
    WorkspaceCreated,
    WorkspaceHibernated,
    WorkspaceMounted,
)

from ._util import (
    SCRATCH,
    T0,
    FixedClock,
    Result,
    machine,
    percentile,
    raw_wal_connection,
    render_table,
    scratch_dir,
)

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS {table} (originator_id TEXT, originator_version INTEGER, "
    "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
)
"""The shape of the log table (the eventsourcing SQLite application recorder's)."""

GENERATOR_VERSION = 1
"""Bump when the generated log's mix changes, so stale caches are not reused."""


def log(msg: str) -> None:
    """Progress goes to stderr so that --json output on stdout stays clean."""
    print(msg, file=sys.stderr, flush=True)


def events_table(path: Path) -> str:
    """The name of the one events table in a store's SQLite file."""
    with sqlite3.connect(str(path)) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND sql LIKE '%originator_id%'")]
    if len(names) != 1:
        raise RuntimeError(f"expected one events table in {path}, found {names}")
    return names[0]


# --- realistic payloads --------------------------------------------------------------------------

_WORDS = ("loss", "plateaus", "after", "epoch", "warmup", "schedule", "learning", "rate",
          "tokenizer", "baseline", "ablation", "dropout", "batch", "size", "gradient", "clip",
          "eval", "split", "leak", "seed", "variance", "checkpoint", "resume", "mixed",
          "precision", "attention", "heads", "layer", "norm", "weight", "decay", "val", "auc")


def _sentence(rng: random.Random, lo: int = 12, hi: int = 30) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _digest(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


class Mix:
    """Generates a plausible event stream: workspaces created over time, mounted into slots,
    many versions saved and many thoughts logged, a few tags.

    Keeps each stream's version counter so every NewEvent lands at the next free version, the
    way real commands would, and keeps slot occupancy consistent (mount pairs with a claim,
    hibernate with a release).
    """

    def __init__(self, *, seed: int = 7, workspaces: int = 1000,
                 slots: tuple[str, ...] = ("w1", "w2", "w3"), actor: str = "agent:bench") -> None:
        self.rng = random.Random(seed)
        self.target_workspaces = workspaces
        self.slots = slots
        self.actor = actor
        self.versions: dict[UUID, int] = {}
        self.workspaces: list[str] = []
        self.current: dict[str, int | None] = {}
        self.mounted: dict[str, str] = {}  # slot -> workspace
        self.where: dict[str, str] = {}  # workspace -> slot
        self.tick = 0
        self.thought_n = 0

    def _meta(self) -> dict[str, Any]:
        self.tick += 1
        return {"actor": self.actor, "reason": _sentence(self.rng, 4, 10),
                "at": T0 + timedelta(seconds=self.tick)}

    def _next(self, stream: UUID, event: Event) -> NewEvent:
        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        return NewEvent(stream, version, event)

    def project(self) -> list[NewEvent]:
        """The project's first event."""
        return [self._next(stream_id("project", "project"), ProjectInitialized(
            **self._meta(), name="bench", goal="see how fast the log is"))]

    def thought(self, workspace: str | None) -> list[NewEvent]:
        """A ThoughtLogged on its own fresh stream (as Service.log_thought does)."""
        self.thought_n += 1
        text = _sentence(self.rng)
        stream = UUID(int=(0xB1 << 120) | self.thought_n)
        return [self._next(stream, ThoughtLogged(actor=self.actor, reason=text,
                                                 at=T0 + timedelta(seconds=self.tick),
                                                 thought=text, workspace=workspace))]

    def create(self) -> list[NewEvent]:
        """A new workspace."""
        name = f"ws-{len(self.workspaces):04d}"
        self.workspaces.append(name)
        self.current[name] = None
        return [self._next(stream_id("workspace", name), WorkspaceCreated(
            **self._meta(), workspace=name, goal=_sentence(self.rng, 5, 12)))]

    def save(self, workspace: str, trigger: str = "save") -> list[NewEvent]:
        """A new version of a workspace."""
        stream = stream_id("workspace", workspace)
        parent = self.current[workspace]
        number = (parent or 0) + 1
        self.current[workspace] = number
        return [self._next(stream, VersionSaved(
            **self._meta(), workspace=workspace, number=number, manifest=_digest(self.rng),
            parent=parent, file_count=self.rng.randint(3, 80),
            total_bytes=self.rng.randint(10_000, 5_000_000), message=_sentence(self.rng, 4, 12),
            trigger=trigger))]

    def mount(self, workspace: str, slot: str) -> list[NewEvent]:
        """Workspace into a free slot: two events, two streams, one command."""
        meta = self._meta()
        self.mounted[slot] = workspace
        self.where[workspace] = slot
        return [
            self._next(stream_id("workspace", workspace), WorkspaceMounted(
                **meta, workspace=workspace, slot=slot, version=self.current[workspace])),
            self._next(stream_id("slot", slot), SlotClaimed(**meta, slot=slot,
                                                            workspace=workspace)),
        ]

    def hibernate(self, slot: str) -> list[NewEvent]:
        """Free a slot, auto-saving first half the time."""
        workspace = self.mounted.pop(slot)
        del self.where[workspace]
        out: list[NewEvent] = []
        saved = None
        if self.rng.random() < 0.5:
            out += self.save(workspace, trigger="hibernate")
            saved = self.current[workspace]
        meta = self._meta()
        out += [
            self._next(stream_id("workspace", workspace), WorkspaceHibernated(
                **meta, workspace=workspace, slot=slot, saved_version=saved)),
            self._next(stream_id("slot", slot), SlotReleased(**meta, slot=slot,
                                                             workspace=workspace)),
        ]
        return out

    def tag(self, workspace: str) -> list[NewEvent]:
        """Tag the current version of a workspace that has one (unique tag names)."""
        number = self.current[workspace]
        if number is None:
            return []
        return [self._next(stream_id("workspace", workspace), VersionTagged(
            **self._meta(), workspace=workspace, number=number, tag=f"t{self.tick}"))]

    def commands(self, total: int) -> Iterator[list[NewEvent]]:
        """Yield one command's events at a time until about ``total`` events were yielded.

        Roughly: 55% thoughts, 35% versions, the rest creates, mounts, hibernates and tags.
        Workspaces are created over the first half of the log.
        """
        n = 0
        first = self.project()
        n += len(first)
        yield first
        create_every = max(1, (total // 2) // self.target_workspaces)
        while n < total:
            rng = self.rng
            if len(self.workspaces) < self.target_workspaces and (
                    not self.workspaces or n // create_every >= len(self.workspaces)):
                batch = self.create()
            else:
                roll = rng.random()
                if roll < 0.55:
                    target = rng.choice(self.workspaces) if rng.random() < 0.8 else None
                    batch = self.thought(target)
                elif roll < 0.90:
                    if self.mounted:
                        batch = self.save(self.mounted[rng.choice(sorted(self.mounted))])
                    else:
                        batch = self.save(rng.choice(self.workspaces))
                elif roll < 0.99:
                    free = [s for s in self.slots if s not in self.mounted]
                    pick = rng.choice(self.workspaces)
                    if free and pick not in self.where:
                        batch = self.mount(pick, rng.choice(free))
                    elif self.mounted:
                        batch = self.hibernate(rng.choice(sorted(self.mounted)))
                    else:
                        batch = self.thought(None)
                else:
                    batch = self.tag(rng.choice(self.workspaces))
            n += len(batch)
            if batch:
                yield batch


def chunked(commands: Iterator[list[NewEvent]], size: int) -> Iterator[list[NewEvent]]:
    """Pack whole commands into appends of about ``size`` events."""
    out: list[NewEvent] = []
    for batch in commands:
        out.extend(batch)
        if len(out) >= size:
            yield out
            out = []
    if out:
        yield out


# --- 1. append throughput ------------------------------------------------------------------------


def append_batches(commands: int, per_command: int, seed: int) -> list[list[NewEvent]]:
    """``commands`` appends of ``per_command`` events each: alternating ThoughtLogged (fresh
    stream) and VersionSaved (next version of one of 1,000 workspace streams)."""
    mix = Mix(seed=seed)
    for _ in range(1000):
        mix.create()
    mix.versions.clear()  # these workspace streams start empty in the benchmark file
    batches = []
    for _ in range(commands):
        batch: list[NewEvent] = []
        for j in range(per_command):
            if j % 2 == 0:
                batch += mix.thought(mix.rng.choice(mix.workspaces))
            else:
                batch += mix.save(mix.rng.choice(mix.workspaces))
        batches.append(batch)
    return batches


def time_store_append(path: Path, batches: list[list[NewEvent]], synchronous: str) -> float:
    """Seconds to append every batch through Quipu's SQLite store, one append per batch."""
    store = open_sqlite_store(path, synchronous=synchronous)  # type: ignore[arg-type]
    try:
        store.append([NewEvent(stream_id("bench", "warmup"), 1, batches[0][0].event)])
        gc.collect()
        start = time.perf_counter()
        for batch in batches:
            store.append(batch)
        return time.perf_counter() - start
    finally:
        store.close()


def stored_rows(path: Path) -> list[tuple[str, int, str, bytes]]:
    """The rows exactly as the store wrote them (the raw baseline inserts the same bytes)."""
    table = events_table(path)
    with sqlite3.connect(str(path)) as conn:
        return list(conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {table} "
            "ORDER BY rowid"))


def time_raw_append(path: Path, rows: list[tuple[str, int, str, bytes]], per_txn: int,
                    synchronous: str) -> float:
    """Seconds to insert the same rows with plain sqlite3 ``executemany``, ``per_txn`` rows
    per transaction, into a WAL table of the same shape."""
    conn = raw_wal_connection(path, synchronous)
    try:
        conn.execute(TABLE_SQL.format(table="stored_events"))
        insert = "INSERT INTO stored_events VALUES (?, ?, ?, ?)"
        conn.execute("BEGIN")
        conn.execute(insert, ("warmup", 1, "Warmup", b"x"))
        conn.execute("COMMIT")
        chunks = [rows[i:i + per_txn] for i in range(0, len(rows), per_txn)]
        gc.collect()
        start = time.perf_counter()
        for chunk in chunks:
            conn.execute("BEGIN")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def bench_append(*, quick: bool, reps: int) -> list[Result]:
    """Events/s through the store vs raw executemany, for FULL and NORMAL, 1 and 100 per txn."""
    results = []
    # (commands per run, runs): single-event commits are dominated by fsync, whose latency
    # wanders on shared disks, so they get more, shorter runs; store and raw alternate.
    plan = {1: (150, 1) if quick else (500, 2 * reps - 1),
            100: (40, 1) if quick else (400, reps)}
    for synchronous in ("FULL", "NORMAL"):
        for per_command, (commands, runs) in plan.items():
            batches = append_batches(commands, per_command, seed=per_command)
            events = commands * per_command
            store_s: list[float] = []
            raw_s: list[float] = []
            rows: list[tuple[str, int, str, bytes]] = []
            with scratch_dir("append-") as tmp:
                for rep in range(runs):
                    store_db = tmp / f"store-{rep}.db"
                    store_s.append(time_store_append(store_db, batches, synchronous))
                    if not rows:
                        rows = [r for r in stored_rows(store_db) if r[2] != "Warmup"][1:]
                        assert len(rows) == events, (len(rows), events)
                    raw_s.append(time_raw_append(tmp / f"raw-{rep}.db", rows, per_command,
                                                 synchronous))
            store_rate = events / statistics.median(store_s)
            raw_rate = events / statistics.median(raw_s)
            batched = per_command > 1
            result = Result(
                name=f"append {per_command}/cmd, sync {synchronous}",
                value=store_rate, unit="events/s", baseline=raw_rate,
                baseline_name=f"executemany {per_command} rows/txn, WAL, sync {synchronous}",
                higher_is_better=True,
                target=">= 25% of raw" if batched else "",
                extra={"events": events, "runs": runs,
                       "store_seconds": [round(s, 4) for s in store_s],
                       "raw_seconds": [round(s, 4) for s in raw_s],
                       "avg_state_bytes": round(sum(len(r[3]) for r in rows) / len(rows), 1)},
            )
            if batched:
                result.passed = result.ratio >= 0.25
            log(f"  {result.name}: {store_rate:,.0f} vs raw {raw_rate:,.0f} events/s "
                f"({result.ratio_text()})")
            results.append(result)
    return results


# --- 2. full rebuild -----------------------------------------------------------------------------


def generated_log(events: int) -> Path:
    """A cached log of about ``events`` events in the realistic mix, generated if missing.

    Generated through Quipu's own store (so the chain and the encoding are the real ones) in
    appends of ~5,000 events with synchronous OFF, into a temporary file renamed when complete.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"log-{events}-g{GENERATOR_VERSION}.db"
    if path.exists():
        log(f"  using cached log {path}")
        return path
    tmp = path.with_suffix(".partial")
    for leftover in SCRATCH.glob(tmp.name + "*"):
        leftover.unlink()
    log(f"  generating a {events:,}-event log at {path} (cached for reruns) ...")
    start = time.perf_counter()
    store = open_sqlite_store(tmp, synchronous="OFF")
    done = 0
    try:
        for batch in chunked(Mix(seed=2025).commands(events), 5000):
            store.append(batch)
            done += len(batch)
            if done % 200_000 < len(batch):
                log(f"    {done:,} events, {time.perf_counter() - start:.0f} s")
    finally:
        store.close()
    with sqlite3.connect(str(tmp)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    tmp.rename(path)
    log(f"  generated {done:,} events in {time.perf_counter() - start:.1f} s")
    return path


def raw_scan(path: Path) -> tuple[float, int]:
    """Seconds to read every row with plain sqlite3 and json.loads each event's JSON body."""
    table = events_table(path)
    conn = sqlite3.connect(str(path))
    try:
        loads = json.loads
        gc.collect()
        start = time.perf_counter()
        n = 0
        for _rowid, _stream, _version, _topic, state in conn.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {table} "
                "ORDER BY rowid"):
            loads(state[state.index(b"\n") + 1:])
            n += 1
        return time.perf_counter() - start, n
    finally:
        conn.close()


def bench_rebuild(*, events: int, profile: bool) -> list[Result]:
    """Views.rebuild() over a generated log vs a raw scan + json.loads of the same rows."""
    from quipu.projections import Views

    path = generated_log(events)
    raw_first, n = raw_scan(path)  # also warms the page cache for both
    store = open_sqlite_store(path, synchronous="OFF")
    extra: dict[str, Any] = {"events": n, "log_bytes": path.stat().st_size}
    try:
        with scratch_dir("rebuild-") as tmp:
            # As the product wires it (bootstrap): a second connection to the log lets a large
            # rebuild fold half of the projections in a second process.
            views = Views(tmp / "views.db", store,
                          reopen=lambda: open_sqlite_store(path, synchronous="OFF"))
            try:
                gc.collect()
                start = time.perf_counter()
                views.rebuild()
                seconds = time.perf_counter() - start
                extra["views_db_bytes"] = (tmp / "views.db").stat().st_size
            finally:
                views.close()
            if profile:
                # Profiling slows the fold ~1.5x, so it is a separate, shorter run (the first
                # 200,000 events) that never feeds the timed figure.
                capped = Views(tmp / "views-profiled.db", store, until=min(n, 200_000))
                try:
                    prof = cProfile.Profile()
                    prof.enable()
                    capped.rebuild()
                    prof.disable()
                    extra["profile"] = hot_spots(prof)
                finally:
                    capped.close()
    finally:
        store.close()
    raw_second, _ = raw_scan(path)
    raw_seconds = min(raw_first, raw_second)
    extra.update({"rebuild_seconds": round(seconds, 3), "raw_seconds": round(raw_seconds, 3)})
    result = Result(name=f"rebuild all views, {n:,} events", value=n / seconds,
                    unit="events/s", baseline=n / raw_seconds,
                    baseline_name="sqlite3 scan + json.loads of each event body",
                    higher_is_better=True, target=">= 25% of raw", extra=extra)
    result.passed = result.ratio >= 0.25
    log(f"  rebuild: {seconds:.1f} s ({n / seconds:,.0f} events/s) vs raw scan "
        f"{raw_seconds:.2f} s ({result.ratio_text()})")
    return [result]


def bench_repair(*, events: int) -> list[Result]:
    """The automatic repair of a deleted views.db (open + catch-up, as every command does) vs an
    explicit ``quipu rebuild`` (``Views.rebuild``) of the same log, in the same run.

    Both should take the rebuild path; before the repair went through it, the repair was the
    2,000-event catch-up path and took about twice as long.
    """
    from quipu.projections import Views

    path = generated_log(events)
    store = open_sqlite_store(path, synchronous="OFF")

    def reopen() -> Any:
        return open_sqlite_store(path, synchronous="OFF")

    n = store.head()
    try:
        with scratch_dir("repair-") as tmp:
            views_db = tmp / "views.db"
            with Views(views_db, store, reopen=reopen) as views:
                gc.collect()
                start = time.perf_counter()
                views.rebuild()
                rebuild_seconds = time.perf_counter() - start
            for suffix in ("", "-wal", "-shm"):
                Path(f"{views_db}{suffix}").unlink(missing_ok=True)
            gc.collect()
            start = time.perf_counter()
            with Views(views_db, store, reopen=reopen) as views:
                reached = views.catch_up()
            repair_seconds = time.perf_counter() - start
            assert reached == n, (reached, n)
    finally:
        store.close()
    result = Result(name=f"repair of a deleted views.db, {n:,} events", value=n / repair_seconds,
                    unit="events/s", baseline=n / rebuild_seconds,
                    baseline_name="quipu rebuild (Views.rebuild) of the same log",
                    higher_is_better=True, target=">= 80% of rebuild",
                    extra={"events": n, "repair_seconds": round(repair_seconds, 3),
                           "rebuild_seconds": round(rebuild_seconds, 3)})
    result.passed = result.ratio >= 0.8
    log(f"  repair: {repair_seconds:.1f} s vs rebuild {rebuild_seconds:.1f} s "
        f"({result.ratio_text()})")
    return [result]


def hot_spots(prof: cProfile.Profile, limit: int = 15) -> list[str]:
    """The top functions by cumulative and by own time, as text lines."""
    out = []
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(limit)
        out.append(f"--- by {key} ---")
        out += [line for line in buf.getvalue().splitlines()
                if line.strip() and not line.startswith(("   Ordered", "         "))]
    return out


# --- 3. status / inspect latency -----------------------------------------------------------------


@dataclass
class Project:
    """The latency benchmark's project: its root and a few workspace names to inspect."""

    root: Path
    workspaces: list[str]
    events: int


def build_project(root: Path, *, workspaces: int, events: int) -> Project:
    """init_project + real service commands for the workspaces, then pad through the store."""
    from quipu.app.bootstrap import init_project

    q = init_project(root, name="bench", goal="measure status latency", slots=3,
                     actor="agent:bench")
    try:
        q.service.uow.clock = FixedClock()
        names = [f"ws-{i:04d}" for i in range(workspaces)]
        reason = "benchmark workspace for latency"
        for name in names:
            q.service.create_workspace(name, f"goal of {name}", reason, actor=q.actor)
        # Three mounted workspaces with real files and a saved version, as an agent leaves them.
        for slot, name in zip(q.config.slot_names(), names, strict=False):
            q.service.mount(name, slot, reason, actor=q.actor)
            folder = q.slots.path(slot)
            for i in range(20):
                (folder / f"src/file_{i}.py").parent.mkdir(parents=True, exist_ok=True)
                (folder / f"src/file_{i}.py").write_text(f"# file {i}\n" + "x = 1\n" * 200)
            q.service.save_version(slot, "first version of the code", actor=q.actor)
        q.service.log_thought("starting the latency benchmark", actor=q.actor)
        mounted = set(names[:len(q.config.slot_names())])
        # Pad to the target size directly through the store: thoughts and versions spread over
        # the unmounted workspaces, each at its stream's next version.
        mix = Mix(seed=99, workspaces=0)
        mix.workspaces = [n for n in names if n not in mounted]
        for name in mix.workspaces:
            mix.versions[stream_id("workspace", name)] = len(q.store.load(
                stream_id("workspace", name)))
            mix.current[name] = None
        mix.tick = 10 * events

        def padding() -> Iterator[list[NewEvent]]:
            while True:
                w = mix.rng.choice(mix.workspaces)
                yield mix.thought(w) if mix.rng.random() < 0.6 else mix.save(w)

        head = q.store.head()
        for batch in chunked(padding(), 5000):
            if head >= events:
                break
            batch = batch[:events - head]
            q.store.append(batch)
            head += len(batch)
        q.views.catch_up()
        return Project(root, names, q.store.head())
    finally:
        q.close()


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds per call, ``n`` calls after two warm-up calls."""
    fn()
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def bench_latency(*, workspaces: int, events: int, calls: int, profile: bool) -> list[Result]:
    """p50/p95 of Quipu.status() and inspect_workspace() vs raw SELECTs of the same rows."""
    from quipu.app.bootstrap import open_project

    with scratch_dir("latency-") as tmp:
        start = time.perf_counter()
        project = build_project(tmp / "proj", workspaces=workspaces, events=events)
        log(f"  built a project with {workspaces:,} workspaces and {project.events:,} events "
            f"in {time.perf_counter() - start:.1f} s")
        q = open_project(project.root, actor="agent:bench")
        try:
            q.views.catch_up()
            rng = random.Random(5)
            status_ms = time_calls(q.status, calls)
            inspect_ms = time_calls(lambda: q.inspect_workspace(rng.choice(project.workspaces)),
                                    calls)
            extra_profile: dict[str, Any] = {}
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(max(20, calls // 5)):
                    q.status()
                prof.disable()
                extra_profile["profile"] = hot_spots(prof)
            views_db = project.root / ".quipu" / "views.db"
            raw_status, raw_inspect = raw_queries(views_db, rng, project.workspaces)
            raw_status_ms = time_calls(raw_status, calls)
            raw_inspect_ms = time_calls(raw_inspect, calls)
        finally:
            q.close()
    common = {"workspaces": workspaces, "events": project.events, "calls": calls}
    results = []
    for label, ms, raw_ms, target in (
        ("status()", status_ms, raw_status_ms, 50.0),
        ("inspect_workspace()", inspect_ms, raw_inspect_ms, None),
    ):
        p50, p95 = percentile(ms, 50), percentile(ms, 95)
        r50, r95 = percentile(raw_ms, 50), percentile(raw_ms, 95)
        extra = dict(common, raw_p50_ms=round(r50, 4), raw_p95_ms=round(r95, 4))
        if label == "status()":
            extra.update(extra_profile)
        results.append(Result(
            name=f"{label} p50", value=p50, unit="ms", baseline=r50,
            baseline_name="raw sqlite3 SELECT of the same view rows",
            higher_is_better=False, extra=dict(common)))
        res95 = Result(name=f"{label} p95", value=p95, unit="ms", baseline=r95,
                       baseline_name="raw sqlite3 SELECT of the same view rows",
                       higher_is_better=False,
                       target=f"< {target:g} ms" if target else "", extra=extra)
        if target:
            res95.passed = p95 < target
        results.append(res95)
        log(f"  {label}: p50 {p50:.2f} ms, p95 {p95:.2f} ms; raw p50 {r50:.3f} ms, "
            f"p95 {r95:.3f} ms")
    return results


def raw_queries(views_db: Path, rng: random.Random, names: list[str]
                ) -> tuple[Callable[[], object], Callable[[], object]]:
    """Plain sqlite3 reads of the rows status() and inspect_workspace() return, from views.db.

    status: the project row, every slot with its occupant's current version and manifest, the
    workspace count and the five newest audit rows. inspect: one workspace row with its current
    manifest, its ten newest versions, their count and its tags. No STATE.md, no file checks.
    """
    conn = sqlite3.connect(str(views_db), check_same_thread=False)
    conn.execute("PRAGMA query_only=1")

    def status() -> object:
        return (
            conn.execute("SELECT name, goal FROM project WHERE id = 1").fetchone(),
            conn.execute(
                "SELECT s.slot, s.workspace, w.current_number, v.manifest FROM slots s "
                "LEFT JOIN workspaces w ON w.name = s.workspace "
                "LEFT JOIN versions v ON v.workspace = w.name AND v.number = w.current_number"
            ).fetchall(),
            conn.execute("SELECT COUNT(*) FROM workspaces WHERE deleted = 0").fetchone(),
            conn.execute("SELECT * FROM audit ORDER BY position DESC LIMIT 5").fetchall(),
        )

    def inspect() -> object:
        name = rng.choice(names)
        return (
            conn.execute(
                "SELECT w.*, v.manifest FROM workspaces w LEFT JOIN versions v "
                "ON v.workspace = w.name AND v.number = w.current_number WHERE w.name = ?",
                (name,)).fetchone(),
            conn.execute("SELECT * FROM versions WHERE workspace = ? "
                         "ORDER BY number DESC LIMIT 10", (name,)).fetchall(),
            conn.execute("SELECT COUNT(*) FROM versions WHERE workspace = ?",
                         (name,)).fetchone(),
            conn.execute("SELECT tag, number FROM version_tags WHERE workspace = ?",
                         (name,)).fetchall(),
        )

    return status, inspect


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected benchmarks, print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.log", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None,
                        help="events in the rebuild log (default 1,000,000; 50,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, ~30 s smoke run")
    parser.add_argument("--json", action="store_true", help="write the results as JSON to stdout")
    parser.add_argument("--only", choices=("append", "rebuild", "repair", "latency"),
                        action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--profile", action="store_true",
                        help="profile rebuild and status() with cProfile (slower; hot spots "
                        "go into the JSON)")
    args = parser.parse_args(argv)
    parts = args.only or ["append", "rebuild", "repair", "latency"]
    events = args.events or (50_000 if args.quick else 1_000_000)
    latency_events = 20_000 if args.quick else 200_000
    latency_workspaces = 100 if args.quick else 1000
    calls = 30 if args.quick else 200

    results: list[Result] = []
    started = time.perf_counter()
    if "append" in parts:
        log("append throughput ...")
        results += bench_append(quick=args.quick, reps=1 if args.quick else 3)
    if "rebuild" in parts:
        log("full rebuild ...")
        results += bench_rebuild(events=events, profile=args.profile)
    if "repair" in parts:
        log("repair of a deleted views.db vs rebuild ...")
        results += bench_repair(events=events)
    if "latency" in parts:
        log("status / inspect latency ...")
        results += bench_latency(workspaces=latency_workspaces, events=latency_events,
                                 calls=calls, profile=args.profile)
    elapsed = time.perf_counter() - started

    # With --json the table still goes out, on stderr, so people watching see it too.
    out = sys.stderr if args.json else sys.stdout
    m = machine()
    print(f"\nquipu bench.log: {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
          f"SQLite {m['sqlite']}, {elapsed:.0f} s", file=out)
    print(render_table(results), file=out)
    for r in results:
        if "profile" in r.extra:
            print(f"\nprofile of {r.name}:", file=out)
            print("\n".join(r.extra["profile"]), file=out)
    if args.json:
        json.dump({"machine": m, "args": vars(args), "seconds": round(elapsed, 1),
                   "results": [r.as_dict() for r in results]}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
