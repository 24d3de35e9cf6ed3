"""The one composition root: a project's ``quipu.yaml`` -> concrete adapters -> ``Quipu``.

Only this module turns configuration into adapters: the log (SQLite or PostgreSQL), the blob
store, the slot files, the views, the clock and the executor. The facade is handed them; the
entry points (CLI, MCP server, demo) call ``open_project`` / ``init_project`` and the facade.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu.adapters.blobs import LocalBlobStore
from quipu.adapters.docker import DockerBackend, DockerImages
from quipu.adapters.eventstore import SQLITE_TABLE, open_sqlite_store
from quipu.adapters.seals import (
    AutoSealingStore,
    LocalSealKeeper,
    open_local_seals,
    read_key_file,
)
from quipu.adapters.slots import LocalSlotFiles
from quipu.adapters.snapshots import SQLiteSnapshotStore
from quipu.adapters.sources import LocalSourceFiles
from quipu.adapters.sources.gcs import GCSSourceObjects
from quipu.app.config import (
    CONFIG_FILE,
    DATA_DIR,
    Config,
    SvsConfig,
    blobs_url,
    check_blobs_url,
    config_bytes,
    find_project,
    load_config,
    read_config,
    validated_config,
    with_env_overrides,
    write_config,
)
from quipu.app.facade import Quipu
from quipu.app.profiles import ProjectProfiles
from quipu.app.quick_status import LocalStatusKey
from quipu.core.audit import AuditReport, Seal, make_seal, verify_log
from quipu.core.errors import Conflict, InvalidInput
from quipu.core.handlers import CommandBus
from quipu.core.patterns.detection import ApprovedPattern
from quipu.core.ports import BlobStore, EventStore, Executor, Reviewer, StageBackend
from quipu.core.project.commands import InitProject
from quipu.core.project.record import project_record
from quipu.core.runs.compute import requested_profile
from quipu.core.runs.handlers import RunService
from quipu.core.validation import check_name
from quipu.projections import Views
from quipu.projections.replay import position_at, replay_views

if TYPE_CHECKING:
    from quipu.adapters.reviewers.llm import LlmReviewer

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "STAGE_BACKENDS",
    "Config",
    "LogHandle",
    "Quipu",
    "SystemClock",
    "Workers",
    "audit_key",
    "build",
    "build_reviewers",
    "default_actor",
    "describe_log",
    "find_project",
    "init_project",
    "llm_reviewer",
    "open_log",
    "open_project",
    "open_store",
    "seal_paths",
    "stage_backends",
]


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        """Now, timezone-aware."""
        return datetime.now(UTC)


def audit_key(root: Path, config: Config) -> bytes | None:
    """The keyed chain's key from ``$QUIPU_AUDIT_KEY_FILE`` or ``audit.key_file``, or None."""
    named = with_env_overrides(config).audit.key_file
    if not named:
        return None
    path = Path(named).expanduser()
    return read_key_file(path if path.is_absolute() else root / path)


def seal_paths(root: Path, config: Config) -> list[Path]:
    """Every seal file the project writes: the default one and the automatic seals' file."""
    paths = [root / DATA_DIR / "seals.jsonl"]
    if config.audit.auto_seal is not None:
        auto = Path(config.audit.auto_seal.path).expanduser()
        auto = auto if auto.is_absolute() else root / auto
        if auto not in paths:
            paths.append(auto)
    return paths


def open_store(root: Path, config: Config) -> EventStore:
    """The log chosen by ``$QUIPU_EVENTSTORE_URL`` or ``eventstore.url``, keyed with the audit key
    and sealing itself when ``audit`` says so."""
    store = _open_log(root, config, audit_key(root, config))
    auto = config.audit.auto_seal
    if auto is None:
        return store
    return AutoSealingStore(store, open_local_seals(seal_paths(root, config)[-1]),
                            every_events=auto.every_events, every_minutes=auto.every_minutes,
                            clock=SystemClock().now)


def check_eventstore_url(url: str) -> str:
    """``url`` if it names a log Quipu can open, else ``InvalidInput(invalid_eventstore_url)``."""
    if url == "sqlite" or url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return url
    raise InvalidInput(f"unknown event store {url!r}", code="invalid_eventstore_url",
                       hint="use 'sqlite' (default), sqlite:///path/events.db or "
                       "postgresql://user:pass@host/db")


def _open_log(root: Path, config: Config, key: bytes | None) -> EventStore:
    url = check_eventstore_url(_log_url(config))
    if url.startswith(("postgresql://", "postgres://")):
        from quipu.adapters.eventstore.postgres import open_postgres_store

        return open_postgres_store(url, table=config.eventstore.table, key=key)
    log_file = sqlite_log_file(root, config)
    assert log_file is not None  # check_eventstore_url let only sqlite URLs through
    return open_sqlite_store(log_file, synchronous=config.eventstore.synchronous, key=key)


def open_blobs(root: Path, config: Config) -> tuple[BlobStore, Callable[[str], str]]:
    """The blob store ``$QUIPU_BLOBS_URL`` or ``blobs.url`` chooses, and where a blob's bytes
    can be read as a local file (for describing sources). Opening a GCS store sends nothing."""
    url = blobs_url(config.blobs)
    data = root / DATA_DIR
    if url == "local":
        local = LocalBlobStore(data / "blobs")
        return local, lambda digest: str(local.path(digest))
    from quipu.adapters.blobs.gcs import GCSBlobStore

    remote = GCSBlobStore(url, data / "blobcache",
                          cache_bytes=int(config.blobs.cache_gb * (1 << 30)),
                          endpoint=config.blobs.endpoint,
                          retry_seconds=config.blobs.retry_seconds)
    return remote, lambda digest: str(remote.local_path(digest))


def _log_url(config: Config) -> str:
    return with_env_overrides(config).eventstore.url


def _local_backend(blobs: BlobStore | None) -> StageBackend:
    from quipu.adapters.executors.process import LocalProcessBackend

    return LocalProcessBackend(blobs)


def _docker_backend(blobs: BlobStore | None) -> StageBackend:
    return DockerBackend(blobs=blobs)


STAGE_BACKENDS: dict[str, Callable[[BlobStore | None], StageBackend]] = {
    "local": _local_backend,
    "docker": _docker_backend,
}
"""``executor.backend`` / a profile's ``backend`` -> how to build that stage backend (given
the blob store for environment facts; None where none is open, as in ``quipu doctor``)."""


def stage_backends(config: Config, blobs: BlobStore | None) -> dict[str, StageBackend]:
    """The stage backends ``config`` sets up: ``local`` always, and ``executor.backend``."""
    names = dict.fromkeys(("local", config.executor.backend))
    backends: dict[str, StageBackend] = {name: STAGE_BACKENDS[name](blobs) for name in names}
    docker = backends.get("docker")
    if isinstance(docker, DockerBackend):
        docker.project = config.name  # the label a project's containers carry
    return backends


def describe_log(root: Path, config: Config) -> str:
    """Where the project's log is, for a person: the SQLite file (relative to the project when
    inside it) or the PostgreSQL host, database and table, never a password."""
    log_file = sqlite_log_file(root, config)
    if log_file is not None:
        try:
            shown = str(log_file.resolve().relative_to(root.resolve()))
        except ValueError:
            shown = str(log_file)
        return f"{shown} (SQLite)"
    from urllib.parse import urlsplit

    url = urlsplit(_log_url(config))
    where = f"{url.hostname or 'localhost'}{f':{url.port}' if url.port else ''}"
    return f"PostgreSQL {where}{url.path}, table {config.eventstore.table}"


def sqlite_log_file(root: Path, config: Config) -> Path | None:
    """The SQLite file of the project's log, or None when the log is not an SQLite file."""
    url = _log_url(config)
    if url == "sqlite":
        return root / DATA_DIR / "events.db"
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


@dataclass
class LogHandle:
    """The log of a project opened alone, for commands that read or check only the log
    (``quipu events``, ``quipu audit ...``): no views are folded, nothing is repaired."""

    root: Path
    config: Config
    store: EventStore

    def seal_path(self, given: Path | None = None) -> Path:
        """Where seals are kept: ``given``, else ``.quipu/seals.jsonl``."""
        return given if given is not None else self.root / DATA_DIR / "seals.jsonl"

    def seals(self, given: Path | None = None) -> LocalSealKeeper:
        """The seal keeper at ``seal_path(given)``."""
        return open_local_seals(self.seal_path(given))

    def verify(self, seals: Path | None = None) -> tuple[AuditReport, int]:
        """Recompute the chain (and the keyed links, given the project's audit key) against the
        seals at ``seal_path(seals)`` and the automatic seals' file: (report, seals read)."""
        files = seal_paths(self.root, self.config)
        if seals is not None:
            files[0] = seals
        sealed = [s for path in files for s in open_local_seals(path).read_all()]
        return verify_log(self.store, sealed, key=self.key), len(sealed)

    @property
    def key(self) -> bytes | None:
        """The keyed chain's key (``audit.key_file`` / ``$QUIPU_AUDIT_KEY_FILE``), or None."""
        return audit_key(self.root, self.config)

    def seal(self, given: Path | None = None) -> tuple[Seal, Path]:
        """Append a seal of the head to ``seal_path(given)``; return it and where it went."""
        made = make_seal(self.store, SystemClock().now())
        path = self.seal_path(given)
        self.seals(given).append(made)
        return made, path

    def position_at(self, moment: datetime) -> int:
        """The position of the newest event at or before ``moment``."""
        return int(position_at(self.store, moment))

    def replay(self, position: int, directory: Path) -> Views:
        """The views as they were at ``position``, folded into ``directory`` (caller closes)."""
        return replay_views(self.store, position, directory)

    def export_prov(self, *, until: int | None = None, run: str | None = None,
                    workspace: str | None = None) -> dict[str, Any]:
        """W3C PROV-JSON of the log up to ``until``: all of it, the upstream closure of
        ``run``, or ``workspace`` (see ``quipu.exports.prov``)."""
        from quipu.exports import prov_document, read_history

        return prov_document(read_history(self.store, until=until), run=run,
                             workspace=workspace)

    def export_openlineage(self, *, until: int | None = None) -> list[dict[str, Any]]:
        """One OpenLineage run event per run transition of the log up to ``until``."""
        from quipu.exports import openlineage_events, read_history

        return openlineage_events(read_history(self.store, until=until))

    def close(self) -> None:
        """Release the log's connections."""
        self.store.close()

    def __enter__(self) -> LogHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(start: Path | None = None) -> LogHandle:
    """Open only the log of the project at (or above) ``start``."""
    root = find_project(start)
    config = load_config(root)
    return LogHandle(root, config, open_store(root, config))


def default_actor(kind: str) -> str:
    """Who is acting: ``$QUIPU_ACTOR``, else ``<kind>:<user>``."""
    env = os.environ.get("QUIPU_ACTOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{kind}:{user}"


def build(root: Path, config: Config, *, actor: str, config_sha256: str | None = None) -> Quipu:
    """Build every adapter ``config`` chooses and hand them to a new facade.

    ``config_sha256`` is the sha256 of the ``quipu.yaml`` bytes ``config`` was parsed from;
    with it (and an SQLite log) the facade keeps STATE.md's key for ``quipu status``.
    """
    data = root / DATA_DIR
    config = with_env_overrides(config)
    store = open_store(root, config)
    try:
        blobs, blob_path = open_blobs(root, config)
        slots = LocalSlotFiles(root / "workspaces", blobs, data / "slotcache")
        views = Views(data / "views.db", store, reopen=lambda: open_store(root, config))
    except BaseException:
        store.close()  # an adapter that cannot be built must not leave the log open
        raise

    def executor(runs: RunService, on_change: Callable[[], None]) -> Executor:
        from quipu.adapters.executors.executor import StageExecutor

        profiles = ProjectProfiles(config)
        executor = StageExecutor(data / "runs", store, blobs, runs,
                                 worker_id=f"local:{os.uname().nodename}:{os.getpid()}",
                                 backends=stage_backends(config, blobs),
                                 profiles=lambda stage_config: profiles.resolve(
                                     requested_profile(stage_config)),
                                 max_parallel=config.executor.max_parallel,
                                 heartbeat_timeout=config.executor.heartbeat_timeout,
                                 on_change=on_change, position_file=data / "executor.json",
                                 patterns=approved)
        return Workers(executor, *svs_followers(store, runs, config, data, approved))

    def approved(stage: str) -> list[ApprovedPattern]:
        """The approved failure patterns of ``stage`` (the monitor and the reviewers use them)."""
        return [ApprovedPattern.from_row(r) for r in views.approved_patterns(stage=stage)]

    def reviewer(runs: RunService, on_change: Callable[[], None]) -> Executor:
        from quipu.adapters.reviewers import ReviewWorker

        return ReviewWorker(store, blobs, runs, build_reviewers(config.svs),
                            worker_id=f"{os.uname().nodename}:{os.getpid()}",
                            fail_open=config.svs.fail_open, timeout=config.svs.timeout,
                            patterns=lambda _ws, stage: [p.context() for p in approved(stage)],
                            on_change=on_change, position_file=data / "reviewer.json",
                            leases=data / "reviewers")

    def patterns(bus: CommandBus, on_change: Callable[[], None]) -> Executor:
        from quipu.adapters.patterns import PatternFollower

        return PatternFollower(store, bus.handle,
                               actor=f"patterns:{os.uname().nodename}:{os.getpid()}",
                               position_file=data / "patterns.json", on_change=on_change)

    def live_log(run_dir: Path) -> bytes:
        from quipu.adapters.executors.local import read_log

        return read_log(run_dir)

    log_file = sqlite_log_file(root, config)
    status_key = None if log_file is None or config_sha256 is None else LocalStatusKey(
        root=root, log_file=log_file.resolve(), table=SQLITE_TABLE,
        slots_root=slots.root, slot_cache=slots.cache_dir, ignore=slots.ignore,
        config_sha256=config_sha256, eventstore_env=os.environ.get("QUIPU_EVENTSTORE_URL"))
    return Quipu(root, config, store=store, blobs=blobs, slots=slots, views=views,
                 clock=SystemClock(), actor=actor, executor=executor, live_log=live_log,
                 reviewer=None if config.svs.reviewer == "none" else reviewer,
                 snapshots=SQLiteSnapshotStore(data / "snapshots.db"), status_key=status_key,
                 source_files=LocalSourceFiles(blob_path=blob_path),
                 # gs:// sources: read with the blob store's GCS settings, staged into it
                 remote_sources=GCSSourceObjects(
                     blobs, data / "staging", endpoint=config.blobs.endpoint,
                     retry_seconds=config.blobs.retry_seconds),
                 images=DockerImages(root, config.name), followers=(patterns,))


class Workers:
    """The executor and the SVS followers beside it, started and stopped as one worker.

    Each is stopped even when another fails to (a monitor in trouble never keeps the executor
    running, nor the other way round); the first failure is raised afterwards.
    """

    def __init__(self, *workers: Executor) -> None:
        self.workers = workers

    def running(self) -> list[str]:
        """The runs whose stages the executor among these workers watches."""
        found: set[str] = set()
        for worker in self.workers:
            running = getattr(worker, "running", None)
            if callable(running):
                found.update(running())
        return sorted(found)

    def start(self) -> None:
        """Start every worker, the executor first."""
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        """Stop every worker, the last started first."""
        failure: BaseException | None = None
        for worker in reversed(self.workers):
            try:
                worker.stop()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def svs_followers(store: EventStore, runs: RunService, config: Config,
                  data: Path | None = None,
                  patterns: Callable[[str], Sequence[ApprovedPattern]] | None = None,
                  ) -> list[Executor]:
    """The during-run monitor and the post-run review ``config.svs`` turns on (their positions
    saved in ``data``, ``.quipu/``, when given)."""
    from quipu.adapters.monitor import PostRunReviewer, RunMonitor
    from quipu.core.reviews.monitoring import MonitorRules

    found: list[Executor] = []
    m = config.svs.monitor
    if m.enabled:
        rules = MonitorRules(
            auto_stop=m.auto_stop, loss_metrics=tuple(m.loss_metrics),
            loss_spike_factor=m.loss_spike_factor, stall_seconds=m.stall_minutes * 60,
            grad_norm_metrics=tuple(m.grad_norm_metrics), grad_norm_factor=m.grad_norm_factor,
            throughput_metrics=tuple(m.throughput_metrics), throughput_drop=m.throughput_drop,
            min_points=m.min_points)
        window = None
        if m.window_review_minutes and config.svs.reviewer == "llm":
            from quipu.adapters.reviewers.outcome import LlmWindowReview

            window = LlmWindowReview(llm_reviewer(config.svs))
        found.append(RunMonitor(store, runs, rules, tick=m.tick_seconds, patterns=patterns,
                                window_review=window,
                                window_every=(m.window_review_minutes or 0) * 60 or None,
                                position_file=data and data / "monitor.json"))
    if config.svs.post_run:
        second = None
        if config.svs.reviewer == "llm":  # the same model gives a second opinion after a run
            from quipu.adapters.reviewers.outcome import LlmOutcomeReview

            second = LlmOutcomeReview(llm_reviewer(config.svs))
        found.append(PostRunReviewer(store, runs, tick=m.tick_seconds, second_opinion=second,
                                     position_file=data and data / "post_run.json"))
    return found


def llm_reviewer(svs: SvsConfig) -> LlmReviewer:
    """The llm client ``svs`` configures (``svs.llm_*``, else ``$QUIPU_LLM_ENDPOINT``,
    ``$QUIPU_LLM_MODEL`` and ``$QUIPU_LLM_API_KEY``): the pre-run reviewer, and the post-run
    review's second opinion."""
    from quipu.adapters.reviewers.llm import LlmReviewer

    key = svs.llm_api_key.get_secret_value() if svs.llm_api_key else None
    return LlmReviewer(
        api=svs.llm_api,
        endpoint=svs.llm_endpoint or os.environ.get("QUIPU_LLM_ENDPOINT", ""),
        model=svs.llm_model or os.environ.get("QUIPU_LLM_MODEL", ""),
        api_key=key or os.environ.get("QUIPU_LLM_API_KEY"),
        # 90% of the review's time: the reviewer reports its own timeout before the review
        # adapter's deadline abandons it.
        timeout=svs.timeout * 0.9, retries=svs.llm_retries)


def build_reviewers(svs: SvsConfig) -> list[Reviewer]:
    """The pre-run reviewers ``svs`` chooses, ``static`` first (none when ``reviewer: none``).

    The llm reviewer's endpoint, model and key come from ``svs.llm_*`` or, when unset, from
    ``$QUIPU_LLM_ENDPOINT``, ``$QUIPU_LLM_MODEL`` and ``$QUIPU_LLM_API_KEY``.
    """
    from quipu.adapters.reviewers import StaticReviewer

    if svs.reviewer == "none":
        return []
    chosen: list[Reviewer] = [StaticReviewer()]
    if svs.reviewer == "llm":
        chosen.append(llm_reviewer(svs))
    elif svs.reviewer == "command":
        from quipu.adapters.reviewers.command import CommandReviewer

        assert svs.command
        chosen.append(CommandReviewer(svs.command, timeout=svs.timeout * 0.9,
                                      max_output_bytes=svs.max_output_bytes))
    return chosen


def default_host() -> str:
    """This machine's short host name as a valid name (``host`` when it has none)."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = re.sub(r"[^a-z0-9_.-]+", "-", raw).strip("-_.")[:48]
    return cleaned or "host"


def init_project(root: Path, *, name: str | None = None, goal: str = "",
                 slots: int = 3, actor: str | None = None, eventstore: str | None = None,
                 blobs: str | None = None, host: str | None = None) -> Quipu:
    """Create ``quipu.yaml``, ``.quipu/`` and ``workspaces/`` and record the project, with
    the host that made it and its slots. ``eventstore`` and ``blobs`` (URLs) are written to
    ``quipu.yaml`` when given."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / CONFIG_FILE).exists():
        raise Conflict(f"{root} already has a {CONFIG_FILE}", code="project_exists",
                       hint="use `quipu status` there, or pick another directory")
    data: dict[str, Any] = {"name": check_name(name or root.name, what="project"),
                            "goal": goal, "slots": slots}
    if eventstore is not None:
        data["eventstore"] = {"url": check_eventstore_url(eventstore)}
    if blobs is not None:
        data["blobs"] = {"url": check_blobs_url(blobs)}
    config = validated_config(data)
    host = check_name(host or default_host(), what="host")
    created = [p for p in (root / DATA_DIR, root / "workspaces") if not p.exists()]
    (root / DATA_DIR).mkdir(exist_ok=True)
    (root / "workspaces").mkdir(exist_ok=True)
    for slot in config.slot_names():
        (root / "workspaces" / slot).mkdir(exist_ok=True)
    q: Quipu | None = None
    try:
        q = build(root, config, actor=actor or default_actor("cli"),
                  config_sha256=hashlib.sha256(config_bytes(config)).hexdigest())
        q.bus.handle(InitProject(name=config.name, goal=goal, actor=q.actor, host=host,
                                 slots=config.slot_names()))
    except BaseException:
        if q is not None:
            q.close()
        for path in created:  # a refused init (project_exists on a shared log) leaves nothing
            shutil.rmtree(path, ignore_errors=True)
        raise
    write_host_file(root, host, config.slot_names())
    write_config(root, config)
    q.refresh()
    return q


HOST_FILE = "host.json"
"""``.quipu/host.json``: which host of the project this directory is (written by init and
join; never copied with quipu.yaml, so a hand-copied quipu.yaml is recognised)."""


def write_host_file(root: Path, host: str, slots: Sequence[str]) -> None:
    """Record that the directory at ``root`` is ``host``, with ``slots``."""
    path = root / DATA_DIR / HOST_FILE
    tmp = path.with_name(f".{HOST_FILE}.tmp")
    tmp.write_text(json.dumps({"host": host, "slots": list(slots)}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_joined(q: Quipu) -> None:
    """Refuse (``not_joined``) a directory on a shared log that never joined it: a
    ``quipu.yaml`` copied by hand from another host would use that host's slots.

    A log in an SQLite file is one machine's; a log whose project records no host predates
    hosts; a directory with ``.quipu/host.json`` was made by init or join.
    """
    if sqlite_log_file(q.root, q.config) is not None \
            or (q.root / DATA_DIR / HOST_FILE).is_file():
        return
    first, joined = project_record(q.store)
    if first is None or first.host is None:
        return
    hosts = [first.host, *(e.host for e in joined)]
    raise Conflict(
        f"{q.root} has not joined project {first.name!r}: its log is shared by hosts "
        f"{', '.join(hosts)}, and this directory is none of them (a copied quipu.yaml names "
        "another host's slots)", code="not_joined",
        hint="run `quipu init --join --host NAME` here to join with slots of its own; if this "
        f"directory is one of those hosts and lost its {DATA_DIR}/, run `quipu init --join "
        "--host NAME --again`")


def open_project(root: Path | None = None, *, actor: str | None = None) -> Quipu:
    """Open the project at (or above) ``root`` (``not_joined`` for a directory on a shared
    log that never joined it)."""
    root = find_project(root)
    config, digest = read_config(root)
    q = build(root, config, actor=actor or default_actor("cli"), config_sha256=digest)
    try:
        check_joined(q)
    except BaseException:
        q.close()
        raise
    return q
