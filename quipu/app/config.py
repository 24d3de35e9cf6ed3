"""``quipu.yaml``: what a project chooses, validated with clear errors.

Every adapter is picked from here by ``quipu.app.bootstrap`` (the one composition root); the
facade and the entry points only ever see the parsed ``Config``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.reviews.statistics import ContractMode, StatChecks
from quipu.core.validation import check_name

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "AuditConfig",
    "AutoSealConfig",
    "Config",
    "DataConfig",
    "EventStoreConfig",
    "ExecutorConfig",
    "SvsConfig",
    "find_project",
    "load_config",
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


class ExecutorConfig(BaseModel):
    """How the embedded local executor runs stages."""

    model_config = ConfigDict(extra="forbid")

    max_parallel: int = Field(default=2, ge=1, le=64)
    heartbeat_timeout: float = Field(default=600.0, gt=0)


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


class SvsConfig(BaseModel):
    """``svs``: how outputs are checked. ``contracts`` enforces the declared output schemas
    (``blocking`` fails the stage, ``warning`` records a finding, ``silent`` skips them; a
    stage's ``contracts:`` in pipeline.yaml wins); ``statistics`` are the project's thresholds
    of the statistic checks (an output's ``schema.checks`` wins). See docs/svs.md."""

    model_config = ConfigDict(extra="forbid")

    contracts: ContractMode = "warning"
    statistics: StatChecks = StatChecks()


class Config(BaseModel):
    """The contents of ``quipu.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    goal: str = ""
    slots: int | list[str] = 3
    reason_min_length: int = Field(default=15, ge=1)
    eventstore: EventStoreConfig = EventStoreConfig()
    executor: ExecutorConfig = ExecutorConfig()
    data: DataConfig = DataConfig()
    audit: AuditConfig = AuditConfig()
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
                           "eventstore{url, synchronous}, executor, "
                           "data{roots, allow_any_path}, audit{key_file, auto_seal}") from exc


def config_bytes(config: Config) -> bytes:
    """``quipu.yaml``'s bytes for ``config``."""
    data = config.model_dump(exclude_defaults=True)
    data.setdefault("name", config.name)
    return yaml.safe_dump(data, sort_keys=False).encode("utf-8")


def write_config(root: Path, config: Config) -> None:
    """Write ``quipu.yaml``."""
    (root / CONFIG_FILE).write_bytes(config_bytes(config))
