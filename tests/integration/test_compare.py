"""compare(a, b) through the facade and the CLI over real runs: real stage processes, a real
SQLite log and views, versions whose files really changed between the two runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import quipu
from test_executor_helpers import drive, ended, executor
from toy_pipeline import PREP, SPEC, TRAIN, write_toy_pipeline

from quipu.app.bootstrap import Quipu, init_project
from quipu.app.compare import ANSWER_BUDGET
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.workspaces.aggregate import Workspace

REASON = "record two runs whose differences compare explains"
BINARY_A = bytes(range(256)) * 4
BINARY_B = bytes(reversed(range(256))) * 4


class Lab:
    """Workspace toy: run 1 on v1; then train.py changes its climb, configs/train.yaml sets 5
    epochs, prep makes other features and a binary file changes; run 2 on v2. A third
    version changes many long files (for the size budget)."""

    def __init__(self, tmp_path: Path) -> None:
        self.q: Quipu = init_project(tmp_path / "proj", name="proj", goal="compare runs")
        self.q.create_workspace("toy", "a toy pipeline to compare", REASON)
        self.slot = Path(self.q.mount("toy", "w1", REASON)["path"])
        write_toy_pipeline(self.slot)
        (self.slot / "weights.bin").write_bytes(BINARY_A)
        self.first = self.cycle(0.7)
        (self.slot / "modules" / "train.py").write_text(
            TRAIN.replace("0.1 * epoch", "0.12 * epoch"))
        (self.slot / "modules" / "prep.py").write_text(
            PREP.replace("reshape(10, 4)", "reshape(10, 4) * 2"))
        (self.slot / "configs").mkdir()
        (self.slot / "configs" / "train.yaml").write_text("epochs: 5\n")
        (self.slot / "weights.bin").write_bytes(BINARY_B)
        self.second = self.cycle(0.98)

    def cycle(self, value: float) -> dict[str, str]:
        started = self.q.run("toy", reason=REASON, results_spec=SPEC)
        ids = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
        drive(executor(self.q), ended(self.q, *ids.values()))
        self.q.finalize_run(started["pipeline_run_id"], {
            "primary_metric": "accuracy", "direction": "maximize", "value": value,
            "dataset_split": "val", "ml_outcome": "partial",
            "notes": "the compare tests read this verdict"})
        ids["pipeline"] = started["pipeline_run_id"]
        return ids

    def output(self, run_id: str, name: str) -> str:
        run = self.q.runs.load_run(run_id)
        assert run.exit is not None
        return str(run.exit.outputs[name]["sha256"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = Lab(tmp_path_factory.mktemp("compare"))
    yield made
    made.q.close()


@pytest.fixture(scope="module")
def answer(lab: Lab) -> dict[str, Any]:
    return lab.q.compare(lab.first["train"], lab.second["train"])


class TestTwoRuns:
    def test_the_summary_comes_first_and_says_why_b_beat_a(self, lab, answer):
        assert next(iter(answer)) == "summary"
        summary = answer["summary"]
        assert summary.startswith(f"B {lab.second['train']} beat A {lab.first['train']} on "
                                  "accuracy (maximize): 0.7 -> 0.98")
        assert "epochs 3->5" in summary and "features changed" in summary
        assert "modules/train.py" in summary

    def test_the_code_diff_lists_the_files_with_a_unified_diff_and_binaries_by_hash(
            self, answer):
        code = answer["code"]
        changes = {f["path"]: f["change"] for f in code["files"]}
        assert changes == {"configs/train.yaml": "added", "modules/prep.py": "modified",
                           "modules/train.py": "modified", "weights.bin": "modified"}
        text = code["diff_text"]
        assert "--- toy@v1/modules/train.py" in text and "+++ toy@v2/modules/train.py" in text
        assert '-        sdk.log_metric("accuracy", 0.5 + 0.1 * epoch, step=epoch)' in text
        assert '+        sdk.log_metric("accuracy", 0.5 + 0.12 * epoch, step=epoch)' in text
        binary = next(f for f in code["files"] if f["path"] == "weights.bin")
        assert binary["binary"] is True and binary["size"] == [1024, 1024]
        assert binary["sha256"][0] != binary["sha256"][1]
        assert "Binary file weights.bin changed" in text and "\x00" not in text

    def test_the_config_diff_is_the_effective_config_key_by_key(self, answer):
        assert answer["config"] == {"same": False, "changes": [
            {"key": "epochs", "change": "changed", "a": 3, "b": 5}]}

    def test_the_input_diff_names_the_changed_input_its_hashes_and_where_each_came_from(
            self, lab, answer):
        inputs = answer["inputs"]
        assert inputs["same"] == []
        (changed,) = inputs["changed"]
        assert changed["input"] == "features"
        assert changed["a"]["sha256"] == lab.output(lab.first["prep"], "features")
        assert changed["b"]["sha256"] == lab.output(lab.second["prep"], "features")
        assert changed["a"]["from"] == f"run {lab.first['prep']}.features"
        assert changed["b"]["from"] == f"run {lab.second['prep']}.features"

    def test_the_metric_delta_is_better_by_the_specs_direction(self, answer):
        (accuracy,) = answer["metrics"]["deltas"]
        assert accuracy == {"metric": "accuracy", "a": 0.7, "b": 0.98, "delta": 0.28,
                            "relative": 0.4, "within_tolerance": False, "outcome": "better",
                            "primary": True, "direction": "maximize"}

    def test_b_against_a_the_other_way_round_is_worse(self, lab):
        back = lab.q.compare(lab.second["train"], lab.first["train"])
        assert back["metrics"]["deltas"][0]["outcome"] == "worse"
        assert back["summary"].startswith(f"B {lab.first['train']} did worse than")
        assert back["config"]["changes"] == [
            {"key": "epochs", "change": "changed", "a": 5, "b": 3}]

    def test_the_environments_each_run_recorded_are_compared(self, answer, lab):
        # Both runs' stages ran with this interpreter and its packages: nothing changed.
        env = answer["environment"]
        assert env["recorded"] == {"a": True, "b": True}
        recorded = lab.q.inspect_run(lab.first["train"], include=["provenance"])
        count = recorded["provenance"]["environment"]["packages"]["count"]
        assert count > 10
        assert env["changed"] == {} and env["packages"] == {"same": True,
                                                             "count": [count, count]}
        assert env["same"] is True

    def test_two_runs_of_one_version_have_no_code_change_and_their_own_configs(self, lab):
        same = lab.q.compare(lab.first["prep"], lab.first["train"])
        assert same["code"]["files_changed"] == 0 and same["code"]["diff_text"] == ""
        assert "code: no changes" in same["summary"]

    def test_a_tagged_record_is_compared_by_its_tag(self, lab):
        lab.q.tag_record(lab.first["train"], "best-first", "the first run is the reference")
        tagged = lab.q.compare("toy@best-first", lab.second["train"])
        assert tagged["a"]["run_id"] == lab.first["train"]
        assert tagged["metrics"]["deltas"][0]["outcome"] == "better"
        # tagging a run tags its version too: compare reads the tag as the run
        assert lab.q.compare("@best-first", "toy@v2")["a"]["run_id"] == lab.first["train"]


@pytest.fixture(scope="module")
def diverged(lab: Lab) -> str:
    """A third run whose accuracy goes NaN at its last step (docs/results.md "Non-finite
    metrics"): it has no value, and its verdict needs no value."""
    (lab.slot / "modules" / "train.py").write_text(TRAIN.replace(
        "0.5 + 0.1 * epoch", "float('nan') if epoch == epochs - 1 else 0.5"))
    started = lab.q.run("toy", reason=REASON, results_spec=SPEC)
    ids = {q["stage"]: q["stage_run_id"] for q in started["queued"]}
    drive(executor(lab.q), ended(lab.q, *ids.values()))
    lab.q.finalize_run(started["pipeline_run_id"], {
        "ml_outcome": "miss", "notes": "accuracy went NaN at the last epoch"})
    return ids["train"]


class TestNonFinite:
    def test_a_run_whose_metric_went_nan_is_worse_than_one_with_a_value(self, lab, diverged):
        out = lab.q.compare(lab.second["train"], diverged)
        (accuracy,) = out["metrics"]["deltas"]
        assert accuracy["a"] == 0.98 and accuracy["b"] is None
        assert accuracy["b_non_finite"] == "nan" and accuracy["outcome"] == "worse"
        assert "delta" not in accuracy
        assert out["summary"].startswith(f"B {diverged} did worse than A "
                                         f"{lab.second['train']} on accuracy (maximize): "
                                         "0.98 -> nan.")
        json.dumps(out, allow_nan=False)  # no NaN token reaches the JSON


class TestVersions:
    def test_two_versions_compare_code_and_each_stages_effective_config(self, lab):
        out = lab.q.compare("toy@v1", "toy@v2")
        assert out["a"] == {"ref": "toy@v1", "workspace": "toy", "version": "v1"}
        assert out["b"]["version"] == "v2"
        assert out["config"]["changes"] == [
            {"key": "train.epochs", "change": "changed", "a": 3, "b": 5}]
        assert "metrics" not in out and "inputs" not in out

    def test_a_workspace_stands_for_its_current_version(self, lab):
        current = lab.q.service.load(Workspace, "toy").current
        assert lab.q.compare("toy@v1", "toy")["b"]["version"] == f"v{current}"

    def test_a_run_against_a_version_stands_for_its_version(self, lab):
        out = lab.q.compare(lab.first["train"], "toy@v2")
        assert out["code"]["files_changed"] == 4
        assert "metrics" not in out
        assert out["notes"] == [f"{lab.first['train']} is a run compared with a version: it "
                                "stands for its version toy@v1 (inputs, metrics and "
                                "environment need two runs)"]


class TestRefusals:
    def test_a_ref_that_matches_nothing_is_refused_with_did_you_mean(self, lab):
        head = lab.q.store.head()
        with pytest.raises(NotFound) as caught:
            lab.q.compare("tyo", lab.first["train"])
        assert caught.value.code == "unknown_ref" and "did you mean 'toy'" in caught.value.hint
        with pytest.raises(NotFound) as caught:
            lab.q.compare("toy@v1", "toy@v9")
        assert "did you mean 'toy@v" in caught.value.hint
        assert lab.q.store.head() == head

    def test_a_pipeline_run_is_refused_naming_its_stage_runs(self, lab):
        with pytest.raises(InvalidInput) as caught:
            lab.q.compare(lab.first["pipeline"], lab.second["train"])
        assert caught.value.code == "invalid_compare_ref"
        assert lab.first["train"] in caught.value.hint and lab.first["prep"] in caught.value.hint

    def test_an_output_hash_is_refused(self, lab):
        with pytest.raises(InvalidInput) as caught:
            lab.q.compare(lab.output(lab.first["prep"], "features")[:12], "toy@v1")
        assert caught.value.code == "invalid_compare_ref"

    def test_a_max_diff_lines_out_of_range_is_refused(self, lab):
        with pytest.raises(InvalidInput) as caught:
            lab.q.compare("toy@v1", "toy@v2", max_diff_lines=-1)
        assert caught.value.code == "invalid_max_diff_lines"


@pytest.fixture(scope="module")
def big(lab: Lab) -> int:
    """v3: 60 long files added, far more than a default answer shows."""
    for i in range(60):
        (lab.slot / "src" / f"m{i:02d}.py").parent.mkdir(exist_ok=True)
        (lab.slot / "src" / f"m{i:02d}.py").write_text(
            "".join(f"value_{j} = {'x' * 150!r}  # line {j}\n" for j in range(200)))
    saved = lab.q.save_version("w1", "sixty long files for the size budget")["version"]
    return int(str(saved).lstrip("v"))


class TestSize:
    def test_the_default_answer_stays_within_its_budget_and_says_what_it_left_out(
            self, lab, big):
        out = lab.q.compare(f"toy@v{big - 1}", f"toy@v{big}")
        size = len(json.dumps(out))
        assert size <= ANSWER_BUDGET, size
        code = out["code"]
        assert code["files_changed"] == 60 and code["more_files"] >= 35
        assert "more lines" in code["diff_text"]
        assert all(len(line) <= 200 for line in code["diff_text"].splitlines())

    def test_more_diff_lines_can_be_asked_for(self, lab, big):
        default = lab.q.compare(f"toy@v{big - 1}", f"toy@v{big}")
        more = lab.q.compare(f"toy@v{big - 1}", f"toy@v{big}", max_diff_lines=1000)
        assert more["code"]["diff_text"].count("\n") > 3 * default["code"]["diff_text"].count(
            "\n")
        none = lab.q.compare(f"toy@v{big - 1}", f"toy@v{big}", max_diff_lines=0)
        assert none["code"]["diff_text"] == "" and none["code"]["files_changed"] == 60


class TestCli:
    def test_compare_prints_the_summary_first_then_the_details_or_json(self, lab):
        root = lab.q.root
        a, b = lab.first["train"], lab.second["train"]
        text = quipu("compare", a, b, cwd=root).stdout
        assert text.splitlines()[0].startswith(f"B {b} beat A {a}")
        assert "  accuracy [primary]: 0.7 -> 0.98 (+0.28) better" in text
        assert "  epochs: 3 -> 5" in text and "--- toy@v1/modules/train.py" in text
        data = json.loads(quipu("compare", a, b, "--json", cwd=root).stdout)
        assert data["metrics"]["deltas"][0]["outcome"] == "better"

    def test_an_unknown_ref_exits_2_with_the_code_and_a_hint(self, lab):
        proc = quipu("compare", "tyo", "toy", cwd=lab.q.root, check=False)
        assert proc.returncode == 2
        assert "unknown_ref" in proc.stderr and "did you mean 'toy'" in proc.stderr
