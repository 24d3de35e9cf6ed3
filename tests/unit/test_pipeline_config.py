"""Stage configs: precedence, schema checks, override splitting, hashing; and the stage graph."""

from __future__ import annotations

import datetime as dt
from textwrap import dedent

import pytest

from quipu.core.errors import InvalidInput, NotFound
from quipu.core.pipelines import (
    Edge,
    Pipeline,
    config_hash,
    parse_pipeline,
    resolve_config,
    split_override,
    stage_order,
    upstream,
    validate_pipeline,
)

PIPELINE = parse_pipeline(dedent("""\
    stages:
      - name: prep
        outputs:
          features: {type: npy, schema: {shape: [null, 64]}}
          labels: {type: npy, schema: {shape: [null]}}
      - name: train
        config_schema:
          epochs: {type: int, min: 1, max: 100, default: 10}
          lr: {type: float, min: 0, max: 1, required: true}
          opt: {type: str, choices: [adam, sgd]}
          layers: {type: list}
        defaults: {lr: 0.1, opt: adam}
        inputs:
          x: {type: npy, from_stage: prep, signal: features, schema: null}
          labels: {type: npy, from_stage: prep, schema: null}
        outputs:
          model: {type: file, schema: null}
      - name: evaluate
        inputs:
          model: {type: file, from_stage: train, schema: null}
          labels: {type: npy, from_stage: prep, schema: null}
    """))


def config_errors(configs: dict[str, str], override: dict[str, object] | None = None,
                  stages: list[str] | None = None) -> list[tuple[str, str | None, str]]:
    text = dedent("""\
        stages:
          - name: train
            config_schema:
              epochs: {type: int, min: 1, max: 100, default: 10}
              lr: {type: float, min: 0, max: 1, required: true}
              opt: {type: str, choices: [adam, sgd]}
            defaults: {lr: 0.1}
          - name: other
        """)
    report = validate_pipeline(text, config_texts=configs, file_exists=lambda _: True,
                               stages=stages, override=override)
    return [(p.code, p.file, p.where) for p in report.errors]


class TestResolveConfig:
    def test_layers_apply_schema_defaults_then_defaults_then_file_then_override(self) -> None:
        config = resolve_config("train", PIPELINE, {"train": "lr: 0.2\nopt: sgd\n"},
                                {"opt": "adam", "layers": [64]})
        assert config == {"epochs": 10, "lr": 0.2, "opt": "adam", "layers": [64]}

    def test_a_config_file_may_be_keyed_by_its_path(self) -> None:
        assert resolve_config("train", PIPELINE, {"configs/train.yaml": "epochs: 3"})["epochs"] == 3

    def test_a_value_that_breaks_the_schema_raises(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            resolve_config("train", PIPELINE, {}, {"epochs": 0})
        assert caught.value.code == "config_invalid"
        assert "override.train" in caught.value.message

    def test_invalid_yaml_in_a_config_raises_with_its_line(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            resolve_config("train", PIPELINE, {"train": "lr: 0.1\nopt: [\n"})
        assert caught.value.code == "invalid_yaml"
        assert "line" in caught.value.message

    def test_an_unknown_stage_is_not_found(self) -> None:
        with pytest.raises(NotFound) as caught:
            resolve_config("trian", PIPELINE, {})
        assert "did you mean 'train'?" in caught.value.hint


class TestConfigChecks:
    def test_a_valid_config_passes(self) -> None:
        assert config_errors({"train": "epochs: 5\nopt: sgd\n"}) == []

    def test_a_wrong_type_is_reported_where_it_was_set(self) -> None:
        assert config_errors({"train": "epochs: ten\n"}) == [
            ("config_bad_value", "configs/train.yaml", "epochs")]

    def test_a_bool_is_not_an_int(self) -> None:
        assert config_errors({"train": "epochs: true\n"})[0][0] == "config_bad_value"

    def test_out_of_range_values_are_reported(self) -> None:
        assert config_errors({}, override={"lr": 1.5}, stages=["train"]) == [
            ("config_bad_value", None, "override.train.lr")]

    def test_values_outside_choices_are_reported(self) -> None:
        assert config_errors({"train": "opt: rmsprop"})[0][0] == "config_bad_value"

    def test_unknown_config_keys_are_reported_with_a_suggestion(self) -> None:
        report = validate_pipeline("stages:\n  - {name: a, config_schema: {lr: {type: float}}}\n",
                                   config_texts={"a": "lrr: 0.1"}, file_exists=lambda _: True)
        assert [(p.code, p.hint.split("?")[0]) for p in report.errors] == [
            ("config_unknown_key", "did you mean 'lr'")]

    def test_a_required_parameter_without_value_is_reported(self) -> None:
        assert config_errors({"train": "lr: null"}) == [
            ("config_required_missing", "pipeline.yaml", "stages[0].config_schema.lr")]

    def test_a_bad_default_in_the_pipeline_is_reported(self) -> None:
        report = validate_pipeline("stages:\n  - {name: a, config_schema: {n: {type: int}}, "
                                   "defaults: {n: 1.5}}\n", config_texts={},
                                   file_exists=lambda _: True)
        assert [(p.code, p.where) for p in report.errors] == [
            ("config_bad_value", "stages[0].defaults.n")]

    def test_a_schema_default_of_the_wrong_type_is_reported(self) -> None:
        report = validate_pipeline("stages:\n  - {name: a, config_schema: {n: {type: int, "
                                   "default: x, min: 5, max: 1}}}\n", config_texts={},
                                   file_exists=lambda _: True)
        assert [p.where for p in report.errors] == ["stages[0].config_schema.n"]

    def test_a_config_for_an_unknown_stage_is_reported(self) -> None:
        assert config_errors({"trian": "lr: 0.1"}) == [
            ("config_for_unknown_stage", "configs/trian.yaml", "(top)")]

    def test_invalid_yaml_in_a_config_is_reported_with_its_line(self) -> None:
        report = validate_pipeline("stages:\n  - {name: a}\n", config_texts={"a": "x: 1\ny: [\n"},
                                   file_exists=lambda _: True)
        assert [(p.code, p.file, p.line) for p in report.errors] == [
            ("invalid_yaml", "configs/a.yaml", 3)]

    def test_a_config_that_is_not_a_mapping_is_reported(self) -> None:
        assert config_errors({"train": "- 1\n- 2\n"})[0][0] == "config_not_mapping"

    def test_a_stage_without_config_schema_accepts_any_config(self) -> None:
        assert config_errors({"other": "anything: [1, 2]"}) == []


class TestSplitOverride:
    def test_a_flat_override_applies_to_the_only_stage(self) -> None:
        assert split_override({"lr": 0.1}, ["train"]) == {"train": {"lr": 0.1}}

    def test_a_keyed_override_is_accepted_for_one_stage_too(self) -> None:
        assert split_override({"train": {"lr": 0.1}}, ["train"]) == {"train": {"lr": 0.1}}

    def test_a_keyed_override_is_split_per_stage(self) -> None:
        assert split_override({"train": {"lr": 0.1}}, ["prep", "train"]) == {
            "prep": {}, "train": {"lr": 0.1}}

    def test_no_override_gives_every_stage_an_empty_dict(self) -> None:
        assert split_override(None, ["a", "b"]) == {"a": {}, "b": {}}

    def test_a_flat_override_with_several_stages_is_an_error_not_dropped(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            split_override({"lr": 0.1}, ["prep", "train"])
        assert caught.value.code == "override_needs_stage_keys"
        assert '{"prep": {"lr": 0.1}}' in caught.value.hint

    def test_keys_naming_unknown_stages_are_errors(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            split_override({"train": {"lr": 0.1}, "evalute": {"n": 1}}, ["train", "evaluate"])
        assert caught.value.code == "override_unknown_stage"
        assert "did you mean 'evaluate'?" in caught.value.hint

    def test_a_stage_part_must_be_a_mapping(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            split_override({"train": 3, "prep": {}}, ["train", "prep"])
        assert caught.value.code == "override_not_mapping"

    def test_a_dry_run_reports_a_flat_override_for_several_stages(self) -> None:
        assert config_errors({}, override={"lr": 0.5}) == [
            ("override_needs_stage_keys", None, "override")]

    def test_a_dry_run_reports_unknown_stages_to_run(self) -> None:
        assert config_errors({}, stages=["trainn"])[0][:1] == ("unknown_stage",)


class TestConfigHash:
    def test_key_order_does_not_change_the_hash(self) -> None:
        assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})

    def test_different_values_hash_differently(self) -> None:
        assert config_hash({"a": 1}) != config_hash({"a": 2})
        assert len(config_hash({})) == 64

    def test_yaml_dates_hash_as_iso_text(self) -> None:
        assert config_hash({"d": dt.date(2024, 1, 2)}) == config_hash({"d": "2024-01-02"})

    def test_values_that_are_not_json_are_refused(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            config_hash({"x": float("nan")})
        assert caught.value.code == "config_not_json"


class TestGraph:
    def test_stage_order_is_topological_and_keeps_only_the_stages_asked_for(self) -> None:
        assert stage_order(PIPELINE) == ["prep", "train", "evaluate"]
        assert stage_order(PIPELINE, ["evaluate", "prep"]) == ["prep", "evaluate"]

    def test_stage_order_refuses_unknown_stages(self) -> None:
        with pytest.raises(NotFound):
            stage_order(PIPELINE, ["nope"])

    def test_stage_order_refuses_a_cycle(self) -> None:
        looped = Pipeline.model_validate({"stages": [
            {"name": "a", "inputs": {"x": {"type": "npy", "from_stage": "b", "schema": None}},
             "outputs": {"x": {"type": "npy", "schema": None}}},
            {"name": "b", "inputs": {"x": {"type": "npy", "from_stage": "a", "schema": None}},
             "outputs": {"x": {"type": "npy", "schema": None}}},
        ]})
        with pytest.raises(InvalidInput) as caught:
            stage_order(looped)
        assert caught.value.code == "pipeline_cycle"
        assert "a -> b -> a" in caught.value.message

    def test_upstream_lists_edges_with_aliases_resolved(self) -> None:
        assert upstream(PIPELINE, "train") == [Edge("x", "prep", "features"),
                                               Edge("labels", "prep", "labels")]
        assert upstream(PIPELINE, "prep") == []
