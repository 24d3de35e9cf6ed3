"""``quipu.yaml``: what a project chooses, validated with clear errors.

Every adapter is picked from here by ``quipu.app.bootstrap`` (the one composition root); the
facade and the entry points only ever see the parsed ``Config``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.reviews.statistics import ContractMode, StatChecks
from quipu.core.validation import check_name

__all__ = [
    "BACKENDS",
    "BLOBS_URL_ENV",
    "CONFIG_FILE",
    "DATA_DIR",
    "ENV_OVERRIDES",
    "AuditConfig",
    "AutoSealConfig",
    "BlobsConfig",
    "Config",
    "DataConfig",
    "EventStoreConfig",
    "ExecutorConfig",
    "MonitorConfig",
    "ProfileConfig",
    "SvsConfig",
    "blobs_url",
    "check_blobs_url",
    "find_project",
    "load_config",
    "parse_duration",
    "parse_memory",
    "validated_config",
    "with_env_overrides",
    "write_config",
]

CONFIG_FILE = "quipu.yaml"
DATA_DIR = ".quipu"


class EventStoreConfig(BaseModel):
    """Where the log lives: ``sqlite`` (``.quipu/events.db``) or a ``postgresql://`` URL."""

    model_config = ConfigDict(extra="forbid")

    url: str = "sqlite"
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    table: str = "quipu_events"


BACKENDS = ("local", "docker")
"""The stage backends ``executor.backend`` and a profile's ``backend`` may name."""
Backend = Literal["local", "docker"]
BLOBS_URL_ENV = "QUIPU_BLOBS_URL"
_GS_URL = re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[^\s]*)?")


def check_blobs_url(url: str) -> str:
    """``url`` if it names a blob store (``local`` or ``gs://bucket[/prefix]``), else
    ``InvalidInput(code="invalid_blobs_url")``."""
    if url == "local" or _GS_URL.fullmatch(url):
        return url
    raise InvalidInput(f"blobs.url {url!r} names no blob store", code="invalid_blobs_url",
                       hint="use 'local' (.quipu/blobs, the default) or gs://BUCKET/PREFIX "
                       "(a bucket name is 3-63 characters of a-z, 0-9, '.', '_' and '-')")


class BlobsConfig(BaseModel):
    """Where blobs live: ``local`` (``.quipu/blobs``) or a GCS bucket, ``gs://bucket/prefix``,
    read through a bounded cache under ``.quipu/blobcache`` (see docs/blobs.md)."""

    model_config = ConfigDict(extra="forbid")

    url: str = "local"
    cache_gb: float = Field(default=20.0, gt=0)
    endpoint: str | None = None
    retry_seconds: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url_valid(cls, value: str) -> str:
        try:
            return check_blobs_url(value)
        except InvalidInput as exc:
            raise ValueError(f"{exc.message} ({exc.hint})") from None


def blobs_url(config: BlobsConfig) -> str:
    """The blob store chosen by ``$QUIPU_BLOBS_URL``, else ``blobs.url`` (checked)."""
    return check_blobs_url(os.environ.get(BLOBS_URL_ENV) or config.url)


class ExecutorConfig(BaseModel):
    """How the embedded executor runs stages.

    ``backend`` is where stages run unless their profile says otherwise (``local`` processes
    are always available besides it); ``profile`` the compute profile of a stage whose config
    names none (default: ``local`` with the local backend, ``cpu-small`` otherwise).
    """

    model_config = ConfigDict(extra="forbid")

    max_parallel: int = Field(default=2, ge=1, le=64)
    heartbeat_timeout: float = Field(default=600.0, gt=0)
    backend: Backend = "local"
    profile: str | None = None


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_MIB = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_memory(value: int | float | str) -> int:
    """MiB from ``512`` (MiB), ``"512m"``, ``"4g"``, ``"4GiB"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as 512m or 4g")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    else:
        found = _MEMORY.match(value)
        if found is None:
            raise ValueError(f"memory {value!r} is not a size such as 512m or 4g")
        number, unit = float(found.group(1)), found.group(2).lower()
    mib = int(number * _MEMORY_MIB[unit])
    if mib < 4:
        raise ValueError(f"memory {value!r} is below 4 MiB")
    return mib


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``90`` (seconds), ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("timeout must be a duration such as 90s, 30m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.match(value)
        if found is None:
            raise ValueError(f"timeout {value!r} is not a duration such as 90s, 30m or 2h")
        seconds = float(found.group(1)) * _DURATION_S[(found.group(2) or "").lower()]
    if seconds <= 0:
        raise ValueError("timeout must be above 0")
    return seconds


class ProfileConfig(BaseModel):
    """One compute profile (``profiles.NAME`` in quipu.yaml): where and with what a stage runs.

    ``memory`` is a size (``512m``, ``4g``; a bare number is MiB), ``timeout`` a duration
    (``90s``, ``30m``, ``2h``; a bare number is seconds), ``network`` None means the
    backend's default (the local backend cannot take it away; a container has none).
    """

    model_config = ConfigDict(extra="forbid")

    backend: Backend = "local"
    image: str | None = None
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: int | str | None = None
    gpus: int = Field(default=0, ge=0, le=64)
    timeout: float | str | None = None
    network: bool | None = None

    @field_validator("memory")
    @classmethod
    def _memory_valid(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_memory(value)
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout_valid(cls, value: float | str | None) -> float | str | None:
        if value is not None:
            parse_duration(value)
        return value

    def memory_mb(self) -> int | None:
        """The memory limit in MiB, None for none."""
        return None if self.memory is None else parse_memory(self.memory)

    def timeout_seconds(self) -> float | None:
        """The timeout in seconds, None for none."""
        return None if self.timeout is None else parse_duration(self.timeout)


class AutoSealConfig(BaseModel):
    """``audit.auto_seal``: seal the log's head every N events and/or M minutes, to ``path``."""

    model_config = ConfigDict(extra="forbid")

    every_events: int | None = Field(default=None, ge=1)
    every_minutes: float | None = Field(default=None, gt=0)
    path: str = f"{DATA_DIR}/seals.jsonl"

    @model_validator(mode="after")
    def _some_period(self) -> AutoSealConfig:
        if self.every_events is None and self.every_minutes is None:
            raise ValueError("auto_seal needs every_events or every_minutes")
        return self


class AuditConfig(BaseModel):
    """``audit``: the keyed chain's key file and automatic seals (see docs/audit.md)."""

    model_config = ConfigDict(extra="forbid")

    key_file: str | None = None
    auto_seal: AutoSealConfig | None = None


class DataConfig(BaseModel):
    """Where run inputs may come from: the project, the listed roots, or anywhere if allowed."""

    model_config = ConfigDict(extra="forbid")

    roots: list[str] = Field(default_factory=list)
    allow_any_path: bool = False


class MonitorConfig(BaseModel):
    """``svs.monitor``: the during-run monitor's rules and thresholds (docs/svs.md).

    Metric names are matched case-insensitively against the glob patterns. ``stall_minutes``
    without a new metric point is a warning; a NaN/Inf metric and a loss above
    ``loss_spike_factor`` x its running minimum are errors, which ``auto_stop`` turns into a
    stop request. ``window_review_minutes``: with ``svs.reviewer: llm``, the model looks at a
    running run's recent metrics that often (switched off after repeated failures).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    auto_stop: bool = False
    loss_metrics: list[str] = Field(default_factory=lambda: ["*loss*"])
    loss_spike_factor: float = Field(default=5.0, gt=1)
    stall_minutes: float = Field(default=30.0, gt=0)
    grad_norm_metrics: list[str] = Field(default_factory=lambda: ["*grad*norm*"])
    grad_norm_factor: float = Field(default=10.0, gt=1)
    throughput_metrics: list[str] = Field(default_factory=lambda: [
        "*throughput*", "*per_sec*", "*per_second*", "*samples_s", "*tokens_s"])
    throughput_drop: float = Field(default=0.1, gt=0, lt=1)
    min_points: int = Field(default=3, ge=1)
    tick_seconds: float = Field(default=5.0, gt=0, le=300)
    window_review_minutes: float | None = Field(default=None, gt=0)


class SvsConfig(BaseModel):
    """``svs``: the reviewers and monitors around runs (docs/svs.md).

    ``reviewer`` turns the pre-run review on: ``static`` (deterministic checks), ``llm`` or
    ``command`` (each after ``static``); ``none`` queues runs at once. ``fail_open``: a reviewer
    that is down, slow or wrong lets the run go on with a finding (else it blocks the run).
    ``timeout``: seconds one run's review may take in all. The ``llm_*`` settings fall back to
    ``$QUIPU_LLM_ENDPOINT``, ``$QUIPU_LLM_MODEL`` and ``$QUIPU_LLM_API_KEY``; the key is never
    logged or recorded. ``command`` is the argv of a program that reads the review context as
    JSON on stdin and writes its verdict as JSON on stdout, within ``timeout`` seconds and
    ``max_output_bytes``. ``monitor`` is the during-run monitor; ``post_run`` suggests an ML
    outcome for every run that ends (deterministic; the agent's verdict decides).
    ``contracts`` enforces the declared output schemas (``blocking`` fails the stage,
    ``warning`` records a finding, ``silent`` skips them; a stage's ``contracts:`` in
    pipeline.yaml wins); ``statistics`` are the project's thresholds of the statistic checks
    (an output's ``schema.checks`` wins).
    """

    model_config = ConfigDict(extra="forbid")

    monitor: MonitorConfig = MonitorConfig()
    post_run: bool = True
    contracts: ContractMode = "warning"
    statistics: StatChecks = StatChecks()
    reviewer: Literal["none", "static", "llm", "command"] = "none"
    fail_open: bool = True
    timeout: float = Field(default=120.0, gt=0, le=3600)
    llm_api: Literal["openai", "anthropic"] = "openai"
    llm_endpoint: str | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_retries: int = Field(default=2, ge=0, le=10)
    command: list[str] | None = None
    max_output_bytes: int = Field(default=1_000_000, ge=1024)

    @model_validator(mode="after")
    def _command_named(self) -> SvsConfig:
        if self.reviewer == "command" and not self.command:
            raise ValueError("svs.reviewer 'command' needs svs.command: the program's argv")
        return self


class Config(BaseModel):
    """The contents of ``quipu.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    goal: str = ""
    slots: int | list[str] = 3
    reason_min_length: int = Field(default=15, ge=1)
    eventstore: EventStoreConfig = EventStoreConfig()
    blobs: BlobsConfig = BlobsConfig()
    executor: ExecutorConfig = ExecutorConfig()
    data: DataConfig = DataConfig()
    audit: AuditConfig = AuditConfig()
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    svs: SvsConfig = SvsConfig()

    @field_validator("slots")
    @classmethod
    def _slots_valid(cls, value: int | list[str]) -> int | list[str]:
        if isinstance(value, int):
            if not 1 <= value <= 64:
                raise ValueError("slots must be between 1 and 64")
        else:
            for name in value:
                check_name(name, what="slot")
        return value

    @field_validator("profiles")
    @classmethod
    def _profile_names_valid(cls, value: dict[str, ProfileConfig]) -> dict[str, ProfileConfig]:
        for name in value:
            check_name(name, what="profile")
        return value

    def slot_names(self) -> tuple[str, ...]:
        """``w1..wN`` or the listed names."""
        if isinstance(self.slots, int):
            return tuple(f"w{i}" for i in range(1, self.slots + 1))
        return tuple(self.slots)


def find_project(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (or ``$QUIPU_PROJECT``) with quipu.yaml."""
    env = os.environ.get("QUIPU_PROJECT")
    here = Path(env) if env and start is None else (start or Path.cwd())
    here = here.resolve()
    for candidate in (here, *here.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise NotFound(f"no {CONFIG_FILE} at or above {here}", code="no_project",
                   hint="run `quipu init` in your project directory, or pass --project PATH")


def load_config(root: Path) -> Config:
    """Parse and validate ``quipu.yaml``."""
    return read_config(root)[0]


def read_config(root: Path) -> tuple[Config, str]:
    """Parse and validate ``quipu.yaml``; also the sha256 of the bytes that were parsed."""
    path = root / CONFIG_FILE
    try:
        data = path.read_bytes()
        raw = yaml.safe_load(data.decode("utf-8")) or {}
        return Config.model_validate(raw), hashlib.sha256(data).hexdigest()
    except (yaml.YAMLError, ValidationError, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not a valid Quipu config: {exc}", code="invalid_config",
                           hint="fix the file; keys: name, goal, slots, reason_min_length, "
                           "eventstore{url, synchronous}, "
                           "executor{backend, profile, max_parallel, heartbeat_timeout}, "
                           "profiles{NAME: {backend, image, cpus, memory, gpus, timeout, "
                           "network}}, blobs{url, cache_gb, endpoint, retry_seconds}, "
                           "data{roots, allow_any_path}, audit{key_file, auto_seal}, "
                           "svs{reviewer, fail_open, timeout, llm_*, command, monitor, post_run} "
                           "(docs/configuration.md)") from exc


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "QUIPU_EVENTSTORE_URL": ("eventstore", "url"),
    "QUIPU_EXECUTOR_BACKEND": ("executor", "backend"),
    "QUIPU_EXECUTOR_PROFILE": ("executor", "profile"),
    "QUIPU_SVS_REVIEWER": ("svs", "reviewer"),
    "QUIPU_AUDIT_KEY_FILE": ("audit", "key_file"),
}
"""Environment variable -> the quipu.yaml key it overrides (docs/configuration.md lists them).
A new adapter choice adds one line here."""


def with_env_overrides(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """``config`` with every ``ENV_OVERRIDES`` variable that is set (and not empty) in
    ``environ`` (default: the process's) put in place of its key, validated again.

    ``InvalidInput(invalid_config)`` names the variable when its value is not valid there.
    """
    env = os.environ if environ is None else environ
    chosen = {name: env[name] for name in ENV_OVERRIDES if env.get(name)}
    if not chosen:
        return config
    data: dict[str, Any] = config.model_dump()
    for name, value in chosen.items():
        *parents, leaf = ENV_OVERRIDES[name]
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        names = ", ".join(f"${n}={v!r}" for n, v in chosen.items())
        raise InvalidInput(f"{names} is not a valid setting: {_first_error(exc)}",
                           code="invalid_config",
                           hint="fix or unset the variable; docs/configuration.md lists what "
                           "each one accepts") from exc


def validated_config(data: Mapping[str, Any]) -> Config:
    """``data`` as a ``Config``, else ``InvalidInput(invalid_config)`` naming the first field
    that is wrong (for settings given on the command line)."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"not a valid setting: {_first_error(exc)}", code="invalid_config",
                           hint="docs/configuration.md lists every setting and what it "
                           "accepts") from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))


def config_bytes(config: Config) -> bytes:
    """``quipu.yaml``'s bytes for ``config``."""
    data = config.model_dump(exclude_defaults=True)
    data.setdefault("name", config.name)
    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")


def write_config(root: Path, config: Config) -> None:
    """Write ``quipu.yaml``."""
    (root / CONFIG_FILE).write_bytes(config_bytes(config))
