"""``Views``: the read side. Every projection in one SQLite file, caught up from the log.

``views.db`` is disposable: it can always be refolded from the log, and nothing derived may
answer wrong. So it repairs itself without being asked, and always by the fast rebuild path
(large pages, no fsync, indexes at the end, a second process for big logs):

- missing, made by another schema, a projection at another version, a table gone: that
  projection starts again from position 0, and a catch-up from 0 is a rebuild;
- damaged (garbage over the file or its pages, a row that cannot be read): any error opening,
  folding or querying the file other than the environment's (locked, busy, disk full, read-only,
  no permission) discards the file and refolds it, then the query is answered again;
- ahead of the log or folded from another log (an older ``events.db`` restored, a lost WAL):
  the position a projection stored is past the log's head, or the chain hash stored beside it
  differs from the log's hash there; that projection is refolded, with a warning saying why;
- far behind (more than ``FAR_BEHIND`` events): folded with the rebuild's page size and without
  fsync; and refolded from 0 when more than half the log is missing, which is quicker than
  keeping indexes up to date row by row.

A lock held by another process is not damage and is never "repaired".
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlite_utils

from quipu.core.errors import InvalidInput, QuipuError, Unavailable
from quipu.core.ports import EventStore
from quipu.projections import (
    audit_view as audit,
)
from quipu.projections import (
    dashboard_view as dashboard,
)
from quipu.projections import (
    findings_view as findings,
)
from quipu.projections import (
    lineage_view as lineage,
)
from quipu.projections import (
    patterns_view as patterns,
)
from quipu.projections import (
    project_view as project,
)
from quipu.projections import (
    runs_lookup as run_queries,
)
from quipu.projections import (
    runs_view as runs,
)
from quipu.projections import (
    sources_view as sources,
)
from quipu.projections import (
    state_md,
)
from quipu.projections import (
    thoughts_view as thoughts,
)
from quipu.projections import (
    workspaces_view as workspaces,
)

from ._base import PAGE_SIZE, Progress, Projection, Runner, Stored, create_indexes

__all__ = ["FAR_BEHIND", "PROJECTIONS", "REBUILD_PAGE_SIZE", "SCHEMA", "Views"]

log = logging.getLogger("quipu.views")

REBUILD_PAGE_SIZE = 20_000
"""Events per transaction in a rebuild: nothing reads a half-rebuilt view anyway, and fewer,
larger pages mean fewer commits and fewer per-page reads of workspace rows."""

SCHEMA = 2
"""Version of the bookkeeping tables (``_meta``, ``_positions``); a different one starts fresh.
Each projection has its own ``version`` too: a change refolds only that projection.
2: ``_positions.hash``, the log's chain hash at the stored position."""

FAR_BEHIND = 50_000
"""Events behind the log past which a catch-up takes the rebuild's settings (pages of
``REBUILD_PAGE_SIZE``, no fsync). Past it AND more than half the log behind, the projection is
refolded from 0 instead: measured at 1M events, a rebuild folds about twice as fast per event as
a catch-up that keeps every index up to date, so refolding the whole log costs less once more
than half of it is missing."""

PROJECTIONS: tuple[type[Projection], ...] = (
    project.ProjectView, workspaces.WorkspacesView, thoughts.ThoughtsView, audit.AuditView,
    runs.RunsView, dashboard.CursorsView, state_md.StateMdMarkView, sources.SourcesView,
    lineage.LineageView, patterns.PatternsView, findings.FindingsView,
)
"""Every projection, in the order they fold a page. Adding one is adding it here."""

_ENVIRONMENT_CODES = {
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_INTERRUPT,
}
"""SQLite errors that say something about the machine, not the file: another process's lock, a
full disk, no permission. Discarding a good file would not help with any of them."""

_APART = frozenset({"workspaces", "audit", "runs"})
"""Projections a large rebuild folds in a second process while this one folds the others; the
second process's tables are then copied in. These three fold the same events (workspace, version
and run facts), and the thoughts that make up much of a typical log stay here: measured on a
1,000,000-event log, the two halves take 12 s and 7 s instead of 25 s in one process."""


SIDE_FOLD_STALL = 120.0
"""Seconds a rebuild's second process may go without writing before it is killed."""


class _SideFold:
    """A forked process that rebuilds some projections into a file of its own.

    The child opens its own connection to the log (``Views.reopen``) and its own views file, so
    nothing is shared with this process but the code. ``merge_into`` waits for it and copies its
    tables and positions into the live file in one transaction.
    """

    def __init__(self, views: Views, names: list[str], page_size: int) -> None:
        self.path = views.path.with_name(f".{views.path.name}.rebuild-{os.getpid()}")
        self.names = names
        self.discard()
        ctx = multiprocessing.get_context("fork")
        self.process = ctx.Process(
            target=_fold_apart, name="quipu-rebuild",
            args=(self.path, views.reopen, names, views.until, page_size), daemon=True)
        self.process.start()

    def _progress(self) -> tuple[float, int]:
        """The newest change to the child's files (it writes as it folds)."""
        stamps = []
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                st = Path(f"{self.path}{suffix}").stat()
                stamps.append((st.st_mtime, st.st_size))
        return max(stamps, default=(0.0, 0))

    def merge_into(self, conn: sqlite3.Connection) -> bool:
        """Wait for the child and copy its tables in; False if it failed or stalled (nothing
        copied: the caller folds its share here).

        The child is forked from a process that may run other threads (the executor in
        ``quipu serve``); a lock one of them held at the fork could hang the child. So the wait
        is bounded by progress: a child whose files have not changed for ``SIDE_FOLD_STALL``
        seconds is killed, never waited on forever under the views' lock.
        """
        seen, since = self._progress(), time.monotonic()
        while self.process.exitcode is None:
            self.process.join(timeout=1.0)
            now = self._progress()
            if now != seen:
                seen, since = now, time.monotonic()
            elif self.process.exitcode is None and time.monotonic() - since > SIDE_FOLD_STALL:
                self.process.kill()
                self.process.join(timeout=10)
                return False
        if self.process.exitcode != 0:
            return False
        tables = [t for cls in PROJECTIONS if cls.name in self.names for t in cls.tables]
        conn.execute("ATTACH DATABASE ? AS side", (str(self.path),))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in tables:
                    conn.execute(f'DELETE FROM main."{table}"')
                    conn.execute(f'INSERT INTO main."{table}" SELECT * FROM side."{table}"')
                conn.execute(
                    "INSERT OR REPLACE INTO main._positions SELECT * FROM side._positions "
                    f"WHERE name IN ({','.join('?' * len(self.names))})", self.names)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("DETACH DATABASE side")
        return True

    def discard(self) -> None:
        """Remove the child's file."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()


def _fold_apart(path: Path, reopen: Callable[[], EventStore], names: list[str],
                until: int | None, page_size: int) -> None:
    store = reopen()
    try:
        with Views(path, store, until=until, page_size=page_size) as views:
            views.rebuild(names)
    finally:
        store.close()

P = ParamSpec("P")
T = TypeVar("T")


def _is_damage(exc: BaseException) -> bool:
    """Whether an error raised while opening, folding or reading the file means the file is
    broken (discard and refold), not busy or unreachable (raise).

    Garbled pages surface as "malformed" or "not a database", but also as text that is not
    UTF-8 or JSON, or a value of the wrong type in a row: every such error counts. Errors Quipu
    raises on purpose (a bad argument, a log that cannot be read) and misuse of the connection
    (closed) do not.
    """
    if isinstance(exc, QuipuError | sqlite3.ProgrammingError):
        return False
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF not in _ENVIRONMENT_CODES
        return not any(word in str(exc) for word in ("locked", "busy"))
    return isinstance(exc, ValueError | TypeError)  # UnicodeDecodeError, JSONDecodeError, ...


def _describe(exc: BaseException) -> str:
    """The error for a log line: short, and the garbage it may quote escaped."""
    text = str(exc)
    shown = "".join(c if c.isprintable() and c.isascii() else ascii(c)[1:-1] for c in text[:200])
    return f"{type(exc).__name__}: {shown}{'...' if len(text) > 200 else ''}"


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _locked(fn: Callable[P, T]) -> Callable[P, T]:
    """Serialise a method on the instance's lock (one connection, possibly many threads)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with args[0]._lock:  # type: ignore[attr-defined]
            return fn(*args, **kwargs)

    return wrapper


def _guarded(fn: Callable[Concatenate[Views, P], T]) -> Callable[Concatenate[Views, P], T]:
    """``_locked``, and a damaged file is discarded, refolded and the call made once more.

    Only once: an error that survives a refold from the log is not damage to the file.
    """

    @functools.wraps(fn)
    def wrapper(self: Views, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                if not _is_damage(exc):
                    raise
                reason = _describe(exc)
            self._repair(reason)
            return fn(self, *args, **kwargs)

    return wrapper


class Views:
    """Read models folded from ``store`` into the SQLite file at ``path``.

    ``until`` caps the log position read (an audit replays the views as of that position).
    ``page_size`` is the number of events folded per transaction (default ``PAGE_SIZE`` when
    catching up, ``REBUILD_PAGE_SIZE`` in a rebuild); ``busy_timeout`` is how long to wait for
    another process's write lock on the file. ``reopen`` opens a second connection to the same
    log: given it, a large rebuild folds its heaviest projections in a second process.
    ``far_behind`` is how many events behind a catch-up takes the rebuild path (``FAR_BEHIND``).
    Queries return plain JSON-serialisable dicts in a deterministic order; they read what was
    folded so far, so callers ``catch_up()`` first (``quipu.app.facade.Quipu`` does).
    """

    def __init__(self, path: Path, store: EventStore, *, until: int | None = None,
                 page_size: int | None = None, busy_timeout: float = 30.0,
                 reopen: Callable[[], EventStore] | None = None,
                 far_behind: int = FAR_BEHIND) -> None:
        self.path = Path(path)
        self.far_behind = far_behind
        self.store = store
        self.reopen = reopen
        self.until = until
        self.page_size = page_size
        self.busy_timeout = busy_timeout
        self._projections: list[Projection] = [cls() for cls in PROJECTIONS]
        self._lock = threading.RLock()
        self.conn, damaged = self._open()
        if damaged:  # what the file showed must be shown again, not an empty view
            self._fold()

    # --- the file ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a crash may lose the last pages folded, never mix them up.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: bulk folds touch many pages
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> tuple[sqlite3.Connection, bool]:
        """A connection to the file, and whether it was found damaged (and discarded)."""
        try:
            return self._connect(), False
        except Exception as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_damage(exc) \
                    and "unable to open" in str(exc):
                raise Unavailable(
                    f"cannot open the views at {self.path}: {exc}", code="views_unavailable",
                    hint=f"views.db is derived from the log and never holds anything else: "
                    f"check the permissions and the disk of {self.path.parent}; if "
                    f"{self.path.name} is not a file, remove it and it is rebuilt") from exc
            if not _is_damage(exc):
                raise
            log.warning("%s is damaged (%s): discarding it and refolding every view from the "
                        "log", self.path, _describe(exc))
        self._discard()
        return self._connect(), True

    def _discard(self) -> None:
        """Delete the damaged file (and its WAL) so the next open starts from nothing."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Make the file match this code: bookkeeping at ``SCHEMA``, and every projection's
        tables present at its version (a projection that is not is reset to position 0)."""
        db = sqlite_utils.Database(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = set(db.table_names())
            meta = (conn.execute("SELECT value FROM _meta WHERE key = 'schema'").fetchone()
                    if "_meta" in tables else None)
            if meta is None or meta[0] != str(SCHEMA):
                for name in tables:
                    conn.execute(f'DROP TABLE "{name}"')
                db.table("_meta").create({"key": str, "value": str}, pk="key")
                db.table("_positions").create(
                    {"name": str, "position": int, "version": int, "hash": str}, pk="name")
                conn.execute("INSERT INTO _meta VALUES ('schema', ?)", (str(SCHEMA),))
                tables = set()
            stored = dict(conn.execute("SELECT name, version FROM _positions").fetchall())
            for p in self._projections:
                if stored.get(p.name) != p.version or not set(p.tables) <= tables:
                    self._reset(db, p)
                create_indexes(db, p)  # also those an interrupted rebuild never got to
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _reset(db: sqlite_utils.Database, p: Projection) -> None:
        """Empty tables (without secondary indexes) and position 0."""
        for table in p.tables:
            db.execute(f'DROP TABLE IF EXISTS "{table}"')
        p.create(db)
        db.execute("INSERT OR REPLACE INTO _positions (name, position, version) VALUES (?, 0, ?)",
                   (p.name, p.version))

    def _repair(self, reason: str) -> None:
        """Discard the damaged file and refold every view from the log (the rebuild path)."""
        log.warning("%s is damaged (%s): discarding it and refolding every view from the log",
                    self.path, reason)
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self._discard()
        self.conn = self._connect()
        self._fold()

    def _runner(self, projections: Sequence[Projection] | None = None, *,
                page_size: int | None = None) -> Runner:
        return Runner(self.conn, self.store, projections or self._projections, until=self.until,
                      page_size=page_size or self.page_size or PAGE_SIZE)

    @_locked
    def close(self) -> None:
        """Close the file."""
        self.conn.close()

    def __enter__(self) -> Views:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- folding -------------------------------------------------------------------------------

    @_guarded
    def catch_up(self) -> int:
        """Fold every event not folded yet (up to ``until``); return the position reached.

        Views ahead of the log or folded from another log are refolded first; see the module
        docstring for when the rebuild path is taken.
        """
        return self._fold()

    def _fold(self) -> int:
        runner = self._runner()
        stored = runner.stored()  # before the head: see Runner.diverged
        head = self.store.head()
        target = runner.target(head)
        diverged = runner.diverged(stored, head)
        for why in sorted(set(diverged.values())):
            names = sorted(n for n, r in diverged.items() if r == why)
            log.warning("%s does not match the log: %s; refolding %s from the log", self.path,
                        why, ", ".join(names))
        lag = {name: target - position for name, (position, _) in stored.items()}
        refold = [p for p in self._projections
                  if p.name in diverged or (lag[p.name] > 0 and stored[p.name][0] == 0)
                  or (lag[p.name] > self.far_behind and 2 * lag[p.name] > target)]
        if refold:
            self._refold(refold, seen=stored)
        # Then every projection, the refolded ones included: a refold skipped because another
        # process got there first, or events appended meanwhile, are still to fold here.
        if max((lag[p.name] for p in self._projections if p not in refold),
               default=0) <= self.far_behind:
            return self._runner().run(target=target)[0]
        # Far behind: the rebuild's pages and no fsync (a crash leaves a file that is refolded).
        self.conn.execute("PRAGMA synchronous=OFF")
        try:
            return self._runner(page_size=self.page_size or REBUILD_PAGE_SIZE).run(
                target=target)[0]
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")

    @_guarded
    def position(self) -> int:
        """The log position every projection has folded up to."""
        return min(self._runner().positions().values())

    def names(self) -> list[str]:
        """The projections' names."""
        return [p.name for p in self._projections]

    @_guarded
    def rebuild(self, names: Sequence[str] | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
        """Drop the named projections (default: all) and refold them from position 0.

        ``progress(position, target)`` is called after every page. Returns the events read, the
        seconds taken and the rate.
        """
        chosen = list(names) if names is not None else self.names()
        unknown = sorted(set(chosen) - set(self.names()))
        if unknown:
            raise InvalidInput(f"no view called {', '.join(unknown)}", code="unknown_view",
                               hint=f"views: {', '.join(self.names())}")
        return self._refold([p for p in self._projections if p.name in chosen],
                            progress=progress)

    def _refold(self, selected: Sequence[Projection], *, progress: Progress | None = None,
                seen: Stored | None = None) -> dict[str, Any]:
        """Reset ``selected`` and fold them from 0: large pages, no fsync, indexes at the end,
        the heaviest projections in a second process when the log is big.

        With ``seen``, only projections whose stored position and hash are still those seen are
        reset, checked under the write lock: when two processes decide at once to refold, the
        one that comes second finds the first one's progress and keeps it.
        """
        rebuild_pages = self.page_size or REBUILD_PAGE_SIZE
        started = time.perf_counter()
        db = sqlite_utils.Database(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._runner().stored()
            selected = [p for p in selected if seen is None or now[p.name] == seen[p.name]]
            for p in selected:
                self._reset(db, p)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        position, events = self._runner().target(), 0
        apart = [p for p in selected if p.name in _APART]
        here = [p for p in selected if p.name not in _APART]
        side = None
        if apart and here and self.reopen is not None and self._big(rebuild_pages):
            side = _SideFold(self, [p.name for p in apart], rebuild_pages)
        else:
            here = list(selected)
        # A rebuild starts from nothing and is simply run again if it is interrupted, so it
        # need not wait for the disk at every checkpoint.
        self.conn.execute("PRAGMA synchronous=OFF")
        try:
            if here:
                position, events = self._runner(here, page_size=rebuild_pages).run(
                    progress=progress)
            if side is not None:
                if not side.merge_into(self.conn):
                    # The second process failed: fold its share here, the slow way but surely.
                    self._runner(apart, page_size=rebuild_pages).run()
                # Each process read only the events its views fold; the log up to the position
                # reached is what was rebuilt from.
                events = max(events, position)
            with db.atomic():  # indexes built once at the end beat updating them per row
                for p in selected:
                    create_indexes(db, p)
        finally:
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if side is not None:
                side.discard()
        seconds = time.perf_counter() - started
        return {"views": [p.name for p in selected], "position": position, "events": events,
                "seconds": seconds,
                "events_per_second": events / seconds if seconds > 0 else 0.0}

    def _big(self, page_size: int) -> bool:
        """Whether the log is long enough for a second process to pay for itself."""
        head = self.store.head() if self.until is None else min(self.store.head(), self.until)
        return head > 4 * page_size

    # --- queries -------------------------------------------------------------------------------

    @_guarded
    def project(self) -> dict[str, Any]:
        """``{name, goal}`` of the project."""
        return project.project(self.conn)

    @_guarded
    def workspace(self, name: str) -> dict[str, Any] | None:
        """One workspace (live, or its last incarnation with ``deleted: True``), else None."""
        return workspaces.workspace(self.conn, name)

    @_guarded
    def workspaces(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every workspace, by name."""
        return workspaces.workspaces(self.conn, include_deleted=include_deleted)

    @_guarded
    def workspace_count(self) -> int:
        """How many workspaces exist (deleted ones excluded)."""
        return workspaces.workspace_count(self.conn)

    @_guarded
    def source_counts(self) -> dict[str, int]:
        """How many sources are active and retired."""
        return sources.counts(self.conn)

    @_guarded
    def versions(self, workspace: str, *, limit: int = 50, offset: int = 0,
                 include_pruned: bool = False) -> tuple[list[dict[str, Any]], int]:
        """A page of a workspace's versions, newest first, and the total."""
        return workspaces.versions(self.conn, workspace, limit=limit, offset=offset,
                                   include_pruned=include_pruned)

    @_guarded
    def newest_version(self) -> dict[str, Any] | None:
        """The most recently saved version of any workspace, or None."""
        return workspaces.newest_version(self.conn)

    @_guarded
    def slots(self, slot_names: Sequence[str]) -> list[dict[str, Any]]:
        """Each named slot with its occupant, current version and manifest (or None)."""
        return workspaces.slots(self.conn, slot_names)

    @_guarded
    def thoughts(self, *, workspace: str | None = None, limit: int = 50,
                 offset: int = 0) -> list[dict[str, Any]]:
        """Thoughts, newest first."""
        return thoughts.thoughts(self.conn, workspace=workspace, limit=limit, offset=offset)

    @_guarded
    def sources(self, *, status: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of registered sources by name, and the total."""
        return sources.sources(self.conn, status=status, limit=limit, offset=offset)

    @_guarded
    def source(self, name: str) -> dict[str, Any] | None:
        """One source with its metadata, or None."""
        return sources.source(self.conn, name)

    @_guarded
    def audit_log(self, *, limit: int = 20, workspace: str | None = None) -> list[dict[str, Any]]:
        """Recent actions, newest first."""
        return audit.audit_log(self.conn, limit=limit, workspace=workspace)

    # --- runs: the RunIndex port of core.ports (catches up first: commands need every event) -----

    @_guarded
    def latest_output(self, workspace: str, stage: str, signal: str) -> str | None:
        """The newest run of ``stage`` that succeeded, produced ``signal`` and is not bad
        (tagged ``bad-results``, or finalized as a miss and tagged ``bad``)."""
        self.catch_up()
        return run_queries.latest_output(self.conn, workspace, stage, signal)

    @_guarded
    def previous_finalized(self, workspace: str, stage: str, metric: str,
                           exclude: str) -> tuple[str, float] | None:
        """(run_id, value) of the most recently finalized run of the stage with a value."""
        self.catch_up()
        return run_queries.previous_finalized(self.conn, workspace, stage, metric, exclude)

    @_guarded
    def best(self, workspace: str, stage: str, metric: str, exclude: str, *,
             direction: str) -> tuple[str, float] | None:
        """(run_id, value) of the stage's reference result: the finalized run most recently
        tagged ``best*``, else the best finalized value so far by ``direction``."""
        self.catch_up()
        return run_queries.best(self.conn, workspace, stage, metric, exclude,
                                direction=direction)

    # --- runs: queries -------------------------------------------------------------------------

    @_guarded
    def history(self, workspace: str, *, stage: str | None = None, tagged: str | None = None,
                metric: str | None = None, min_value: float | None = None,
                experiment_group: str | None = None, sort_by: str = "created",
                desc: bool = True, finalized_only: bool = False,
                has_value: bool | None = None, limit: int = 20,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of a workspace's runs (newest first by default) and how many match.

        ``metric`` keeps runs whose primary metric it is, ``min_value`` those whose value is at
        least it (value: the finalized value, else the last logged primary value);
        ``has_value`` keeps the runs with (True) or without (False) a value;
        ``sort_by="metric"`` orders by value and keeps only runs with one (unless
        ``has_value`` says otherwise).
        """
        if sort_by not in ("created", "metric"):
            raise InvalidInput(f"cannot sort by {sort_by!r}", code="invalid_sort",
                               hint="sort_by is 'created' or 'metric'")
        return run_queries.history(
            self.conn, workspace, stage=stage, tagged=tagged, metric=metric,
            min_value=min_value, experiment_group=experiment_group, sort_by=sort_by, desc=desc,
            finalized_only=finalized_only, has_value=has_value, limit=limit, offset=offset)

    @_guarded
    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """Everything recorded about one run (results, comparison, tags, metrics), or None."""
        return run_queries.record(self.conn, run_id)

    @_guarded
    def run_provenance(self, run_id: str) -> dict[str, Any] | None:
        """Version, manifest, config, inputs (requested and launched), outputs, downstream, and
        the environment it was launched with (``RunLaunched.environment``; None before), and
        its checkpoints: ``{name: {saves, step, sha256, size, manifest}}`` (the latest save)."""
        row = run_queries.run_row(self.conn, run_id)
        if row is None:
            return None
        names = sorted(set(row["inputs"]) | set(row["inputs_launched"]))
        return {
            "version": f"v{row['version']}", "manifest": row["manifest"],
            "entrypoint": row["entrypoint"], "config": row["config"],
            "config_hash": row["config_hash"], "depends_on": row["depends_on"],
            "inputs": {n: {"requested": row["inputs"].get(n),
                           "launched": row["inputs_launched"].get(n)} for n in names},
            "outputs_declared": row["outputs_declared"], "outputs": row["outputs"],
            "downstream": run_queries.downstream(self.conn, run_id),
            "pipeline_run_id": row["pipeline_run_id"],
            "environment": row["environment"],
            "checkpoints": row["checkpoints"] or {},
        }

    @_guarded
    def lineage(self, ref: str, *, direction: str = "upstream", depth: int = 5,
                kinds: Sequence[str] | None = None, limit: int = 60) -> dict[str, Any]:
        """The lineage graph around the node ``ref`` names (see ``lineage_view.walk``)."""
        root = lineage.resolve(self.conn, ref)
        return {"ref": ref, **lineage.walk(self.conn, root, direction=direction, depth=depth,
                                           kinds=kinds, limit=limit)}

    @_guarded
    def resolve_ref(self, ref: str) -> str:
        """The lineage node id ``ref`` names (``run:...``, ``version:ws@v3``, ...), refused
        as ``get_lineage`` refuses it (see ``lineage_view.resolve``)."""
        return lineage.resolve(self.conn, ref)

    @_guarded
    def lineage_provenance(self, run_id: str) -> dict[str, Any]:
        """A run's whole upstream closure (see ``lineage_view.provenance``)."""
        return lineage.provenance(self.conn, run_id)

    @_guarded
    def similar_run_ids(self, run_id: str) -> list[str]:
        """Run ids that share a prefix or the last characters with ``run_id`` (the candidates
        of a did-you-mean; two indexed range lookups, not a scan of every run)."""
        head, tail = run_id[:8], run_id[-4:]
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 200",
            (head, head + "\uffff")).fetchall()
        if len(run_id) > 10:
            rows += self.conn.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ? LIMIT 200", (f"%{tail}",)).fetchall()
        return sorted({str(r[0]) for r in rows})

    @_guarded
    def resumed_from(self, run_id: str) -> dict[str, Any] | None:
        """What a run started with ``resume_from`` was given (``{run_id, stage, checkpoints}``
        from its lineage node), or None."""
        found = lineage.node(self.conn, f"run:{run_id}") or {}
        resumed: dict[str, Any] | None = found.get("resumed_from")
        return resumed

    @_guarded
    def run_findings(self, run_id: str, *, limit: int = 50,
                     offset: int = 0) -> list[dict[str, Any]]:
        """One run's findings in log order (see ``findings_view``)."""
        return findings.run_findings(self.conn, run_id, limit=limit, offset=offset)

    @_guarded
    def finding_counts(self, run_id: str) -> dict[str, int]:
        """How many findings a run has per severity, and in all."""
        return findings.finding_counts(self.conn, run_id)

    @_guarded
    def run_execution(self, run_id: str) -> dict[str, Any] | None:
        """Where and how the run executes: worker, host, pid, run_dir, logs, metric series."""
        row = run_queries.run_row(self.conn, run_id)
        if row is None:
            return None
        return {k: row[k] for k in (
            "state", "worker", "host", "pid", "run_dir", "logs", "exit_code", "signal", "error",
            "problems", "created_at", "launched_at", "ended_at", "finalized_at", "last_seen_at",
            "heartbeat_message", "metric_series", "metric_points", "metrics_complete")}

    @_guarded
    def pipeline_stage_runs(self, pipeline_run_id: str) -> dict[str, str] | None:
        """A pipeline run's stage runs (stage -> run id), or None if there is no such run."""
        return run_queries.pipeline_stage_runs(self.conn, pipeline_run_id)

    @_guarded
    def pipeline_verdict(self, pipeline_run_id: str) -> dict[str, Any] | None:
        """The one finalize call of a pipeline run of several stages, once its deciding stage
        ended (``runs_lookup.pipeline_verdict``)."""
        return run_queries.pipeline_verdict(self.conn, pipeline_run_id)

    @_guarded
    def tagged_run(self, workspace: str, tag: str) -> str | None:
        """The run of ``workspace`` most recently given ``tag``."""
        return run_queries.tagged_run(self.conn, workspace, tag)

    @_guarded
    def unfinalized_runs(self, workspace: str) -> list[dict[str, Any]]:
        """The runs holding the workspace's gate, oldest first, each with its finalize call."""
        return run_queries.unfinalized(self.conn, workspace)

    @_guarded
    def experiment_context(self, workspace: str) -> dict[str, Any]:
        """Current best, awaiting finalization, recent trend (10, oldest first), alerts."""
        return run_queries.experiment_context(self.conn, workspace)

    @_guarded
    def dashboard(self, consumer: str = "default", *, section: str | None = None,
                  offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """Active runs, pending finalization, outcomes, failures, bests, and what is new since
        the consumer's cursor, within ``dashboard_view.BUDGET`` characters; ``cursor_position``
        is what ``mark_seen`` should record. With ``section``, one page of that list."""
        if section is not None:
            return dashboard.section_page(self.conn, consumer, section, offset=offset,
                                          limit=limit)
        # Findings and candidate patterns new to this consumer: an alert, never cut, so the
        # lists make room for it within the same budget.
        alert = patterns.alerts(self.conn, dashboard.cursor(self.conn, consumer))
        room = 0 if alert is None else len(json.dumps(alert)) + len('"svs_alerts": , ')
        out = dashboard.dashboard(self.conn, consumer, head=self.position(),
                                  budget=dashboard.BUDGET - room)
        if alert is not None:
            out["svs_alerts"] = alert
        return out

    # --- failure patterns ----------------------------------------------------------------------

    @_guarded
    def patterns(self, *, status: str | None = None, stage: str | None = None,
                 limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """A page of failure patterns (most recently seen first) and how many match."""
        return patterns.listing(self.conn, status=status, stage=stage, limit=limit,
                                offset=offset)

    @_guarded
    def pattern(self, pattern_id: str) -> dict[str, Any] | None:
        """One failure pattern in full, or None."""
        return patterns.get(self.conn, pattern_id)

    @_guarded
    def pattern_ids(self) -> list[str]:
        """Known pattern ids, most recently seen first (for did-you-mean)."""
        return patterns.ids(self.conn)

    @_guarded
    def approved_patterns(self, *, stage: str | None = None) -> list[dict[str, Any]]:
        """The approved patterns that apply to ``stage`` (all when None), caught up first:
        the ``PatternIndex`` port the reviewers and the monitor ask."""
        self.catch_up()
        return patterns.approved(self.conn, stage=stage)

    @_guarded
    def cursor(self, consumer: str) -> int:
        """The consumer's cursor (0 if it never marked anything seen)."""
        return dashboard.cursor(self.conn, consumer)

    @_guarded
    def state_md_key(self, dirty: Callable[[str, str | None], bool], *,
                     slot_names: Sequence[str] | None = None) -> tuple[Any, ...]:
        """What STATE.md's text depends on, cheaply: the marks the fold keeps of what it shows
        (``state_md.mark``) and each slot's occupant, version and dirty flag. Equal keys give
        equal text, so a caller that rendered for a key need not render for it again."""
        slot_rows = self._state_md_slots(dirty, slot_names)
        return (state_md.mark(self.conn),
                tuple((s["slot"], s["workspace"], s["manifest"], s["dirty"]) for s in slot_rows))

    def _state_md_slots(self, dirty: Callable[[str, str | None], bool],
                        slot_names: Sequence[str] | None) -> list[dict[str, Any]]:
        if slot_names is None:
            known = [s for (s,) in self.conn.execute("SELECT slot FROM slots")]
            slot_names = sorted(known, key=_natural)
        slot_rows = workspaces.slots(self.conn, slot_names)
        for s in slot_rows:
            s["dirty"] = bool(dirty(s["slot"], s["manifest"])) if s["workspace"] else None
        return slot_rows

    @_guarded
    def state_md(self, dirty: Callable[[str, str | None], bool], *,
                 slot_names: Sequence[str] | None = None) -> str:
        """STATE.md from the views; ``dirty(slot, manifest)`` says whether a slot has edits.

        Slots shown are ``slot_names`` or, without them, every slot ever occupied.
        """
        slot_rows = self._state_md_slots(dirty, slot_names)
        shown = workspaces.recent_workspaces(self.conn, limit=state_md.MAX_WORKSPACES)
        for w in shown:
            w["latest"] = workspaces.latest_versions(self.conn, w["name"],
                                                     limit=state_md.MAX_VERSIONS)
        return state_md.render(state_md.StateInput(
            project=project.project(self.conn), slots=slot_rows, workspaces=shown,
            workspace_total=workspaces.workspace_count(self.conn),
            sources=sources.counts(self.conn),
            thoughts=thoughts.thoughts(self.conn, limit=state_md.MAX_THOUGHTS),
            actions=audit.audit_log(self.conn, limit=state_md.MAX_ACTIONS),
            runs=dashboard.state_md_runs(self.conn, limit=state_md.MAX_RUNS,
                                         outcomes=state_md.MAX_OUTCOMES,
                                         best=state_md.MAX_BEST),
            patterns=patterns.state_md_patterns(self.conn, limit=state_md.MAX_PATTERNS)))
