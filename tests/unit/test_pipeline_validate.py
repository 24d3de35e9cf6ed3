"""validate_pipeline: one test per check, with small pipeline.yaml texts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from quipu.core.errors import InvalidInput
from quipu.core.pipelines import ValidationReport, parse_pipeline, validate_pipeline

DIGITS = dedent("""\
    name: digits
    stages:
      - name: preprocess
        inputs:
          raw: {type: dataset, dataset: digits, schema: {shape: [null, 64], dtype: float64}}
        outputs:
          features: {type: npy, schema: {shape: [null, 64], dtype: float32}}
          labels: {type: npy, schema: {shape: [null], dtype: int64}}
      - name: train
        config_schema:
          epochs: {type: int, min: 1, default: 10}
        inputs:
          features: {type: npy, from_stage: preprocess, schema: {shape: [null, 64], dtype: float32}}
          labels: {type: npy, from_stage: preprocess, schema: {shape: [null], dtype: int64}}
        outputs:
          model: {type: file, schema: null}
      - name: evaluate
        inputs:
          model: {type: file, from_stage: train, schema: null}
          features: {type: npy, from_stage: preprocess, schema: {shape: [-1, 64], dtype: float32}}
          labels: {type: npy, from_stage: preprocess, schema: {rank: 1}}
        outputs:
          report: {type: json, schema: null}
    """)


def check(text: str, *, configs: Mapping[str, str] | None = None,
          files: Callable[[str], bool] = lambda _: True,
          sources: Callable[[str], Mapping[str, Any] | None] | None = None,
          **kw: Any) -> ValidationReport:
    return validate_pipeline(dedent(text), config_texts=configs or {}, file_exists=files,
                             source_schema=sources, **kw)


def codes(report: ValidationReport) -> list[str]:
    return [p.code for p in report.errors]


def only_error(report: ValidationReport, code: str) -> Any:
    assert codes(report) == [code], report.errors
    return report.errors[0]


TWO = """\
    stages:
      - name: a
        outputs:
          x: {type: npy, schema: {shape: [null, 3], dtype: float32}}
      - name: b
        inputs:
          x: %s
        outputs:
          y: {type: json, schema: null}
    """


def edge(input_yaml: str, **kw: Any) -> ValidationReport:
    return check(TWO % input_yaml, **kw)


class TestAValidPipeline:
    def test_the_digits_pipeline_is_valid_with_its_order(self) -> None:
        report = check(DIGITS, sources=lambda name: {"shape": [1797, 64], "dtype": "float64"})
        assert report.valid, report.errors
        assert report.stage_order == ["preprocess", "train", "evaluate"]
        assert report.pipeline is not None
        assert report.pipeline.stage("train").inputs["labels"].from_stage == "preprocess"

    def test_outputs_without_schema_are_warnings_not_errors(self) -> None:
        report = check(DIGITS)
        assert report.valid
        warned = {(w.code, w.where) for w in report.warnings}
        assert ("no_schema", "stages[1].outputs.model") in warned
        assert any("outputs cannot be checked" in w.message for w in report.warnings)

    def test_stages_and_signals_may_be_written_as_mappings(self) -> None:
        report = check("""\
            stages:
              prep:
                outputs:
                  - {name: x, type: csv, schema: {columns: [a, b]}}
              fit:
                inputs:
                  - {name: x, type: csv, from_stage: prep, schema: {columns: [a]}}
            """)
        assert report.valid, report.errors
        assert report.stage_order == ["prep", "fit"]

    def test_signal_types_default_to_dataset_for_inputs_and_directory_for_outputs(self) -> None:
        report = check("""\
            stages:
              - name: a
                inputs: {raw: {dataset: mnist, schema: null}}
                outputs: {out: {schema: null}}
            """)
        assert report.pipeline is not None
        stage = report.pipeline.stage("a")
        assert (stage.inputs["raw"].type, stage.outputs["out"].type) == ("dataset", "directory")

    def test_stages_may_be_written_in_any_order(self) -> None:
        report = check("""\
            stages:
              - name: b
                inputs: {x: {type: npy, from_stage: a, schema: null}}
              - name: a
                outputs: {x: {type: npy, schema: null}}
            """)
        assert report.valid, report.errors
        assert report.stage_order == ["a", "b"]


class TestYamlAndKeys:
    def test_invalid_yaml_is_reported_with_its_line(self) -> None:
        problem = only_error(check("stages:\n  - name: a\n    outputs: {x: [\n"), "invalid_yaml")
        assert problem.line is not None and problem.line >= 3

    def test_an_empty_file_is_reported(self) -> None:
        only_error(check(""), "pipeline_empty")

    def test_a_pipeline_without_stages_is_reported(self) -> None:
        only_error(check("name: x\nstages: []\n"), "no_stages")

    def test_unknown_keys_are_reported_at_every_level_with_suggestions(self) -> None:
        report = check("""\
            stagse: []
            stages:
              - name: a
                entrypiont: modules/a.py
                outputs:
                  x: {type: npy, fromstage: b, schema: {shape: [1], dtpye: int8}}
            """)
        found = {p.where: p.hint for p in report.errors if p.code == "unknown_key"}
        assert set(found) == {"stagse", "stages[0].entrypiont", "stages[0].outputs.x.fromstage",
                              "stages[0].outputs.x.schema.dtpye"}
        assert "did you mean 'stages'?" in found["stagse"]
        assert "did you mean 'entrypoint'?" in found["stages[0].entrypiont"]
        assert "did you mean 'from_stage'?" in found["stages[0].outputs.x.fromstage"]
        assert "did you mean 'dtype'?" in found["stages[0].outputs.x.schema.dtpye"]

    def test_a_misspelt_signal_type_suggests_the_right_one(self) -> None:
        problem = only_error(check("""\
            stages:
              - name: a
                outputs: {x: {type: nyp, schema: null}}
            """), "bad_choice")
        assert problem.where == "stages[0].outputs.x.type"
        assert "did you mean 'npy'?" in problem.hint
        assert problem.line == 3

    def test_a_key_written_twice_is_reported(self) -> None:
        report = check("""\
            stages:
              a: {outputs: {x: {type: npy, schema: null}}}
              a: {outputs: {y: {type: npy, schema: null}}}
            """)
        problem = only_error(report, "duplicate_stage")
        assert problem.line == 3


class TestStages:
    def test_duplicate_stage_names_are_reported(self) -> None:
        report = check("""\
            stages:
              - {name: a, outputs: {x: {type: npy, schema: null}}}
              - {name: a, outputs: {y: {type: npy, schema: null}}}
            """)
        assert only_error(report, "duplicate_stage").where == "stages[1].name"

    def test_a_stage_name_must_be_safe(self) -> None:
        problem = only_error(check("stages:\n  - name: ../evil\n"), "invalid_name")
        assert problem.where == "stages[0].name"

    def test_rust_runtime_is_refused_for_now(self) -> None:
        problem = only_error(check("stages:\n  - {name: a, runtime: rust}\n"),
                             "runtime_unsupported")
        assert "not supported yet" in problem.message

    def test_a_missing_module_file_is_reported(self) -> None:
        report = check("stages:\n  - {name: a}\n  - {name: b, entrypoint: src/b.py}\n",
                       files=lambda path: path == "modules/a.py")
        problem = only_error(report, "module_missing")
        assert problem.where == "stages[1].entrypoint"
        assert "src/b.py" in problem.message

    def test_the_default_module_is_modules_slash_stage_py(self) -> None:
        asked: list[str] = []

        def exists(path: str) -> bool:
            asked.append(path)
            return True

        check("stages:\n  - {name: train}\n", files=exists)
        assert asked == ["modules/train.py"]

    def test_an_entrypoint_outside_the_workspace_is_refused(self) -> None:
        only_error(check("stages:\n  - {name: a, entrypoint: ../x.py}\n"), "entrypoint_unsafe")


class TestSignals:
    def test_the_schema_key_is_required(self) -> None:
        problem = only_error(check("stages:\n  - {name: a, outputs: {x: {type: npy}}}\n"),
                             "schema_missing")
        assert "schema: null" in problem.hint

    def test_rank_must_agree_with_shape(self) -> None:
        only_error(check("""\
            stages:
              - {name: a, outputs: {x: {type: npy, schema: {shape: [1, 2], rank: 3}}}}
            """), "rank_mismatch")

    def test_an_output_cannot_name_a_source(self) -> None:
        only_error(check("""\
            stages:
              - {name: a, outputs: {x: {type: npy, dataset: d, schema: null}}}
            """), "output_with_source")

    def test_a_dataset_input_needs_a_dataset_name(self) -> None:
        only_error(check("stages:\n  - {name: a, inputs: {raw: {schema: null}}}\n"),
                   "dataset_name_missing")

    def test_a_typed_input_without_a_source_is_a_warning(self) -> None:
        report = check("stages:\n  - {name: a, inputs: {raw: {type: npy, schema: null}}}\n")
        assert report.valid
        assert [w.code for w in report.warnings] == ["input_unbound"]


class TestEdges:
    def test_from_stage_must_name_a_stage(self) -> None:
        problem = only_error(edge("{type: npy, from_stage: aa, schema: null}"), "unknown_stage")
        assert "did you mean 'a'?" in problem.hint

    def test_the_upstream_output_must_exist(self) -> None:
        problem = only_error(edge("{type: npy, from_stage: b, schema: null}"), "self_dependency")
        assert problem.where == "stages[1].inputs.x.from_stage"
        report = check(TWO.replace("x: %s", "z: {type: npy, from_stage: a, schema: null}"))
        problem = only_error(report, "unknown_signal")
        assert "signal:" in problem.hint

    def test_signal_aliases_an_upstream_output_with_another_name(self) -> None:
        report = check(TWO.replace("x: %s", "feats: {type: npy, from_stage: a, signal: x, "
                                   "schema: {shape: [null, 3]}}"))
        assert report.valid, report.errors
        report = check(TWO.replace("x: %s", "feats: {type: npy, from_stage: a, signal: xx, "
                                   "schema: null}"))
        problem = only_error(report, "unknown_signal")
        assert problem.where == "stages[1].inputs.feats.signal"
        assert "did you mean 'x'?" in problem.hint

    def test_signal_without_from_stage_is_reported(self) -> None:
        report = check("stages:\n  - {name: a, inputs: {raw: {dataset: d, signal: s, "
                       "schema: null}}}\n")
        assert codes(report) == ["signal_without_from_stage"]

    def test_types_must_match_across_an_edge(self) -> None:
        problem = only_error(edge("{type: csv, from_stage: a, schema: null}"), "type_mismatch")
        assert "npy" in problem.message and "csv" in problem.message

    @pytest.mark.parametrize("schema", ["{shape: [null, 3]}", "{shape: [-1, 3]}",
                                        "{shape: [100, -1]}", "{shape: [null, null]}",
                                        "{rank: 2}", "{dtype: float32}", "{}"])
    def test_shape_wildcards_match_any_size(self, schema: str) -> None:
        report = edge(f"{{type: npy, from_stage: a, schema: {schema}}}")
        assert report.valid, report.errors

    @pytest.mark.parametrize(("schema", "why"), [
        ("{shape: [null, 4]}", "shape"),
        ("{shape: [null]}", "shape"),
        ("{rank: 3}", "rank"),
        ("{shape: [null, 3], dtype: float64}", "dtype"),
    ])
    def test_incompatible_schemas_across_an_edge_are_reported(self, schema: str,
                                                              why: str) -> None:
        problem = only_error(edge(f"{{type: npy, from_stage: a, schema: {schema}}}"),
                             "schema_mismatch")
        assert why in problem.message

    def test_an_input_without_schema_fed_by_a_schema_is_a_warning(self) -> None:
        report = edge("{type: npy, from_stage: a, schema: null}")
        assert report.valid
        assert "no_schema" in [w.code for w in report.warnings]


class TestCycles:
    def test_a_cycle_is_reported_with_its_stages_named(self) -> None:
        report = check("""\
            stages:
              - name: a
                inputs: {x: {type: npy, from_stage: c, schema: null}}
                outputs: {x: {type: npy, schema: null}}
              - name: b
                inputs: {x: {type: npy, from_stage: a, schema: null}}
                outputs: {x: {type: npy, schema: null}}
              - name: c
                inputs: {x: {type: npy, from_stage: b, schema: null}}
                outputs: {x: {type: npy, schema: null}}
              - name: d
                inputs: {x: {type: npy, from_stage: c, schema: null}}
            """)
        problem = only_error(report, "cycle")
        assert "a -> b -> c -> a" in problem.message
        assert report.stage_order == []

    def test_two_separate_cycles_are_both_named(self) -> None:
        report = check("""\
            stages:
              a: {inputs: {x: {type: npy, from_stage: b, schema: null}},
                  outputs: {x: {type: npy, schema: null}}}
              b: {inputs: {x: {type: npy, from_stage: a, schema: null}},
                  outputs: {x: {type: npy, schema: null}}}
              c: {inputs: {x: {type: npy, from_stage: d, schema: null}},
                  outputs: {x: {type: npy, schema: null}}}
              d: {inputs: {x: {type: npy, from_stage: c, schema: null}},
                  outputs: {x: {type: npy, schema: null}}}
            """)
        assert sorted(p.message for p in report.errors) == [
            "stages form a cycle: a -> b -> a", "stages form a cycle: c -> d -> c"]


class TestDatasets:
    RAW = "stages:\n  - {name: a, inputs: {raw: {dataset: digits, schema: %s}}}\n"

    def test_an_unknown_dataset_is_reported(self) -> None:
        only_error(check(self.RAW % "null", sources=lambda name: None), "unknown_dataset")

    def test_datasets_are_not_looked_up_without_a_registry(self) -> None:
        assert check(self.RAW % "null").valid

    def test_a_dataset_schema_must_fit_the_input(self) -> None:
        def sources(name: str) -> Mapping[str, Any]:
            return {"shape": [1797, 64], "dtype": "float64", "description": "ignored"}

        assert check(self.RAW % "{shape: [null, 64]}", sources=sources).valid
        problem = only_error(check(self.RAW % "{shape: [null, 8, 8]}", sources=sources),
                             "dataset_schema_mismatch")
        assert "shape" in problem.message

    def test_a_dataset_without_a_registered_schema_is_accepted(self) -> None:
        assert check(self.RAW % "{shape: [1]}", sources=lambda name: {}).valid


def test_every_problem_is_reported_at_once() -> None:
    report = check("""\
        stages:
          - name: a
            runtim: python
            outputs:
              x: {type: npy}
          - name: b
            inputs:
              x: {type: csv, from_stage: a, schema: null}
              y: {type: npy, from_stage: nowhere, schema: null}
              raw: {schema: null}
          - name: b
        """, configs={"c": "k: 1", "b": "k: [1"}, files=lambda p: False, override={"k": 1})
    assert sorted(codes(report)) == sorted([
        "unknown_key", "schema_missing", "duplicate_stage", "module_missing", "module_missing",
        "type_mismatch", "unknown_stage", "dataset_name_missing", "config_for_unknown_stage",
        "invalid_yaml", "override_needs_stage_keys"])
    assert not report.valid


def test_problem_lines_point_into_the_right_file() -> None:
    report = check("stages:\n  - name: a\n    config_schema: {k: {type: int}}\n",
                   configs={"configs/a.yaml": "# tuned\nk: 1.5\n"})
    problem = only_error(report, "config_bad_value")
    assert (problem.file, problem.where, problem.line) == ("configs/a.yaml", "k", 2)


class TestParsePipeline:
    def test_returns_the_model_of_a_valid_pipeline(self) -> None:
        pipeline = parse_pipeline(DIGITS)
        assert pipeline.stage_names == ["preprocess", "train", "evaluate"]
        assert pipeline.stage("train").module_path == "modules/train.py"

    def test_raises_one_error_listing_every_problem(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            parse_pipeline("stages:\n  - {name: a, oops: 1, outputs: {x: {type: npy}}}\n")
        assert caught.value.code == "pipeline_invalid"
        assert "oops" in caught.value.message and "schema" in caught.value.message


def test_the_example_in_the_docs_is_valid() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "pipelines.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, flags=re.S)
    report = check(blocks[0], configs={"train": blocks[1]},
                   sources=lambda name: {"shape": [1797, 64], "dtype": "float64"})
    assert report.valid, report.errors
    assert report.stage_order == ["preprocess", "train", "evaluate"]
