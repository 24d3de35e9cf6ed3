"""Properties of pipeline validation that hold for any pipeline, shape or config."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from quipu.core.pipelines import (
    SIGNAL_TYPES,
    Pipeline,
    resolve_config,
    shapes_compatible,
    validate_pipeline,
)

Shape = list[int | None]


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A pipeline as data: stages in random written order, edges that follow a hidden order."""
    n = draw(st.integers(1, 7))
    names = [f"s{i}" for i in range(n)]  # s0 < s1 < ... is the hidden topological order
    written = draw(st.permutations(names))
    kinds = {s: draw(st.sampled_from(SIGNAL_TYPES)) for s in names}
    shapes = {s: draw(st.lists(st.integers(1, 5), max_size=3)) for s in names}
    edges = [(names[i], names[j]) for j in range(n) for i in range(j)
             if draw(st.booleans())]
    stages = []
    for name in written:
        inputs = {}
        for producer, consumer in edges:
            if consumer == name:
                seen: Shape = [d if draw(st.booleans()) else draw(st.sampled_from([None, -1]))
                               for d in shapes[producer]]
                inputs[f"from_{producer}"] = {"type": kinds[producer], "from_stage": producer,
                                              "signal": "out", "schema": {"shape": seen}}
        stages.append({"name": name, "inputs": inputs, "outputs": {
            "out": {"type": kinds[name], "schema": {"shape": shapes[name]}}}})
    return {"stages": stages}, edges


def validate(data: dict[str, Any]) -> Any:
    return validate_pipeline(yaml.safe_dump(data), config_texts={}, file_exists=lambda _: True)


@settings(max_examples=150, deadline=None)
@given(dags())
def test_any_dag_is_valid_and_ordered_topologically(case: Any) -> None:
    data, edges = case
    report = validate(data)
    assert report.valid, report.errors
    order = report.stage_order
    assert sorted(order) == sorted(s["name"] for s in data["stages"])
    for producer, consumer in edges:
        assert order.index(producer) < order.index(consumer)


@settings(max_examples=150, deadline=None)
@given(dags(), st.data())
def test_a_back_edge_is_always_reported_as_a_cycle(case: Any, data: st.DataObject) -> None:
    pipeline, edges = case
    if not edges:
        return
    producer, consumer = data.draw(st.sampled_from(edges))
    model = Pipeline.model_validate(pipeline)
    kind = model.stage(consumer).outputs["out"].type
    for stage in pipeline["stages"]:
        if stage["name"] == producer:
            stage["inputs"]["back"] = {"type": kind, "from_stage": consumer, "signal": "out",
                                       "schema": None}
    report = validate(pipeline)
    cycles = [p for p in report.errors if p.code == "cycle"]
    assert [p.code for p in report.errors] == ["cycle"] * len(cycles) and cycles
    assert any(producer in p.message and consumer in p.message for p in cycles)
    assert report.stage_order == []


dims = st.one_of(st.none(), st.just(-1), st.integers(0, 4))
shapes = st.lists(dims, max_size=4)


@given(st.one_of(st.none(), shapes), st.one_of(st.none(), shapes))
def test_shape_compatibility_is_symmetric(a: Shape | None, b: Shape | None) -> None:
    assert shapes_compatible(a, b) == shapes_compatible(b, a)


@given(shapes, st.data())
def test_wildcards_match_any_size(shape: Shape, data: st.DataObject) -> None:
    assert shapes_compatible(shape, shape)
    wild = [data.draw(st.sampled_from([None, -1, d])) for d in shape]
    assert shapes_compatible(shape, wild)
    assert shapes_compatible([None] * len(shape), shape)
    assert not shapes_compatible(shape, [*shape, 1])


keys = st.sampled_from(["lr", "epochs", "seed", "opt", "layers"])
values = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                   st.booleans(), st.lists(st.integers(), max_size=2))
configs = st.dictionaries(keys, values, max_size=5)


@given(configs, configs, configs)
def test_override_beats_the_config_file_which_beats_defaults(
        defaults: dict[str, Any], file: dict[str, Any], override: dict[str, Any]) -> None:
    pipeline = Pipeline.model_validate({"stages": [{"name": "train", "defaults": defaults}]})
    resolved = resolve_config("train", pipeline, {"train": yaml.safe_dump(file)}, override)
    assert set(resolved) == set(defaults) | set(file) | set(override)
    for key, value in resolved.items():
        expected = override.get(key, file.get(key, defaults.get(key)))
        assert value == expected


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.text(max_size=6),
                    st.sampled_from(["npy", "dataset", "a", "b", "schema", "shape", "rust"]))
field_names = st.sampled_from(["name", "stages", "inputs", "outputs", "schema", "shape", "type",
                               "from_stage", "signal", "dataset", "rank", "config_schema",
                               "defaults", "runtime", "a", "b", "x"])
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(field_names, inner, max_size=4)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(documents, st.dictionaries(st.sampled_from(["a", "b", "x"]), documents, max_size=2))
def test_validation_reports_instead_of_raising_on_any_document(
        document: Any, configs: dict[str, Any]) -> None:
    report = validate_pipeline(yaml.safe_dump({"stages": document}),
                               config_texts={k: yaml.safe_dump(v) for k, v in configs.items()},
                               file_exists=lambda _: True, source_schema=lambda _: None,
                               override=document if isinstance(document, dict) else None)
    assert report.valid == (not report.errors)
