"""The pydantic model of ``pipeline.yaml``: Pipeline, Stage, Signal, Schema, Param.

Every model forbids unknown keys and is strict (YAML already gives native types, so ``"3"`` is
not quietly turned into ``3``). The models check what one object can check on its own (a rank
that disagrees with its shape, a ``min`` above ``max``); checks that need the whole pipeline or
the outside world (edges, cycles, files, datasets) live in ``_checks``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.reviews.statistics import ContractMode, StatChecks
from quipu.core.validation import check_name, did_you_mean, suggest

__all__ = [
    "PARAM_TYPES",
    "SIGNAL_TYPES",
    "Param",
    "Pipeline",
    "Schema",
    "Signal",
    "Stage",
    "did_you_mean",
    "normalize_signals",
    "param_value_problem",
    "shapes_compatible",
    "suggest",
]

SignalType = Literal["dataset", "npy", "csv", "json", "directory", "file"]
ParamType = Literal["int", "float", "str", "bool", "list", "dict"]
SIGNAL_TYPES: tuple[str, ...] = get_args(SignalType)
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
DEFAULT_SIGNAL_TYPE = {"inputs": "dataset", "outputs": "directory"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


# --- schemas -------------------------------------------------------------------------------------


def shapes_compatible(a: list[int | None] | None, b: list[int | None] | None) -> bool:
    """Whether two shapes can describe the same array.

    A missing shape matches anything; otherwise the ranks must be equal and every pair of
    dimensions equal, where ``None`` and ``-1`` are wildcards that match any size.
    """
    if a is None or b is None:
        return True
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == -1 or y == -1 or x == y for x, y in zip(a, b,
                                                                                     strict=True))


def _show_shape(shape: list[int | None]) -> str:
    return "[" + ", ".join("null" if d is None else str(d) for d in shape) + "]"


class Schema(_Strict):
    """What a signal holds: shape (``null``/``-1`` are wildcards), dtype, rank, table columns,
    the kind of a json value; for outputs also ``vocab_size`` (token ids: the statistics say
    how much of it is used) and ``checks`` (thresholds of the statistic checks, see
    ``docs/svs.md``)."""

    shape: list[int | None] | None = None
    dtype: str | None = None
    rank: int | None = Field(default=None, ge=0)
    columns: list[str] | None = None
    json_kind: Literal["object", "array", "string", "number", "boolean", "null"] | None = None
    vocab_size: int | None = Field(default=None, ge=1)
    checks: StatChecks | None = None

    @field_validator("shape")
    @classmethod
    def _dimensions_are_sizes(cls, shape: list[int | None] | None) -> list[int | None] | None:
        if shape is not None and any(d is not None and d < -1 for d in shape):
            raise ValueError("shape dimensions are sizes >= 0, or -1/null for 'any size'")
        return shape

    @model_validator(mode="after")
    def _rank_agrees_with_shape(self) -> Schema:
        if self.rank is not None and self.shape is not None and self.rank != len(self.shape):
            raise ValueError(f"rank {self.rank} disagrees with shape {_show_shape(self.shape)} "
                             f"(rank {len(self.shape)})")
        return self

    @property
    def effective_rank(self) -> int | None:
        """The rank given, or the length of the shape."""
        if self.rank is not None:
            return self.rank
        return len(self.shape) if self.shape is not None else None

    def mismatches(self, expected: Schema) -> list[str]:
        """Why data described by ``self`` cannot feed a consumer that expects ``expected``."""
        out = []
        if not shapes_compatible(self.shape, expected.shape):
            assert self.shape is not None and expected.shape is not None
            out.append(f"shape {_show_shape(self.shape)} does not fit "
                       f"{_show_shape(expected.shape)}")
        elif (self.effective_rank is not None and expected.effective_rank is not None
              and self.effective_rank != expected.effective_rank):
            out.append(f"rank {self.effective_rank} differs from {expected.effective_rank}")
        if self.dtype and expected.dtype and self.dtype != expected.dtype:
            out.append(f"dtype {self.dtype} differs from {expected.dtype}")
        if self.columns is not None and expected.columns is not None:
            missing = [c for c in expected.columns if c not in self.columns]
            if missing:
                out.append(f"columns {missing} are not produced")
        return out


# --- signals -------------------------------------------------------------------------------------


class Signal(_Strict):
    """One named input or output of a stage.

    ``schema`` must be written (``schema: null`` is allowed but leaves the signal unchecked).
    On inputs, ``from_stage`` (+ ``signal`` when the upstream output is named differently) or
    ``dataset`` says where the data comes from.
    """

    type: SignalType
    from_stage: str | None = None
    signal: str | None = None
    dataset: str | None = None
    format: str | None = None
    artifact: bool = False
    metadata: dict[str, Any] | None = None
    schema_: Schema | None = Field(alias="schema")


def normalize_signals(raw: object, kind: str) -> tuple[dict[str, Any], list[str]]:
    """Turn the dict or list form of ``inputs``/``outputs`` into ``{name: fields}``.

    Fills the default ``type`` (``dataset`` for inputs, ``directory`` for outputs). Returns the
    mapping and the problems found (list items without a name, repeated names, non-mappings).
    """
    if raw is None:
        return {}, []
    problems: list[str] = []
    items: list[tuple[object, object]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                problems.append(f"{kind}[{i}] needs a 'name'")
                continue
            items.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
    else:
        return {}, [f"{kind} must be a mapping of name -> signal, or a list of signals"]
    out: dict[str, Any] = {}
    for name, body in items:
        if not isinstance(name, str):
            problems.append(f"{kind} signal name {name!r} must be text")
        elif name in out:
            problems.append(f"{kind} names {name!r} twice")
        elif isinstance(body, Signal):
            out[name] = body
        elif body is None or isinstance(body, dict):
            out[name] = {"type": DEFAULT_SIGNAL_TYPE[kind], **(body or {})}
        else:
            problems.append(f"{kind}.{name} must be a mapping of signal fields")
    return out, problems


# --- config parameters ---------------------------------------------------------------------------

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,),
    "dict": (dict,),
}


class Param(_Strict):
    """One entry of a stage's ``config_schema``."""

    type: ParamType
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"min/max only apply to int and float, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.default is not None:
            problem = param_value_problem(self, self.default)
            if problem:
                raise ValueError(f"default {problem}")
        return self


def param_value_problem(param: Param, value: object) -> str | None:
    """Why ``value`` does not fit ``param`` (type, range, choices), or None when it fits."""
    if value is None:
        return None
    is_bool = isinstance(value, bool)
    if not isinstance(value, _PY_TYPES[param.type]) or (is_bool and param.type != "bool"):
        return f"{value!r} is {type(value).__name__}, expected {param.type}"
    if param.type in ("int", "float"):
        assert isinstance(value, int | float)
        if param.min is not None and value < param.min:
            return f"{value!r} is below the minimum {param.min:g}"
        if param.max is not None and value > param.max:
            return f"{value!r} is above the maximum {param.max:g}"
    if param.choices is not None and value not in param.choices:
        return f"{value!r} is not one of {param.choices}"
    return None


# --- stages and the pipeline ---------------------------------------------------------------------


class Stage(_Strict):
    """One step of the pipeline: a Python module with typed inputs, outputs and config."""

    name: str
    runtime: Literal["python"] = "python"
    entrypoint: str | None = None
    config_schema: dict[str, Param] | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Signal] = Field(default_factory=dict)
    outputs: dict[str, Signal] = Field(default_factory=dict)
    contracts: ContractMode | None = None
    """How this stage's output contracts are enforced (the project's ``svs.contracts`` when
    not given)."""

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for kind in ("inputs", "outputs"):
            signals, problems = normalize_signals(data.get(kind), kind)
            if problems:
                raise ValueError("; ".join(problems))
            data[kind] = signals
        for key in ("defaults", "config_schema"):
            if key in data and data[key] is None:
                data[key] = {} if key == "defaults" else None
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        try:
            return check_name(name, what="stage")
        except InvalidInput as err:
            raise ValueError(err.message) from None

    @field_validator("runtime", mode="before")
    @classmethod
    def _python_only(cls, runtime: object) -> object:
        if runtime == "rust":
            raise ValueError("runtime 'rust' is not supported yet; only 'python' stages run")
        return runtime

    @property
    def module_path(self) -> str:
        """The stage's module, relative to the workspace: ``entrypoint`` or modules/<name>.py."""
        return self.entrypoint or f"modules/{self.name}.py"


class Pipeline(_Strict):
    """A workspace's ``pipeline.yaml``: stages in the order they were written."""

    name: str | None = None
    stages: list[Stage]

    @model_validator(mode="before")
    @classmethod
    def _stages_mapping(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("stages"), dict):
            stages = []
            for key, body in data["stages"].items():
                if body is not None and not isinstance(body, dict):
                    stages.append(body)  # let field validation report it
                    continue
                body = dict(body or {})
                if body.setdefault("name", key) != key:
                    raise ValueError(f"stage {key!r} says name: {body['name']!r}")
                stages.append(body)
            data = {**data, "stages": stages}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> Pipeline:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} is defined twice")
            seen.add(stage.name)
        return self

    @property
    def stage_names(self) -> list[str]:
        """Stage names in the order they were written."""
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; raises NotFound (with a suggestion) otherwise."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise NotFound(f"the pipeline has no stage {name!r}", code="stage_not_found",
                       hint=f"{did_you_mean(name, self.stage_names)}stages: "
                       f"{', '.join(self.stage_names) or '(none)'}")
