"""A second project directory joins a project whose log and blobs are shared.

A project's log (PostgreSQL) and blob store (GCS) can be reached from many machines, but each
machine needs its own directory: its own views, run directories, blob cache and slots. Slots
are named in the log (each has its own stream), so hosts sharing a log must not share slot
names: a joining host's slots are ``HOST-w1..HOST-wN``.

``join_project`` takes the other host's ``quipu.yaml`` (a copy in the new directory, or
``like``) for every setting, replaces the name and goal with those the log holds and the slots
with the joining host's own, checks that the log and blob store really are shared and really
hold this project, and only then records ``HostJoined`` and writes the files. Any refusal
leaves the directory as it found it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import yaml

from quipu.app.bootstrap import (
    HOST_FILE,
    build,
    check_eventstore_url,
    default_actor,
    default_host,
    describe_log,
    open_store,
    write_host_file,
)
from quipu.app.config import (
    CONFIG_FILE,
    DATA_DIR,
    Config,
    blobs_url,
    check_blobs_url,
    config_bytes,
    validated_config,
    with_env_overrides,
    write_config,
)
from quipu.app.facade import Quipu
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound
from quipu.core.project.commands import JoinProject
from quipu.core.project.events import HostJoined, ProjectInitialized
from quipu.core.project.record import project_record
from quipu.core.validation import check_name, did_you_mean

__all__ = ["join_project", "join_summary"]


def join_project(root: Path, *, like: Path | None = None, eventstore: str | None = None,
                 blobs: str | None = None, host: str | None = None, slots: int = 3,
                 again: bool = False, actor: str | None = None) -> Quipu:
    """Make ``root`` a directory of the project on the shared log and blob store.

    Settings come from ``like`` (another host's ``quipu.yaml``), else from a ``quipu.yaml``
    already copied into ``root``; ``eventstore`` and ``blobs`` (URLs) override theirs.
    ``again``: ``root`` is a host already recorded (its ``.quipu/`` was lost); it gets that
    host's slots back and nothing is recorded.
    Refusals (typed, writing nothing): ``join_needs_config``, ``join_needs_shared_log``,
    ``join_needs_shared_blobs``, ``nothing_to_join``, ``join_wrong_project``,
    ``join_blobs_missing``, ``host_taken``, ``unknown_host``, ``slots_taken``,
    ``project_exists``.
    """
    root = root.resolve()
    host = check_name(host or default_host(), what="host")
    if not 1 <= slots <= 64:
        raise InvalidInput(f"--slots {slots} is out of range", code="invalid_slots",
                           hint="a host has 1 to 64 slots")
    data_dir = root / DATA_DIR
    if (data_dir / HOST_FILE).exists() or (data_dir / "events.db").exists():
        raise Conflict(f"{root} is already a project directory ({DATA_DIR}/ holds "
                       f"{'its host record' if (data_dir / HOST_FILE).exists() else 'a log'})",
                       code="project_exists",
                       hint="join from an empty directory, or one holding only the copied "
                       f"{CONFIG_FILE}")
    data = _settings(root, like)
    if eventstore is not None:
        data["eventstore"] = {**data.get("eventstore", {}), "url":
                              check_eventstore_url(eventstore)}
    if blobs is not None:
        data["blobs"] = {**data.get("blobs", {}), "url": check_blobs_url(blobs)}
    named = data.get("name")
    data["name"] = "joining"  # replaced by the log's name below
    data["slots"] = [f"{host}-w{i}" for i in range(1, slots + 1)]
    config = validated_config(data)
    shared = _check_shared(config)
    first, joined = _project_on(root, config)
    if named is not None and named != first.name:
        raise InvalidInput(f"the settings name project {named!r} but the log at "
                           f"{describe_log(root, config)} holds project {first.name!r}",
                           code="join_wrong_project",
                           hint="point eventstore.url (and eventstore.table) at the log of "
                           f"{named!r}, or copy the quipu.yaml of {first.name!r}")
    update: dict[str, Any] = {"name": first.name, "goal": first.goal}
    if again:
        update["slots"] = _recorded_slots(first, joined, host)
    config = config.model_copy(update=update)
    created = [p for p in (root, data_dir, root / "workspaces", root / "STATE.md")
               if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    for slot in config.slot_names():
        (root / "workspaces" / slot).mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(exist_ok=True)
    q: Quipu | None = None
    try:
        q = build(root, config, actor=actor or default_actor("cli"),
                  config_sha256=hashlib.sha256(config_bytes(config)).hexdigest())
        q.refresh()
        _check_blobs_hold_project(q, shared)
        if not again:
            q.bus.handle(JoinProject(host=host, slots=config.slot_names(), blobs=shared,
                                     actor=q.actor))
        write_host_file(root, host, config.slot_names())
        write_config(root, config)
        q.refresh()
        return q
    except BaseException:
        if q is not None:
            q.close()
        for path in created:  # leave the directory as it was found
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _recorded_slots(first: ProjectInitialized, joined: list[HostJoined],
                    host: str) -> list[str]:
    """The slots the log records for ``host`` (``unknown_host`` when it records no such host)."""
    recorded = {e.host: e.slots for e in joined}
    if first.host is not None:
        recorded[first.host] = first.slots or []
    if host not in recorded:
        raise NotFound(f"project {first.name!r} has no host named {host!r}",
                       code="unknown_host",
                       hint=f"{did_you_mean(host, list(recorded))}hosts: "
                       f"{', '.join(recorded) or 'none recorded'}; without --again, --join "
                       "records a new host")
    return list(recorded[host])


def join_summary(q: Quipu) -> str:
    """What a person needs after ``quipu init --join``."""
    project = q.views.project()
    hosts = project.get("hosts", [])
    lines = [f"Joined project {q.config.name!r} in {q.root}",
             f"  log:   {describe_log(q.root, q.config)}",
             f"  blobs: {blobs_url(q.config.blobs)}",
             f"  slots: {', '.join(q.config.slot_names())} (this host's own)",
             "  hosts: " + "; ".join(f"{h['host']} ({', '.join(h['slots'])})" for h in hosts),
             "",
             "Next steps:",
             f"  cd {q.root} && quipu status",
             "  mount a workspace here (it must be hibernated on the host that has it):",
             f"    quipu workspace mount NAME {q.config.slot_names()[0]} --reason \"...\""]
    return "\n".join(lines)


def _settings(root: Path, like: Path | None) -> dict[str, Any]:
    source = like if like is not None else root / CONFIG_FILE
    if not source.is_file():
        raise InvalidInput(f"no settings to join with: {source} does not exist",
                           code="join_needs_config",
                           hint=f"copy the other host's {CONFIG_FILE} into {root}, or pass "
                           "--like PATH/quipu.yaml, or give --eventstore URL and --blobs URL")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{source} is not a valid Quipu config: {exc}",
                           code="invalid_config", hint="copy it again from the other host"
                           ) from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{source} is not a valid Quipu config: not a mapping",
                           code="invalid_config", hint="copy it again from the other host")
    return data


def _check_shared(config: Config) -> str:
    """The blob store's URL, once the log and the blobs are both ones other hosts can reach."""
    effective = with_env_overrides(config)
    if not effective.eventstore.url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput(f"the log {effective.eventstore.url!r} is a file on one machine; "
                           "another host cannot share it", code="join_needs_shared_log",
                           hint="the first host's project must keep its log on PostgreSQL "
                           "(eventstore.url: postgresql://...); pass --eventstore URL")
    url = blobs_url(effective.blobs)
    if url == "local":
        raise InvalidInput("the blob store is local (.quipu/blobs on one machine); versions "
                           "saved on another host could not be read here",
                           code="join_needs_shared_blobs",
                           hint="keep the project's blobs in a bucket (blobs.url: "
                           "gs://BUCKET/PREFIX) on every host; pass --blobs URL")
    return url


def _project_on(root: Path, config: Config) -> tuple[ProjectInitialized, list[HostJoined]]:
    """The project the configured log holds (``nothing_to_join`` when it holds none)."""
    store = open_store(root, config)
    try:
        first, joined = project_record(store)
    finally:
        store.close()
    if first is None:
        raise NotFound(f"the log at {describe_log(root, config)} holds no project to join",
                       code="nothing_to_join",
                       hint="check eventstore.url and eventstore.table; to start a new "
                       "project there run `quipu init` without --join")
    return first, joined


def _check_blobs_hold_project(q: Quipu, url: str) -> None:
    """The store answers, and holds the newest version's manifest (so it is this project's).
    A store that does not answer raises its own typed error (``gcs_bucket_not_found``,
    ``gcs_access_denied``, ``gcs_credentials_missing``, ``gcs_unreachable``)."""
    q.blobs.check()
    newest = q.views.newest_version()
    if newest is not None and not q.blobs.exists(newest["manifest"]):
        raise IntegrityFailure(
            f"the blob store {url} lacks {newest['workspace']} v{newest['number']}'s "
            f"manifest ({newest['manifest'][:12]}): it is not where this project keeps its "
            "blobs", code="join_blobs_missing",
            hint="use the blobs.url (and blobs.endpoint) of the other host's quipu.yaml")
