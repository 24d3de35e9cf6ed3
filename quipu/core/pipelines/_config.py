"""Stage configuration: layers, precedence, overrides split per stage, checks and hashing.

A stage's effective config is built from four layers, each replacing whole top-level keys of
the ones before it (a shallow merge, so a dict-valued parameter is replaced, never mixed)::

    config_schema defaults  ->  stage.defaults  ->  configs/<stage>.yaml  ->  run override
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from quipu.core.errors import InvalidInput
from quipu.core.pipelines._model import Param, Stage, did_you_mean, param_value_problem

__all__ = [
    "CONTRACTS_KEY",
    "ConfigIssue",
    "Layer",
    "check_config",
    "config_contracts",
    "config_file_stage",
    "config_hash",
    "layers_for",
    "merge_layers",
    "parse_config_text",
    "split_override",
]


CONTRACTS_KEY = "svs_contracts"
"""The one key of ``configs/<stage>.yaml`` that is not a parameter: how the stage's output
contracts are enforced (``blocking``, ``warning`` or ``silent``), over pipeline.yaml's
``contracts``. It is taken out of the config (the stage never sees it, the hash ignores it)."""


@dataclass(frozen=True)
class Layer:
    """One source of config values: its label (for messages) and its values."""

    label: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem with an effective config value."""

    code: str
    key: str
    layer: str  # label of the layer that set the value ("" when the key is missing)
    message: str
    hint: str


def config_file_stage(key: str) -> str:
    """The stage a config text is for: ``"train"`` for ``"train"`` or ``"configs/train.yaml"``."""
    name = key.removeprefix("configs/")
    for suffix in (".yaml", ".yml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_config_text(stage: str, text: str) -> dict[str, Any]:
    """The mapping in ``configs/<stage>.yaml`` (empty file -> ``{}``); raises InvalidInput."""
    where = f"configs/{stage}.yaml"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{where} is not valid YAML{line}: {getattr(exc, 'problem', exc)}",
                           code="invalid_yaml",
                           hint="fix the YAML syntax (indentation, a missing ':' or quote)"
                           ) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidInput(f"{where} must be a mapping of parameter -> value",
                           code="config_not_mapping", hint="write one 'param: value' per line")
    return {k: v for k, v in data.items() if k != CONTRACTS_KEY}


def config_contracts(text: str) -> str | None:
    """The ``svs_contracts`` a ``configs/<stage>.yaml`` text sets, or None (also for a text
    that is not a mapping: ``validate_pipeline`` reports that)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    value = data.get(CONTRACTS_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def merge_layers(layers: list[Layer]) -> dict[str, Any]:
    """Later layers replace whole top-level keys of earlier ones."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer.values)
    return merged


def layers_for(stage: Stage, where: str, file_values: Mapping[str, Any] | None,
               override: Mapping[str, Any] | None) -> list[Layer]:
    """The four config layers of ``stage``, lowest precedence first. ``where`` labels the stage."""
    schema_defaults = {k: p.default for k, p in (stage.config_schema or {}).items()
                       if p.default is not None}
    return [
        Layer(f"{where}.config_schema", schema_defaults),
        Layer(f"{where}.defaults", stage.defaults),
        Layer(f"configs/{stage.name}.yaml", file_values or {}),
        Layer(f"override.{stage.name}", override or {}),
    ]


RESERVED_KEYS = frozenset({"compute"})
"""Config keys that are not stage parameters: ``compute`` picks the compute profile."""


def check_config(schema: Mapping[str, Param] | None, layers: list[Layer]) -> list[ConfigIssue]:
    """Every way the merged layers break ``schema``: unknown keys, missing, type, range, choice.

    A stage without a ``config_schema`` accepts any config.
    """
    if schema is None:
        return []
    merged = merge_layers(layers)
    issues = []
    for key, value in merged.items():
        if key in RESERVED_KEYS:
            continue  # the engine's, not the stage's (checked by core.runs.compute)
        layer = next(lay.label for lay in reversed(layers) if key in lay.values)
        param = schema.get(key)
        if param is None:
            issues.append(ConfigIssue(
                "config_unknown_key", key, layer, f"{key!r} is not in the stage's config_schema",
                f"{did_you_mean(key, schema)}known parameters: {', '.join(sorted(schema))}"))
            continue
        problem = param_value_problem(param, value)
        if problem:
            issues.append(ConfigIssue("config_bad_value", key, layer, f"{key}: {problem}",
                                      _value_hint(param)))
    for key, param in schema.items():
        if param.required and merged.get(key) is None:
            issues.append(ConfigIssue(
                "config_required_missing", key, "", f"required parameter {key!r} has no value",
                f"set {key} in defaults, configs/<stage>.yaml or the run's config override"))
    return issues


def _value_hint(param: Param) -> str:
    parts = [f"expects {param.type}"]
    if param.min is not None:
        parts.append(f">= {param.min:g}")
    if param.max is not None:
        parts.append(f"<= {param.max:g}")
    if param.choices is not None:
        parts.append(f"one of {param.choices}")
    return " ".join(parts)


def split_override(override: Mapping[str, Any] | None,
                   stages: list[str]) -> dict[str, dict[str, Any]]:
    """Give each of ``stages`` its part of a run's config override.

    With one stage, a flat ``{param: value}`` applies to it (``{stage: {...}}`` is also
    accepted). With several stages the override must be keyed by stage name; a flat one is an
    error (``override_needs_stage_keys``), never silently dropped, and so is a key naming a
    stage that is not being run (``override_unknown_stage``).
    """
    out: dict[str, dict[str, Any]] = {s: {} for s in stages}
    if not override:
        return out
    if not isinstance(override, Mapping):
        raise InvalidInput("a config override must be a mapping", code="override_not_mapping",
                           hint="pass {'param': value}, or {'stage': {'param': value}}")
    if len(stages) == 1:
        (only,) = stages
        keyed = list(override) == [only] and isinstance(override[only], Mapping)
        out[only] = dict(override[only] if keyed else override)
        return out
    named = [k for k in override if k in stages]
    if not named:
        example = {stages[0]: dict(override)}
        raise InvalidInput(
            f"with several stages ({', '.join(stages)}) the config override must be keyed by "
            f"stage name; got the flat keys {sorted(map(str, override))}",
            code="override_needs_stage_keys",
            hint=f"write it per stage, e.g. {json.dumps(example, default=str)}, with one key "
            "per stage to configure")
    unknown = [k for k in override if k not in stages]
    if unknown:
        raise InvalidInput(
            f"the config override names stages that are not being run: {sorted(map(str, unknown))}",
            code="override_unknown_stage",
            hint=" ".join(f"{k!r}: {did_you_mean(str(k), stages) or 'not a stage; '}"
                          for k in unknown) + f"stages being run: {', '.join(stages)}")
    for stage in named:
        part = override[stage]
        if not isinstance(part, Mapping):
            raise InvalidInput(f"the override for stage {stage!r} must be a mapping",
                               code="override_not_mapping",
                               hint=f"write {{{stage!r}: {{'param': value}}}}")
        out[stage] = dict(part)
    return out


def _json_default(value: object) -> object:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=repr) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not a config value")


def config_hash(config: Mapping[str, Any]) -> str:
    """The sha256 (hex) of the config's canonical JSON: sorted keys, no spaces, UTF-8.

    Equal configs hash equally whatever their key order; YAML dates hash as ISO text.
    """
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the config cannot be hashed: {exc}", code="config_not_json",
                           hint="use only text, numbers (no NaN/inf), booleans, lists and "
                           "mappings in configs") from None
    return hashlib.sha256(text.encode()).hexdigest()
