"""The ``static`` reviewer: deterministic checks of a stage's code against its pipeline.

Always available and always run first. It reads only the :class:`ReviewContext` (no files, no
network) and finds, each with its file and line:

* ``syntax_error`` (error): a module of the stage does not compile;
* ``undefined_name`` (error): a name used but never bound (pyflakes' scope analysis);
* ``unknown_input`` / ``unknown_output`` (error): ``load_input``/``get_input_path`` or
  ``save_output``/``get_output_path`` names a signal the stage does not declare;
* ``config_key_undeclared`` (error for ``config["k"]``, warning for ``config.get("k")``): the
  code reads a config key that neither the stage's ``config_schema``, its defaults nor its
  config file declare;
* ``primary_metric_not_logged`` (warning): no stage of the pipeline logs the results spec's
  ``primary_metric`` (checked when every metric name in the code is a literal);
* ``input_never_read`` (warning): a declared input no call of the stage reads;
* ``leakage_same_input`` (warning): two inputs of the stage resolve to the same data while
  their names say one is for training and the other for evaluation.

The stage's modules are its entrypoint and the workspace modules it imports (transitively).
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pyflakes import checker as pyflakes_checker
from pyflakes import messages as pyflakes_messages

from quipu.core.patterns.detection import ApprovedPattern, match_code
from quipu.core.pipelines import Pipeline, Stage
from quipu.core.reviews.findings import Finding, Severity
from quipu.core.reviews.review import ReviewContext, ReviewVerdict, decision_for

__all__ = ["StaticReviewer"]

_UNDEFINED = (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal,
              pyflakes_messages.UndefinedExport)
_READS = {"load_input", "get_input_path"}
_WRITES = {"save_output", "get_output_path", "log_artifact"}
_METRICS = {"log_metric", "log_metrics"}
_TRAIN = re.compile(r"(^|_)(train|training|fit)(_|$)")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_EVAL = re.compile(r"(^|_)(test|eval|evaluation|val|valid|validation|holdout|dev)(_|$)")


@dataclass
class _Calls:
    """What one module's SDK calls name (literal names; ``dynamic`` when one is not)."""

    reads: list[tuple[str, int]] = field(default_factory=list)
    writes: list[tuple[str, int]] = field(default_factory=list)
    metrics: set[str] = field(default_factory=set)
    config: list[tuple[str, int, bool]] = field(default_factory=list)  # key, line, via .get
    dynamic_reads: bool = False
    dynamic_metrics: bool = False


class StaticReviewer:
    """Deterministic pre-run checks (see the module docstring).

    Parsed pipelines and modules are kept by their text (a few dozen at most): the stage runs
    of one pipeline run share their pipeline and most of their modules.
    """

    name = "static"

    def __init__(self) -> None:
        self._pipelines: dict[str, Pipeline | None] = {}
        self._modules: dict[str, _Parsed] = {}

    def review(self, context: ReviewContext) -> ReviewVerdict:
        """Check the stage's modules against its pipeline; block on an error finding."""
        findings = list(self._findings(context))
        decision = decision_for(findings)
        fixes = [f.fix for f in findings if f.severity == "error" and f.fix]
        return ReviewVerdict(reviewer=self.name, decision=decision, findings=tuple(findings),
                             fix="; ".join(dict.fromkeys(fixes[:3])) or None)

    def _findings(self, ctx: ReviewContext) -> Iterator[Finding]:
        pipeline = self._pipeline(ctx.pipeline)
        stage = _stage(pipeline, ctx.stage)
        calls: dict[str, _Calls] = {}
        for path in _stage_modules(ctx.files, ctx.entrypoint, self._parse):
            parsed = self._parse(path, ctx.files[path])
            if parsed.problem is not None:
                yield _finding(ctx, "syntax_error", "error", parsed.problem[0], path,
                               parsed.problem[1], "fix the syntax error before running")
                continue
            calls[path] = parsed.calls
            for line, name, text in parsed.undefined:
                yield _finding(ctx, "undefined_name", "error", f"{path}:{line}: {text}",
                               path, line, f"define or import {name} in {path}")
        if stage is not None:
            yield from _signals(ctx, stage, calls)
            yield from _config_keys(ctx, stage, calls)
            yield from _unread_inputs(ctx, stage, calls)
            yield from _leakage(ctx, stage)
        if pipeline is not None:
            yield from _primary_metric(ctx, pipeline, self._parse)
        if ctx.patterns:  # approved failure patterns whose detection is a code regex
            approved = [ApprovedPattern.from_context(p) for p in ctx.patterns]
            yield from match_code(approved, ctx.stage,
                                  {path: text for path, text in ctx.files.items()
                                   if path.endswith(".py")})

    def _pipeline(self, text: str | None) -> Pipeline | None:
        if text is None:
            return None
        if text not in self._pipelines:
            _bounded(self._pipelines)
            self._pipelines[text] = _load_pipeline(text)
        return self._pipelines[text]

    def _parse(self, path: str, text: str) -> _Parsed:
        key = f"{path}\0{text}"
        found = self._modules.get(key)
        if found is None:
            _bounded(self._modules)
            found = self._modules[key] = _parse_module(path, text)
        return found

    def __repr__(self) -> str:
        return "StaticReviewer()"


# --- what to look at ----------------------------------------------------------------------------


def _load_pipeline(text: str) -> Pipeline | None:
    """The pipeline model. run() validated the file with line numbers already, so the fast C
    YAML loader and the model suffice here; a file that no longer parses is not ours to judge
    (None)."""
    try:
        data = yaml.load(text, Loader=_LOADER)
        return Pipeline.model_validate(data)
    except (yaml.YAMLError, ValueError):
        return None


def _bounded(cache: dict[str, Any], size: int = 64) -> None:
    if len(cache) >= size:
        cache.clear()


@dataclass(frozen=True)
class _Parsed:
    """One module, checked once: why it does not compile, or its undefined names and calls."""

    problem: tuple[str, int | None] | None
    undefined: tuple[tuple[int, str, str], ...] = ()
    calls: _Calls = field(default_factory=lambda: _Calls())
    imports: tuple[str, ...] = ()


def _parse_module(path: str, text: str) -> _Parsed:
    tree, problem = _compile(path, text)
    if tree is None:
        return _Parsed(problem=problem)
    found = pyflakes_checker.Checker(tree, filename=path)
    undefined = tuple(
        (m.lineno, str(m.message_args[0]), m.message % m.message_args)
        for m in sorted(found.messages, key=lambda m: (m.lineno, m.col))
        if isinstance(m, _UNDEFINED))
    return _Parsed(problem=None, undefined=undefined, calls=_calls(tree),
                   imports=tuple(_imported(tree)))


def _stage(pipeline: Pipeline | None, name: str) -> Stage | None:
    if pipeline is None:
        return None
    return next((s for s in pipeline.stages if s.name == name), None)


def _stage_modules(files: Mapping[str, str], entrypoint: str,
                   parse: Callable[[str, str], _Parsed]) -> list[str]:
    """The entrypoint and every workspace module it imports, transitively (in that order)."""
    seen: list[str] = []
    todo = [entrypoint] if entrypoint in files else []
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        for module in parse(path, files[path]).imports:
            for candidate in _module_files(module, path):
                if candidate in files and candidate not in seen:
                    todo.append(candidate)
                    break
    return seen


def _imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def _module_files(module: str, importer: str) -> Iterator[str]:
    # The stage runs with the code root on PYTHONPATH and its own directory as sys.path[0].
    rel = module.replace(".", "/")
    for base in (posixpath.dirname(importer), ""):
        yield posixpath.join(base, rel + ".py")
        yield posixpath.join(base, rel, "__init__.py")


def _compile(path: str, text: str) -> tuple[ast.Module | None, tuple[str, int | None] | None]:
    try:
        tree = ast.parse(text, filename=path)
        compile(tree, path, "exec", dont_inherit=True)
        return tree, None
    except SyntaxError as exc:
        return None, (f"{path} does not compile: {exc.msg}", exc.lineno)
    except ValueError as exc:  # e.g. a null byte in the source
        return None, (f"{path} does not compile: {exc}", None)


# --- the checks ---------------------------------------------------------------------------------


def _finding(ctx: ReviewContext, signal: str, severity: Severity, message: str,
             file: str | None, line: int | None, fix: str | None = None,
             **evidence: Any) -> Finding:
    return Finding(signal=signal, severity=severity, message=message, phase="pre_run",
                   source="static", stage=ctx.stage, file=file,
                   line=line if line and line > 0 else None, fix=fix, evidence=evidence)


def _is_sdk_call(node: ast.Call, names: set[str]) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else (
        func.id if isinstance(func, ast.Name) else None)
    return name if name in names else None


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _first_arg(node: ast.Call, keyword: str) -> ast.AST | None:
    if node.args:
        return node.args[0]
    return next((k.value for k in node.keywords if k.arg == keyword), None)


def _calls(tree: ast.Module) -> _Calls:
    calls = _Calls()
    config_names = _config_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            kind = _is_sdk_call(node, _READS | _WRITES | _METRICS)
            if kind in _READS or kind in _WRITES:
                name = _literal(_first_arg(node, "name"))
                if name is None:
                    calls.dynamic_reads = calls.dynamic_reads or kind in _READS
                    continue
                (calls.reads if kind in _READS else calls.writes).append((name, node.lineno))
            elif kind == "log_metric":
                name = _literal(_first_arg(node, "name"))
                if name is None:
                    calls.dynamic_metrics = True
                else:
                    calls.metrics.add(name)
            elif kind == "log_metrics":
                arg = _first_arg(node, "metrics")
                if isinstance(arg, ast.Dict) and all(_literal(k) for k in arg.keys):
                    calls.metrics.update(_literal(k) or "" for k in arg.keys)
                else:
                    calls.dynamic_metrics = True
            elif (isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and _is_config(node.func.value, config_names)):
                key = _literal(_first_arg(node, "key"))
                if key is not None:
                    calls.config.append((key, node.lineno, True))
        elif isinstance(node, ast.Subscript) and _is_config(node.value, config_names):
            key = _literal(node.slice)
            if key is not None and isinstance(node.ctx, ast.Load):
                calls.config.append((key, node.lineno, False))
    return calls


def _config_names(tree: ast.Module) -> set[str]:
    """Names bound to ``get_config()`` (``config = sdk.get_config()``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and _is_sdk_call(node.value, {"get_config"}):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _is_config(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in names
    return isinstance(node, ast.Call) and _is_sdk_call(node, {"get_config"}) is not None


def _signals(ctx: ReviewContext, stage: Stage,
             calls: Mapping[str, _Calls]) -> Iterator[Finding]:
    for path, found in calls.items():
        for name, line in found.reads:
            if name not in stage.inputs:
                yield _finding(
                    ctx, "unknown_input", "error",
                    f"{path}:{line} reads input {name!r}, which stage {stage.name!r} does not "
                    f"declare (inputs: {', '.join(stage.inputs) or 'none'})", path, line,
                    f"declare input {name!r} under stages.{stage.name}.inputs in pipeline.yaml "
                    "or read a declared one")
        for name, line in found.writes:
            if name not in stage.outputs:
                yield _finding(
                    ctx, "unknown_output", "error",
                    f"{path}:{line} saves output {name!r}, which stage {stage.name!r} does not "
                    f"declare (outputs: {', '.join(stage.outputs) or 'none'})", path, line,
                    f"declare output {name!r} under stages.{stage.name}.outputs in "
                    "pipeline.yaml or save a declared one")


def _config_keys(ctx: ReviewContext, stage: Stage,
                 calls: Mapping[str, _Calls]) -> Iterator[Finding]:
    declared = set(stage.config_schema or {}) | set(stage.defaults) | set(ctx.config)
    for path, found in calls.items():
        for key, line, soft in found.config:
            if key in declared:
                continue
            yield _finding(
                ctx, "config_key_undeclared", "warning" if soft else "error",
                f"{path}:{line} reads config key {key!r}, which stage {stage.name!r} does not "
                f"declare (keys: {', '.join(sorted(declared)) or 'none'})", path, line,
                f"add {key!r} to stages.{stage.name}.config_schema (with a default) or to "
                f"configs/{stage.name}.yaml")


def _unread_inputs(ctx: ReviewContext, stage: Stage,
                   calls: Mapping[str, _Calls]) -> Iterator[Finding]:
    if any(c.dynamic_reads for c in calls.values()):
        return  # a computed input name could be any of them
    read = {name for c in calls.values() for name, _ in c.reads}
    for name in stage.inputs:
        if name not in read:
            yield _finding(ctx, "input_never_read", "warning",
                           f"stage {stage.name!r} declares input {name!r} but its code never "
                           "reads it", ctx.entrypoint, None,
                           f"read it with sdk.load_input({name!r}) or remove it from "
                           "pipeline.yaml")


def _same_data(how: Any) -> tuple[Any, ...] | None:
    if not isinstance(how, Mapping):
        return None
    kind = how.get("kind")
    if kind in ("upstream", "run"):
        return (kind, how.get("run_id") or how.get("stage"), how.get("signal"))
    if kind == "source":
        return (kind, how.get("name"))
    if kind == "path":
        return (kind, how.get("path"))
    return None


def _leakage(ctx: ReviewContext, stage: Stage) -> Iterator[Finding]:
    by_data: dict[tuple[Any, ...], list[str]] = {}
    for name in stage.inputs:
        key = _same_data(ctx.inputs.get(name))
        if key is not None:
            by_data.setdefault(key, []).append(name)
    for names in by_data.values():
        train = [n for n in names if _TRAIN.search(n.lower())]
        evaluate = [n for n in names if _EVAL.search(n.lower())]
        if train and evaluate:
            yield _finding(
                ctx, "leakage_same_input", "warning",
                f"inputs {train[0]!r} and {evaluate[0]!r} of stage {stage.name!r} are the same "
                "data: the evaluation would score the training set", "pipeline.yaml", None,
                f"point {evaluate[0]!r} at the held-out split", inputs=sorted(names))


def _primary_metric(ctx: ReviewContext, pipeline: Pipeline,
                    parse: Callable[[str, str], _Parsed]) -> Iterator[Finding]:
    metric = ctx.results_spec.get("primary_metric")
    if not isinstance(metric, str) or not metric:
        return
    logged: set[str] = set()
    for stage in pipeline.stages:
        for path in _stage_modules(ctx.files, stage.module_path, parse):
            parsed = parse(path, ctx.files[path])
            if parsed.problem is not None or parsed.calls.dynamic_metrics:
                return  # a module that does not compile or computes its metric names
            logged |= parsed.calls.metrics
    if metric not in logged:
        shown = ", ".join(sorted(logged)[:10]) or "none"
        yield _finding(ctx, "primary_metric_not_logged", "warning",
                       f"no stage logs the primary metric {metric!r} (logged: {shown}); the "
                       "run's result will be unknown", None, None,
                       f"log it with sdk.log_metric({metric!r}, value) or change "
                       "results_spec.primary_metric")

