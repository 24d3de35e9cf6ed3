"""The static reviewer finds each problem it promises, with its file and line, and nothing in
clean code (the demo pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import quipu
from quipu.adapters.reviewers import StaticReviewer
from quipu.core.reviews.review import ReviewContext

SPEC = {"primary_metric": "accuracy", "direction": "maximize"}
PIPELINE = """\
stages:
  - name: prep
    outputs:
      features: {type: npy, schema: null}
  - name: train
    config_schema:
      lr: {type: float, default: 0.1}
    inputs:
      features: {type: npy, from_stage: prep, schema: null}
    outputs:
      model: {type: file, schema: null}
"""
PREP = """\
from quipu import sdk
sdk.save_output("features", [1, 2])
"""
TRAIN = """\
from quipu import sdk

config = sdk.get_config()
x = sdk.load_input("features")
sdk.log_metric("accuracy", config["lr"])
sdk.save_output("model", b"w")
"""


def context(files: dict[str, str], *, stage: str = "train", config: dict[str, Any] | None = None,
            inputs: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
            pipeline: str = PIPELINE) -> ReviewContext:
    files = {"pipeline.yaml": pipeline, "modules/prep.py": PREP, "modules/train.py": TRAIN,
             **files}
    return ReviewContext(
        run_id="stage-1", workspace="w", stage=stage, version=1,
        entrypoint=f"modules/{stage}.py", files=files, pipeline=files["pipeline.yaml"],
        config={"lr": 0.1} if config is None else config,
        inputs=inputs or {"features": {"kind": "upstream", "stage": "prep",
                                       "signal": "features"}},
        outputs={}, results_spec=SPEC if spec is None else spec,
        reason={"description": "test"})


def signals(ctx: ReviewContext) -> dict[str, list[tuple[str | None, int | None, str]]]:
    verdict = StaticReviewer().review(ctx)
    out: dict[str, list[tuple[str | None, int | None, str]]] = {}
    for f in verdict.findings:
        out.setdefault(f.signal, []).append((f.file, f.line, f.severity))
    return out


def test_clean_code_is_approved_without_findings() -> None:
    verdict = StaticReviewer().review(context({}))
    assert verdict.decision == "approve" and verdict.findings == ()


def test_the_demo_pipeline_passes_every_check() -> None:
    demo = Path(quipu.__file__).parent / "app" / "_demo_pipeline"
    files = {p.relative_to(demo).as_posix(): p.read_text() for p in demo.rglob("*")
             if p.is_file() and p.suffix in (".py", ".yaml")}
    config = {"hidden": 32, "epochs": 30, "learning_rate": 0.001, "alpha": 0.0001, "seed": 0}
    inputs = {"features": {"kind": "upstream", "stage": "preprocess",
                           "signal": "train_features"},
              "labels": {"kind": "upstream", "stage": "preprocess", "signal": "train_labels"}}
    ctx = ReviewContext(run_id="r", workspace="w", stage="train", version=1,
                        entrypoint="modules/train.py", files=files,
                        pipeline=files["pipeline.yaml"], config=config, inputs=inputs,
                        outputs={}, results_spec=SPEC, reason={})
    assert StaticReviewer().review(ctx).findings == ()


def test_a_module_that_does_not_compile_blocks_with_its_line() -> None:
    found = signals(context({"modules/train.py": TRAIN + "def broken(:\n"}))
    assert found["syntax_error"] == [("modules/train.py", 7, "error")]


def test_an_undefined_name_blocks_with_its_line() -> None:
    verdict = StaticReviewer().review(
        context({"modules/train.py": TRAIN + "print(undefined_thing)\n"}))
    assert verdict.decision == "block"
    [f] = verdict.findings
    assert (f.signal, f.file, f.line) == ("undefined_name", "modules/train.py", 7)
    assert "undefined_thing" in f.message and verdict.fix


def test_an_undefined_name_in_an_imported_workspace_module_is_found() -> None:
    train = "import helpers\n" + TRAIN + "helpers.go()\n"
    found = signals(context({"modules/train.py": train,
                             "modules/helpers.py": "def go():\n    return missing\n"}))
    assert found["undefined_name"] == [("modules/helpers.py", 2, "error")]


def test_modules_of_other_stages_are_not_this_runs_problem() -> None:
    found = signals(context({"modules/prep.py": PREP + "print(nope)\n"}))
    assert "undefined_name" not in found


def test_an_input_or_output_the_stage_does_not_declare_blocks() -> None:
    train = TRAIN.replace('load_input("features")', 'load_input("featurez")').replace(
        'save_output("model"', 'save_output("modle"')
    found = signals(context({"modules/train.py": train}))
    assert found["unknown_input"] == [("modules/train.py", 4, "error")]
    assert found["unknown_output"] == [("modules/train.py", 6, "error")]


def test_a_config_key_nobody_declared_is_found() -> None:
    train = TRAIN + 'epochs = config["epochs"]\nseed = sdk.get_config().get("seed")\n'
    found = signals(context({"modules/train.py": train}))
    assert found["config_key_undeclared"] == [("modules/train.py", 7, "error"),
                                              ("modules/train.py", 8, "warning")]


def test_a_key_from_the_config_file_counts_as_declared() -> None:
    train = TRAIN + 'epochs = config["epochs"]\n'
    found = signals(context({"modules/train.py": train}, config={"lr": 0.1, "epochs": 3}))
    assert "config_key_undeclared" not in found


def test_a_primary_metric_no_stage_logs_is_a_warning() -> None:
    verdict = StaticReviewer().review(context({}, spec={"primary_metric": "f1"}))
    assert verdict.decision == "warn"
    assert [f.signal for f in verdict.findings] == ["primary_metric_not_logged"]


def test_a_computed_metric_name_is_not_second_guessed() -> None:
    train = TRAIN + 'name = "f" + "1"\nsdk.log_metric(name, 0.5)\n'
    found = signals(context({"modules/train.py": train}, spec={"primary_metric": "f1"}))
    assert "primary_metric_not_logged" not in found


def test_an_input_never_read_is_a_warning() -> None:
    train = TRAIN.replace('x = sdk.load_input("features")\n', "")
    found = signals(context({"modules/train.py": train}))
    assert found["input_never_read"] == [("modules/train.py", None, "warning")]


def test_the_same_data_for_training_and_evaluation_is_flagged_as_leakage() -> None:
    pipeline = PIPELINE.replace(
        "      features: {type: npy, from_stage: prep, schema: null}\n",
        "      train_x: {type: npy, from_stage: prep, signal: features, schema: null}\n"
        "      test_x: {type: npy, from_stage: prep, signal: features, schema: null}\n")
    train = TRAIN.replace('x = sdk.load_input("features")',
                          'a = sdk.load_input("train_x")\nb = sdk.load_input("test_x")')
    same = {"kind": "upstream", "stage": "prep", "signal": "features"}
    found = signals(context({"modules/train.py": train}, pipeline=pipeline,
                            inputs={"train_x": same, "test_x": same}))
    assert found["leakage_same_input"] == [("pipeline.yaml", None, "warning")]


def test_distinct_train_and_test_data_is_not_leakage() -> None:
    pipeline = PIPELINE.replace(
        "      features: {type: npy, from_stage: prep, schema: null}\n",
        "      train_x: {type: npy, from_stage: prep, signal: features, schema: null}\n"
        "      test_x: {type: npy, from_stage: prep, signal: held_out, schema: null}\n")
    train = TRAIN.replace('x = sdk.load_input("features")',
                          'a = sdk.load_input("train_x")\nb = sdk.load_input("test_x")')
    found = signals(context(
        {"modules/train.py": train}, pipeline=pipeline,
        inputs={"train_x": {"kind": "upstream", "stage": "prep", "signal": "features"},
                "test_x": {"kind": "upstream", "stage": "prep", "signal": "held_out"}}))
    assert "leakage_same_input" not in found


def test_an_approved_code_pattern_is_matched_in_the_stage_code() -> None:
    """The failure-pattern loop's code-regex detections run in the static review (wired by the
    review context's ``patterns``, as bootstrap passes them)."""
    pattern = {"pattern_id": "pat-0123456789ab", "stage": "train", "severity": "error",
               "symptom": "the model is loaded without map_location",
               "prevention": "pass map_location to torch.load",
               "detection": {"kind": "code", "regex": r"sdk\.save_output\(\"model\""}}
    other_stage = {**pattern, "pattern_id": "pat-ba9876543210", "stage": "prep"}
    ctx = context({})
    ctx = ReviewContext(**{**ctx.__dict__, "patterns": (pattern, other_stage)})
    verdict = StaticReviewer().review(ctx)
    [found] = [f for f in verdict.findings if f.signal == "failure_pattern"]
    assert found.pattern_id == "pat-0123456789ab" and found.file == "modules/train.py"
    assert found.line == 6 and found.fix == "pass map_location to torch.load"
    assert verdict.decision == "block"  # the pattern's severity is error
