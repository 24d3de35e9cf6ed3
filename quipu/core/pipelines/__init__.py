"""A workspace's ``pipeline.yaml`` and ``configs/<stage>.yaml``: model, checks, config, order.

Pure: the caller reads the files and passes their texts, plus two lookups (does a file exist,
what schema does a registered source have). Nothing here touches the disk or the log.

* :func:`validate_pipeline` reports every problem at once (a dry run's answer);
* :func:`parse_pipeline` is the single-shot form: a :class:`Pipeline` or ``InvalidInput``;
* :func:`resolve_config`, :func:`split_override` and :func:`config_hash` build the config a
  run records; :func:`stage_order` and :func:`upstream` read the stage graph.

Stages may be written in any order (an input may read from a stage written further down);
cycles are refused and named. The graph rules, config layers and YAML reference are in
``docs/pipelines.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from quipu.core.errors import InvalidInput
from quipu.core.pipelines._checks import Problem, SourceSchema, ValidationReport, run_checks
from quipu.core.pipelines._config import (
    check_config,
    config_contracts,
    config_hash,
    layers_for,
    merge_layers,
    parse_config_text,
    split_override,
)
from quipu.core.pipelines._graph import find_cycles, topological_order
from quipu.core.pipelines._model import (
    PARAM_TYPES,
    SIGNAL_TYPES,
    Param,
    Pipeline,
    Schema,
    Signal,
    Stage,
    shapes_compatible,
)
from quipu.core.pipelines._report import pipeline_refusal

__all__ = [
    "PARAM_TYPES",
    "SIGNAL_TYPES",
    "Edge",
    "Param",
    "Pipeline",
    "Problem",
    "Schema",
    "Signal",
    "Stage",
    "ValidationReport",
    "config_contracts",
    "config_hash",
    "parse_pipeline",
    "pipeline_refusal",
    "resolve_config",
    "shapes_compatible",
    "split_override",
    "stage_order",
    "upstream",
    "validate_pipeline",
]


class Edge(NamedTuple):
    """One input fed by another stage: ``(input_name, from_stage, signal)``."""

    input: str
    from_stage: str
    signal: str  # the upstream output's name (the input's name unless aliased with signal:)


def validate_pipeline(
    pipeline_text: str,
    *,
    config_texts: Mapping[str, str],
    file_exists: Callable[[str], bool],
    source_schema: SourceSchema | None = None,
    stages: list[str] | None = None,
    override: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Check a pipeline and its configs; return every error and warning found, never raise.

    ``config_texts`` maps a stage name (or ``"configs/<stage>.yaml"``) to that file's text.
    ``file_exists(path)`` answers for workspace-relative paths (the stage modules).
    ``source_schema(name)`` returns a registered source's schema fields (``{}`` when it has
    none) or None when no such source exists; leave it out to skip the registry checks.
    ``stages`` and ``override`` describe a run (default: every stage, no override) so a dry
    run also checks that the override splits per stage and that the effective configs fit.
    """
    return run_checks(pipeline_text, config_texts=config_texts, file_exists=file_exists,
                      source_schema=source_schema, stages=stages, override=override)


def parse_pipeline(pipeline_text: str) -> Pipeline:
    """The pipeline model, or InvalidInput ``pipeline_invalid`` listing every problem.

    Checks the YAML, the fields and the stage graph; not module files, datasets or configs.
    """
    report = validate_pipeline(pipeline_text, config_texts={}, file_exists=lambda _: True)
    report.raise_if_invalid()
    assert report.pipeline is not None
    return report.pipeline


def resolve_config(stage: str, pipeline: Pipeline, config_texts: Mapping[str, str],
                   override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The effective config of ``stage``: defaults -> ``configs/<stage>.yaml`` -> override.

    ``override`` is this stage's own part (see :func:`split_override`). Values from the
    ``config_schema`` defaults sit below ``stage.defaults``. Each layer replaces whole top-level
    keys. Raises NotFound for an unknown stage and InvalidInput for an unreadable config file or
    a config that breaks the stage's ``config_schema``.
    """
    spec = pipeline.stage(stage)
    text = next((t for k, t in config_texts.items()
                 if k in (stage, f"configs/{stage}.yaml", f"configs/{stage}.yml")), None)
    file_values = parse_config_text(stage, text) if text is not None else {}
    layers = layers_for(spec, f"stages.{stage}", file_values, override)
    issues = check_config(spec.config_schema, layers)
    if issues:
        raise InvalidInput(
            f"the config of stage {stage!r} does not fit its config_schema: "
            + "; ".join(f"{i.message} (from {i.layer or 'nowhere'})" for i in issues),
            code="config_invalid", hint=issues[0].hint)
    return merge_layers(layers)


def stage_order(pipeline: Pipeline, stages: list[str] | None = None) -> list[str]:
    """``stages`` (default: all) sorted so each comes after the stages it reads from.

    Only the stages asked for are returned; upstream stages are not added. Ties keep the order
    of pipeline.yaml. Raises NotFound for an unknown stage, InvalidInput ``pipeline_cycle``.
    """
    chosen = pipeline.stage_names if stages is None else [pipeline.stage(s).name for s in stages]
    deps = {s.name: [e.from_stage for e in upstream(pipeline, s.name)] for s in pipeline.stages}
    cycles = find_cycles(pipeline.stage_names, deps)
    full = topological_order(pipeline.stage_names, deps)
    if cycles or full is None:
        text = "; ".join(" -> ".join([*c, c[0]]) for c in cycles) or "self-reference"
        raise InvalidInput(f"the stages form a cycle: {text}", code="pipeline_cycle",
                           hint="remove one from_stage link of the cycle")
    wanted = set(chosen)
    return [s for s in full if s in wanted]


def upstream(pipeline: Pipeline, stage: str) -> list[Edge]:
    """The inputs of ``stage`` that read another stage's output, in the order written."""
    return [Edge(name, sig.from_stage, sig.signal or name)
            for name, sig in pipeline.stage(stage).inputs.items() if sig.from_stage]
