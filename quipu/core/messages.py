"""Messages: the base of every domain event and the registry of event types.

Events are small frozen pydantic models with no behaviour. Each is registered under a stable
type name (never a module path) and a ``schema_version``. When an event's shape changes, its
``SCHEMA_VERSION`` goes up by one and an upcaster from the old version is registered next to it;
the stored log is never rewritten, old events are upcast when they are read.

Every event records who acted (``actor``), why (``reason``) and when (``at``, from the injected
clock). The events themselves live with their domain (``core.workspaces.events``,
``core.runs.events``, ``core.project.events``); ``core.events`` imports them all so that a reader
of the log can decode any stored type.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "decode_event", "event_type", "known_types", "register", "upcaster"]


class Event(BaseModel):
    """Base of every domain event: who acted, why, and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    actor: str
    reason: str
    at: datetime


E = TypeVar("E", bound=type[Event])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_TYPES: dict[str, type[Event]] = {}
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register(name: str, *, schema_version: int = 1) -> Callable[[E], E]:
    """Register an event class under a stable type name and its current schema version."""

    def decorate(cls: E) -> E:
        if name in _TYPES:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.TYPE = name
        cls.SCHEMA_VERSION = schema_version
        _TYPES[name] = cls
        return cls

    return decorate


def upcaster(name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns version ``from_version`` of an event into the next one."""

    def decorate(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(name, from_version)] = fn
        return fn

    return decorate


def event_type(name: str) -> type[Event]:
    """The class registered under ``name``; ``KeyError`` if there is none."""
    return _TYPES[name]


def known_types() -> frozenset[str]:
    """All registered event type names."""
    return frozenset(_TYPES)


def decode_event(name: str, schema_version: int, data: dict[str, Any]) -> Event:
    """Build the current model of an event stored at ``schema_version``, upcasting as needed."""
    cls = _TYPES[name]
    version = schema_version
    while version < cls.SCHEMA_VERSION:
        data = _UPCASTERS[(name, version)](data)
        version += 1
    return cls.model_validate(data)
