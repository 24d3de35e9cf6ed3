"""``quipu doctor``: check each part ``quipu.yaml`` configures and say what to fix.

The checks are a registry (``CHECKS``: name -> function of the project's root and its
effective configuration, returning findings), run in order. An adapter adds its own with
``@doctor_check("name")`` in a small hunk here (the Docker backend: images its profiles name;
GCS: the bucket reachable and writable). A check never raises: whatever goes wrong while
checking is itself a finding, with the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quipu.adapters.docker import DockerBackend
from quipu.app.bootstrap import (
    DATA_DIR,
    STAGE_BACKENDS,
    audit_key,
    describe_log,
    open_blobs,
    open_store,
    stage_backends,
)
from quipu.app.config import BACKENDS, Config, load_config, with_env_overrides
from quipu.app.profiles import ProjectProfiles
from quipu.core.chain import split_state
from quipu.core.errors import QuipuError
from quipu.core.log import ChainBreak, verify_chain

__all__ = ["CHECKS", "Finding", "diagnose", "doctor_check"]

HEAD_EVENTS = 100
"""How many of the newest events the log check verifies (``quipu audit verify`` does all)."""


@dataclass(frozen=True)
class Finding:
    """One result of a check: ``ok`` or a problem with what to do about it."""

    part: str
    ok: bool
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"part": self.part, "ok": self.ok, "message": self.message, "fix": self.fix}


Check = Callable[[Path, Config], list[Finding]]
CHECKS: dict[str, Check] = {}
"""Every check ``quipu doctor`` runs, in order."""


def doctor_check(name: str) -> Callable[[Check], Check]:
    """Register a check under ``name`` (a later one of the same name replaces it)."""

    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def diagnose(root: Path) -> list[Finding]:
    """Run every check against the project at ``root``; a config that does not load is the
    only finding."""
    try:
        config = with_env_overrides(load_config(root))
    except QuipuError as exc:
        return [Finding("config", False, exc.message, exc.hint)]
    findings = [Finding("config", True, f"{root / 'quipu.yaml'} is valid")]
    for name, check in CHECKS.items():
        try:
            findings += check(root, config)
        except Exception as exc:  # a check that breaks is a finding, never a crash
            findings.append(Finding(name, False, f"the check failed: {type(exc).__name__}: "
                                    f"{exc}", "report this as a bug in quipu doctor"))
    return findings


@doctor_check("log")
def _log(root: Path, config: Config) -> list[Finding]:
    where = describe_log(root, config)
    try:
        store = open_store(root, config)
    except QuipuError as exc:
        return [Finding("log", False, f"the log ({where}) cannot be opened: {exc.message}",
                        exc.hint or "check eventstore.url / $QUIPU_EVENTSTORE_URL")]
    except Exception as exc:
        return [Finding("log", False, f"the log ({where}) cannot be opened: {exc}",
                        "check eventstore.url / $QUIPU_EVENTSTORE_URL and that the database "
                        "is running")]
    try:
        head = store.head()
        if head == 0:
            return [Finding("log", True, f"the log ({where}) is reachable and empty")]
        records = store.read(after=max(0, head - HEAD_EVENTS), limit=HEAD_EVENTS, until=head)
        try:
            prev = split_state(records[0].state).prev
        except (ValueError, KeyError, IndexError):
            return [Finding("log", False, f"the log's head (position {head}) has an "
                            "unreadable chain header", _AUDIT_FIX)]
        for item in verify_chain(records, prev=prev, key=audit_key(root, config)):
            if isinstance(item, ChainBreak):
                return [Finding("log", False, f"the log's chain is broken at position "
                                f"{item.position}: {item.problem}", _AUDIT_FIX)]
        return [Finding("log", True, f"the log ({where}) is reachable; head {head}, the "
                        f"newest {len(records)} events chain correctly")]
    except QuipuError as exc:
        return [Finding("log", False, f"the log ({where}) cannot be read: {exc.message}",
                        exc.hint)]
    finally:
        store.close()


_AUDIT_FIX = ("run `quipu audit verify` to find every damaged position, then restore the log "
              "from a backup")


@doctor_check("blobs")
def _blobs(root: Path, config: Config) -> list[Finding]:
    """The configured blob store (local or GCS) stores a blob and reads it back."""
    try:
        blobs, _ = open_blobs(root, config)
        summary = blobs.check()
    except QuipuError as exc:
        where = config.blobs.url if config.blobs.url != "local" else root / DATA_DIR / "blobs"
        return [Finding("blobs", False, f"the blob store {where} is not writable and readable: "
                        f"{exc.message}", exc.hint if config.blobs.url != "local" else
                        f"make {where} a directory writable by {_user()} (and check free space)")]
    except OSError as exc:
        directory = root / DATA_DIR / "blobs"
        return [Finding("blobs", False, f"the blob store {directory} is not writable: "
                        f"{exc.strerror or exc}",
                        f"make {directory} writable by {_user()} (and check free space)")]
    return [Finding("blobs", True, f"the blob store: {summary}")]


@doctor_check("executor")
def _executor(root: Path, config: Config) -> list[Finding]:
    findings = []
    for name in dict.fromkeys(("local", config.executor.backend)):
        if name not in STAGE_BACKENDS:  # pragma: no cover - config only allows BACKENDS
            findings.append(Finding(f"executor.{name}", False, f"no {name} backend",
                                    f"use one of {', '.join(BACKENDS)}"))
            continue
        try:
            backend = stage_backends(config.model_copy(
                update={"executor": config.executor.model_copy(update={"backend": name})}),
                None)[name]
            problems = backend.check()
        except QuipuError as exc:
            findings.append(Finding(f"executor.{name}", False, exc.message, exc.hint))
            continue
        findings += [Finding(f"executor.{name}", False, problem,
                             "see docs/configuration.md") for problem in problems]
        if not problems:
            findings.append(Finding(f"executor.{name}", True,
                                    f"the {name} stage backend is ready"))
    return findings


@doctor_check("profiles")
def _profiles(root: Path, config: Config) -> list[Finding]:
    profiles = ProjectProfiles(config)
    findings = []
    for name in sorted(config.profiles):
        try:
            profiles.resolve(name)
        except QuipuError as exc:
            findings.append(Finding("profiles", False, exc.message, exc.hint))
    if not findings:
        findings.append(Finding("profiles", True, f"{len(profiles.names())} compute profiles "
                                f"({', '.join(profiles.names())}); stages without one get "
                                f"{profiles.default!r}"))
    return findings


@doctor_check("images")
def _images(root: Path, config: Config) -> list[Finding]:
    if config.executor.backend != "docker":
        return []
    profiles = ProjectProfiles(config)
    wanted: dict[str, list[str]] = {}
    findings = []
    for name in profiles.names():
        try:
            resources = profiles.resolve(name)
        except QuipuError:
            continue  # the profiles check names it
        if resources.backend != "docker":
            continue
        if not resources.image:
            findings.append(Finding("images", False, f"profile {name!r} runs on docker but "
                                    "names no image", f"set profiles.{name}.image in "
                                    "quipu.yaml (`quipu image build` makes one)"))
            continue
        wanted.setdefault(resources.image, []).append(name)
    backend = DockerBackend(project=config.name)
    for image, users in wanted.items():
        try:
            present = backend.has_image(image)
        except QuipuError as exc:
            return [*findings, Finding("images", False, exc.message, exc.hint)]
        if not present:
            findings.append(Finding("images", False, f"image {image!r} of profile(s) "
                                    f"{', '.join(users)} is not on the Docker daemon",
                                    f"`quipu image build`, or `docker pull {image}`"))
    if not findings:
        findings.append(Finding("images", True, f"{len(wanted)} image(s) the docker profiles "
                                "name are on the daemon"))
    return findings


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return f"uid {os.getuid()}"
