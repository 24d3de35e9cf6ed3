"""Every check of ``pipeline.yaml`` and ``configs/*.yaml``, collected into one report.

The checker never stops at the first problem: a broken stage, signal or parameter is reported
and set aside, and the rest of the pipeline is still checked (references to the broken part are
not reported again). It does no I/O: the caller passes file texts and two lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import ValidationError

from quipu.core.errors import InvalidInput
from quipu.core.pipelines._config import (
    CONTRACTS_KEY,
    Layer,
    check_config,
    config_file_stage,
    layers_for,
    split_override,
)
from quipu.core.pipelines._graph import find_cycles, topological_order
from quipu.core.pipelines._model import (
    Param,
    Pipeline,
    Schema,
    Signal,
    Stage,
    did_you_mean,
    normalize_signals,
)
from quipu.core.pipelines._report import PIPELINE_FILE, Loc, Problem, ValidationReport
from quipu.core.pipelines._yaml import Loaded, load_yaml
from quipu.core.reviews.statistics import ContractMode
from quipu.core.validation import check_name

__all__ = ["Problem", "SourceSchema", "ValidationReport", "run_checks"]

PIPELINE_KEYS = ("name", "stages")
STAGE_KEYS = tuple(Stage.model_fields)
SIGNAL_KEYS = tuple(f.alias or n for n, f in Signal.model_fields.items())
SCHEMA_KEYS = tuple(Schema.model_fields)
PARAM_KEYS = tuple(Param.model_fields)
SourceSchema = Callable[[str], Mapping[str, Any] | None]


@dataclass
class _StageInfo:
    loc: Loc
    name: str | None
    stage: Stage | None = None
    broken: set[tuple[str, str]] = field(default_factory=set)  # (inputs|outputs|params, name)
    ykeys: dict[tuple[str, str], str | int] = field(default_factory=dict)

    def sig_loc(self, kind: str, name: str) -> Loc:
        return self.loc.key(kind).key(name, self.ykeys.get((kind, name)))


class _Checker:
    def __init__(self, file_exists: Callable[[str], bool],
                 source_schema: SourceSchema | None) -> None:
        self.file_exists = file_exists
        self.source_schema = source_schema
        self.files: dict[str | None, Loaded] = {}
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    # -- reporting ------------------------------------------------------------------------------

    def _problem(self, code: str, loc: Loc, message: str, hint: str) -> Problem:
        loaded = self.files.get(loc.file)
        line = loaded.line_of(loc.ypath) if loaded is not None else None
        return Problem(code=code, where=loc.where or "(top)", message=message, hint=hint.strip(),
                       file=loc.file, line=line)

    def error(self, code: str, loc: Loc, message: str, hint: str = "") -> None:
        self.errors.append(self._problem(code, loc, message, hint))

    def warn(self, code: str, loc: Loc, message: str, hint: str = "") -> None:
        self.warnings.append(self._problem(code, loc, message, hint))

    def unknown_keys(self, loc: Loc, raw: dict[Any, Any], allowed: Iterable[str],
                     what: str) -> dict[Any, Any]:
        """Report keys not in ``allowed`` and return ``raw`` without them."""
        allowed = tuple(allowed)
        kept = {}
        for key, value in raw.items():
            if key in allowed:
                kept[key] = value
            else:
                self.error("unknown_key", loc.key(str(key)), f"unknown key {key!r} in {what}",
                           f"{did_you_mean(str(key), allowed)}allowed keys: {', '.join(allowed)}")
        return kept

    def pydantic(self, loc: Loc, exc: ValidationError) -> set[str]:
        """Report a model's errors; return the top-level fields that failed."""
        failed = set()
        for err in exc.errors():
            path = [p for p in err["loc"] if isinstance(p, str | int)]
            message = err["msg"].removeprefix("Value error, ")
            code, hint = "invalid_value", ""
            if err["type"] == "missing":
                code, hint = "missing_field", f"add '{path[-1]}'"
            elif err["type"] == "literal_error":
                expected = err.get("ctx", {}).get("expected", "")
                code = "bad_choice"
                hint = f"{did_you_mean(str(err['input']), _quoted(expected))}use one of {expected}"
            elif err["type"].endswith("_type"):
                code = "wrong_type"
            elif "rust" in message:
                code, hint = "runtime_unsupported", "write the stage in Python (runtime: python)"
            elif "rank" in message:
                code, hint = "rank_mismatch", "drop 'rank' or make it the length of 'shape'"
            self.error(code, loc.at(path), message, hint)
            if path:
                failed.add(str(path[0]))
        return failed

    # -- structure ------------------------------------------------------------------------------

    def parse(self, loaded: Loaded) -> tuple[str | None, list[_StageInfo]]:
        top = Loc(PIPELINE_FILE, "")
        for mpath, key, line in loaded.duplicates:
            code = "duplicate_stage" if mpath == ("stages",) else "duplicate_key"
            self.errors.append(Problem(
                code=code, where=Loc(PIPELINE_FILE, "").at(mpath).key(key).where,
                message=f"{key!r} is written twice (YAML would silently keep the last one)",
                hint="remove or rename one of them", line=line))
        data = loaded.data
        if data is None:
            self.error("pipeline_empty", top, "pipeline.yaml is empty",
                       "declare at least one stage under 'stages:'")
            return None, []
        if not isinstance(data, dict):
            self.error("pipeline_not_mapping", top, "pipeline.yaml must be a mapping",
                       "start with 'stages:'")
            return None, []
        data = self.unknown_keys(top, data, PIPELINE_KEYS, "the pipeline")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            self.error("wrong_type", top.key("name"), "the pipeline name must be text")
            name = None
        raw_stages = data.get("stages")
        if not raw_stages:
            self.error("no_stages", top.key("stages"), "the pipeline declares no stages",
                       "add 'stages:' with at least one stage")
            return name, []
        if isinstance(raw_stages, dict):
            return name, [self.stage(top.key("stages").key(str(k)), body, k)
                          for k, body in raw_stages.items()]
        if isinstance(raw_stages, list):
            return name, [self.stage(top.at(["stages", i]), body, None)
                          for i, body in enumerate(raw_stages)]
        self.error("wrong_type", top.key("stages"), "'stages' must be a list or a mapping")
        return name, []

    def stage(self, loc: Loc, raw: object, key: object) -> _StageInfo:
        if key is not None and not isinstance(key, str):
            self.error("wrong_type", loc, f"stage name {key!r} must be text", "quote it")
            key = str(key)
        info = _StageInfo(loc, key)
        if raw is None and key is not None:
            raw = {}
        if not isinstance(raw, dict):
            self.error("stage_not_mapping", loc, "a stage must be a mapping of its fields",
                       "give it at least 'name:' and 'outputs:'")
            return info
        raw = self.unknown_keys(loc, raw, STAGE_KEYS, "a stage")
        if key is not None and "name" in raw and raw["name"] != key:
            self.error("stage_name_mismatch", loc.key("name"),
                       f"stage {key!r} says name: {raw['name']!r}", "drop 'name' or make it match")
        name = key if key is not None else raw.get("name")
        if not isinstance(name, str):
            self.error("missing_field", loc.key("name") if "name" in raw else loc,
                       "every stage needs a 'name' (text)", "add 'name: train'")
            name = None
        else:
            info.name = name
            try:
                check_name(name, what="stage")
            except InvalidInput as err:
                self.error(err.code, loc.key("name"), err.message, err.hint)
                name = None
        fields: dict[str, Any] = {k: v for k, v in raw.items()
                                  if k in ("runtime", "entrypoint", "defaults", "contracts")}
        for kind in ("inputs", "outputs"):
            fields[kind] = self.signals(info, kind, raw.get(kind))
        fields["config_schema"] = self.params(info, raw.get("config_schema"))
        if fields.get("defaults") is None:
            fields.pop("defaults", None)
        if name is None:
            return info
        fields["name"] = name
        for _ in range(2):  # drop the fields that failed (they all have defaults) and retry once
            try:
                info.stage = Stage.model_validate(fields)
                break
            except ValidationError as exc:
                for failed in self.pydantic(loc, exc):
                    fields.pop(failed, None)
        return info

    def signals(self, info: _StageInfo, kind: str, raw: object) -> dict[str, Signal]:
        loc = info.loc.key(kind)
        normalized, problems = normalize_signals(raw, kind)
        for message in problems:
            self.error("bad_signal_list", loc, message,
                       "write signals as 'name: {type: npy, schema: ...}' or a list of "
                       "mappings with 'name'")
        if isinstance(raw, list):
            for i, item in enumerate(raw):
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    info.ykeys.setdefault((kind, item["name"]), i)
        good = {}
        for name, body in normalized.items():
            if isinstance(body, Signal):
                good[name] = body
                continue
            sloc = info.sig_loc(kind, name)
            body = self.unknown_keys(sloc, body, SIGNAL_KEYS, f"{kind} signal")
            if "schema" not in body:
                self.error("schema_missing", sloc, f"signal {name!r} has no 'schema' key",
                           "add 'schema: {shape: [null, 64], dtype: float32}', or "
                           "'schema: null' to leave it unchecked")
                body["schema"] = None
            elif isinstance(body["schema"], dict):
                body["schema"] = self.unknown_keys(sloc.key("schema"), body["schema"],
                                                   SCHEMA_KEYS, "a schema")
            try:
                good[name] = Signal.model_validate(body)
            except ValidationError as exc:
                self.pydantic(sloc, exc)
                info.broken.add((kind, name))
        return good

    def params(self, info: _StageInfo, raw: object) -> dict[str, Param] | None:
        loc = info.loc.key("config_schema")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.error("wrong_type", loc, "config_schema must map parameter -> {type: ...}",
                       "e.g. config_schema: {lr: {type: float, min: 0, default: 0.001}}")
            return None
        good = {}
        for name, body in raw.items():
            ploc = loc.key(str(name))
            if not isinstance(body, dict):
                self.error("wrong_type", ploc, f"parameter {name!r} must be a mapping",
                           "e.g. {type: int, default: 10}")
                info.broken.add(("params", str(name)))
                continue
            body = self.unknown_keys(ploc, body, PARAM_KEYS, "a config_schema parameter")
            try:
                good[str(name)] = Param.model_validate(body)
            except ValidationError as exc:
                self.pydantic(ploc, exc)
                info.broken.add(("params", str(name)))
        return good

    # -- semantics ------------------------------------------------------------------------------

    def semantics(self, infos: list[_StageInfo]) -> dict[str, _StageInfo]:
        by_name: dict[str, _StageInfo] = {}
        for info in infos:
            if info.name is None:
                continue
            if info.name in by_name:  # only the list form can get here (see parse)
                self.error("duplicate_stage", info.loc.key("name"),
                           f"stage {info.name!r} is defined twice",
                           f"rename one; the first is at {by_name[info.name].loc.where}")
                continue
            by_name.setdefault(info.name, info)
        for info in by_name.values():
            if info.stage is not None:
                self.module(info, info.stage)
                for name, sig in info.stage.outputs.items():
                    self.output(info, name, sig)
                for name, sig in info.stage.inputs.items():
                    self.input(info, name, sig, by_name)
        return by_name

    def module(self, info: _StageInfo, stage: Stage) -> None:
        path = stage.module_path
        loc = info.loc.key("entrypoint") if stage.entrypoint else info.loc
        if path.startswith(("/", "\\")) or ".." in path.split("/") or "\\" in path:
            self.error("entrypoint_unsafe", loc, f"entrypoint {path!r} leaves the workspace",
                       "use a path relative to the workspace, e.g. modules/train.py")
        elif not self.file_exists(path):
            self.error("module_missing", loc, f"stage {stage.name!r} has no module {path}",
                       f"create {path}, or point 'entrypoint' at the stage's module")

    def output(self, info: _StageInfo, name: str, sig: Signal) -> None:
        loc = info.sig_loc("outputs", name)
        for key in ("from_stage", "signal", "dataset"):
            if getattr(sig, key) is not None:
                self.error("output_with_source", loc.key(key),
                           f"output {name!r} sets {key!r}, which only inputs may set",
                           f"remove '{key}' from the output")
        if sig.schema_ is None:
            self.warn("no_schema", loc, "no schema: outputs cannot be checked",
                      "describe the output, e.g. schema: {shape: [null, 64], dtype: float32}")

    def input(self, info: _StageInfo, name: str, sig: Signal,
              by_name: dict[str, _StageInfo]) -> None:
        loc = info.sig_loc("inputs", name)
        if sig.signal is not None and sig.from_stage is None:
            self.error("signal_without_from_stage", loc.key("signal"),
                       f"input {name!r} names signal {sig.signal!r} but no from_stage",
                       "add 'from_stage: <stage>' or drop 'signal'")
        if sig.from_stage is not None and sig.dataset is not None:
            self.error("ambiguous_source", loc, f"input {name!r} sets both from_stage and "
                       "dataset", "keep one: a stage's output or a registered dataset")
        if sig.from_stage is not None:
            self.edge(info, name, sig, loc, by_name)
        elif sig.dataset is not None:
            self.dataset(name, sig, loc)
        elif sig.type == "dataset":
            self.error("dataset_name_missing", loc, f"dataset input {name!r} does not say "
                       "which dataset", "add 'dataset: <registered source name>', or "
                       "'from_stage:' if another stage produces it")
        else:
            self.warn("input_unbound", loc, f"input {name!r} has no from_stage or dataset",
                      "each run will need an inputs override for it")

    def edge(self, info: _StageInfo, name: str, sig: Signal, loc: Loc,
             by_name: dict[str, _StageInfo]) -> None:
        producer_name = sig.from_stage
        assert producer_name is not None
        floc = loc.key("from_stage")
        if producer_name == info.name:
            self.error("self_dependency", floc, f"stage {info.name!r} reads its own output",
                       "a stage can only read outputs of other stages")
            return
        producer = by_name.get(producer_name)
        if producer is None:
            self.error("unknown_stage", floc, f"input {name!r} reads from stage "
                       f"{producer_name!r}, which does not exist",
                       f"{did_you_mean(producer_name, by_name)}stages: {', '.join(by_name)}")
            return
        if producer.stage is None:
            return  # the producer itself is broken and already reported
        wanted = sig.signal or name
        made = producer.stage.outputs.get(wanted)
        if made is None:
            if ("outputs", wanted) not in producer.broken:
                outs = list(producer.stage.outputs)
                alias = ("" if sig.signal else
                         "or add 'signal: <output>' if it is named differently; ")
                self.error("unknown_signal", loc.key("signal") if sig.signal else loc,
                           f"stage {producer_name!r} has no output {wanted!r}",
                           f"{did_you_mean(wanted, outs)}{alias}its outputs: "
                           f"{', '.join(outs) or '(none)'}")
            return
        if made.type != sig.type:
            self.error("type_mismatch", loc.key("type"),
                       f"input {name!r} is {sig.type} but {producer_name}.{wanted} is "
                       f"{made.type}", f"make both '{made.type}'")
        if made.schema_ is not None and sig.schema_ is None:
            self.unchecked_input(loc, f"{producer_name}.{wanted}")
        if made.schema_ is not None and sig.schema_ is not None:
            why = made.schema_.mismatches(sig.schema_)
            if why:
                self.error("schema_mismatch", loc.key("schema"),
                           f"{producer_name}.{wanted} cannot feed input {name!r}: "
                           + "; ".join(why),
                           "make the schemas agree (null or -1 match any size)")

    def dataset(self, name: str, sig: Signal, loc: Loc) -> None:
        if self.source_schema is None or sig.dataset is None:
            return
        found = self.source_schema(sig.dataset)
        dloc = loc.key("dataset")
        if found is None:
            self.error("unknown_dataset", dloc, f"no registered source named {sig.dataset!r}",
                       "register it first, or fix the name")
            return
        if not found:
            return
        if sig.schema_ is None:
            self.unchecked_input(loc, f"dataset {sig.dataset!r}")
            return
        try:
            source = Schema.model_validate({k: v for k, v in found.items() if k in SCHEMA_KEYS},
                                           strict=False)
        except ValidationError as exc:
            self.warn("source_schema_unreadable", dloc,
                      f"the schema registered for {sig.dataset!r} cannot be read: "
                      f"{exc.errors()[0]['msg']}", "fix the source's metadata")
            return
        why = source.mismatches(sig.schema_)
        if why:
            self.error("dataset_schema_mismatch", loc.key("schema"),
                       f"dataset {sig.dataset!r} cannot feed input {name!r}: " + "; ".join(why),
                       "make the input's schema match the registered dataset")

    def unchecked_input(self, loc: Loc, producer: str) -> None:
        self.warn("no_schema", loc, f"no schema: this input is not checked against {producer}",
                  f"copy the schema of {producer} here")

    def cycles(self, by_name: dict[str, _StageInfo]) -> list[str]:
        names = list(by_name)
        deps = {n: [s.from_stage for s in i.stage.inputs.values() if s.from_stage]
                for n, i in by_name.items() if i.stage is not None}
        found = find_cycles(names, deps)
        for cycle in found:
            text = " -> ".join([*cycle, cycle[0]])
            self.error("cycle", by_name[cycle[0]].loc, f"stages form a cycle: {text}",
                       "a stage may only read from stages that do not, directly or "
                       "indirectly, read from it; remove one of these from_stage links")
        usable = [n for n, i in by_name.items() if i.stage is not None]
        return [] if found else topological_order(usable, deps) or []

    # -- configs --------------------------------------------------------------------------------

    def configs(self, config_texts: Mapping[str, str], known: set[str] | None
                ) -> dict[str, dict[str, Any]]:
        out = {}
        for key, text in config_texts.items():
            stage = config_file_stage(key)
            file = f"configs/{stage}.yaml"
            loaded = self.files[file] = load_yaml(text)
            top = Loc(file, "")
            if known is not None and stage not in known:
                self.error("config_for_unknown_stage", top,
                           f"{file} configures stage {stage!r}, which is not in the pipeline",
                           f"{did_you_mean(stage, known)}rename or delete the file")
            if loaded.error is not None:
                self.errors.append(Problem(
                    code="invalid_yaml", where="(top)", file=file, line=loaded.error_line,
                    message=f"{file} is not valid YAML: {loaded.error}",
                    hint="fix the YAML syntax (indentation, a missing ':' or quote)"))
                continue
            for _mpath, dup, line in loaded.duplicates:
                self.errors.append(Problem(code="duplicate_key", where=dup, file=file, line=line,
                                           message=f"{dup!r} is written twice",
                                           hint="keep one of them"))
            data = loaded.data
            if data is not None and (not isinstance(data, dict)
                                     or not all(isinstance(k, str) for k in data)):
                self.error("config_not_mapping", top, f"{file} must map parameter -> value",
                           "write one 'param: value' per line")
                continue
            values = dict(data or {})
            if CONTRACTS_KEY in values:
                mode = values.pop(CONTRACTS_KEY)
                if mode not in get_args(ContractMode):
                    self.error("bad_choice", top.key(CONTRACTS_KEY),
                               f"{CONTRACTS_KEY} must be blocking, warning or silent, not "
                               f"{mode!r}", "use one of blocking, warning, silent")
            out[stage] = values
        return out

    def config_values(self, info: _StageInfo, file_values: dict[str, Any] | None,
                      override: dict[str, Any] | None) -> None:
        stage = info.stage
        assert stage is not None
        layers = layers_for(stage, info.loc.where, file_values, override)
        broken = {p for kind, p in info.broken if kind == "params"}
        if broken:  # values of a broken parameter cannot be checked, nor called unknown
            layers = [Layer(lay.label, {k: v for k, v in lay.values.items() if k not in broken})
                      for lay in layers]
        for issue in check_config(stage.config_schema, layers):
            if issue.layer.startswith("configs/"):
                loc = Loc(issue.layer, "").key(issue.key)
            elif issue.layer.startswith("override."):
                loc = Loc(None, issue.layer).key(issue.key)
            elif issue.layer.endswith(".defaults"):
                loc = info.loc.key("defaults").key(issue.key)
            else:
                loc = info.loc.key("config_schema").key(issue.key)
            self.error(issue.code, loc, issue.message, issue.hint)


def _quoted(expected: str) -> list[str]:
    return [part.strip().strip("'\"") for part in expected.replace(" or ", ",").split(",")]


def run_checks(pipeline_text: str, *, config_texts: Mapping[str, str],
               file_exists: Callable[[str], bool], source_schema: SourceSchema | None,
               stages: list[str] | None, override: Mapping[str, Any] | None
               ) -> ValidationReport:
    """See ``quipu.core.pipelines.validate_pipeline``."""
    checker = _Checker(file_exists, source_schema)
    loaded = checker.files[PIPELINE_FILE] = load_yaml(pipeline_text)
    by_name: dict[str, _StageInfo] = {}
    order: list[str] = []
    name: str | None = None
    if loaded.error is not None:
        checker.errors.append(Problem(
            code="invalid_yaml", where="(top)", line=loaded.error_line,
            message=f"pipeline.yaml is not valid YAML: {loaded.error}",
            hint="fix the YAML syntax (indentation, a missing ':' or quote)"))
    else:
        name, infos = checker.parse(loaded)
        by_name = checker.semantics(infos)
        order = checker.cycles(by_name)
    known = set(by_name) if loaded.error is None else None
    files = checker.configs(config_texts, known)
    chosen = list(by_name) if stages is None else list(stages)
    for stage in chosen:
        if known is not None and stage not in known:
            checker.error("unknown_stage", Loc(None, "stages"), f"no stage named {stage!r} "
                          "to run", f"{did_you_mean(stage, known)}stages: {', '.join(known)}")
    parts: dict[str, dict[str, Any]] = {}
    try:
        parts = split_override(override, chosen) if chosen else {}
    except InvalidInput as err:
        checker.error(err.code, Loc(None, "override"), err.message, err.hint)
    for stage_name, info in by_name.items():
        if info.stage is not None:
            checker.config_values(info, files.get(stage_name), parts.get(stage_name))
    pipeline = None
    if not checker.errors:
        pipeline = Pipeline(name=name, stages=[i.stage for i in by_name.values() if i.stage])
    return ValidationReport(valid=not checker.errors, errors=checker.errors,
                            warnings=checker.warnings, stage_order=order, pipeline=pipeline)
