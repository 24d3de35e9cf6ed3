"""Output contracts and statistics, checked by the executor on real stage processes (SVS).

Each test runs real stages from a real SQLite log and reads back what the log recorded: the
outputs' statistics in ``RunExited``, the findings in ``FindingsRecorded``, the findings view
behind ``get_run_svs_findings``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from test_executor_helpers import (
    drive,
    ended,
    executor,
    exit_of,
    make_project,
    start,
    write_slot,
)

from quipu.app.bootstrap import open_project
from quipu.app.facade import Quipu
from quipu.core.log import decode, stream_id
from quipu.core.patterns.detection import ApprovedPattern
from quipu.core.reviews.events import FindingsRecorded
from quipu.core.runs.lifecycle import State

WARNED = """\
    stages:
      - name: make
        outputs:
          emb: {type: npy, schema: {shape: [null, 4], dtype: float32}}
          table: {type: csv, schema: {columns: [id, label]}}
          meta: {type: json, schema: {json_kind: object}}
    """

MAKE_WARNED = """\
    import numpy as np
    from quipu import sdk

    rng = np.random.default_rng(0)
    sdk.save_output("emb", rng.normal(size=(50, 3)).astype(np.float32))
    sdk.save_output("table", [{"id": i, "label": "a"} for i in range(20)])
    sdk.save_output("meta", [1, 2, 3])
    """


def findings(q: Quipu, run_id: str) -> list[FindingsRecorded]:
    """The FindingsRecorded events on the run's stream, in order."""
    events = [decode(r).event for r in q.store.load(stream_id("run", run_id))]
    return [e for e in events if isinstance(e, FindingsRecorded)]


def signals(q: Quipu, run_id: str, phase: str) -> dict[str, list[dict[str, Any]]]:
    """{signal: [finding, ...]} of one phase."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event in findings(q, run_id):
        if event.phase == phase:
            for f in event.findings:
                out.setdefault(f["signal"], []).append(f)
    return out


def run_once(q: Quipu) -> dict[str, str]:
    ids = start(q)
    drive(executor(q), ended(q, *ids.values()))
    return ids


class TestContractsInWarningMode:
    def test_a_broken_contract_is_a_finding_and_the_run_succeeds(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, WARNED, {"make": MAKE_WARNED})
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED
        contract = signals(q, run_id, "contract")
        assert set(contract) == {"shape_mismatch", "json_kind_mismatch"}
        (shape,) = contract["shape_mismatch"]
        assert shape["severity"] == "warning" and shape["output"] == "emb"
        assert "expected shape ['*', 4]" in shape["message"] and "got [50, 3]" in shape["message"]
        assert "expected a JSON object, got a JSON array" in contract["json_kind_mismatch"][0][
            "message"]
        # the statistics of the csv caught its constant label column
        stats = signals(q, run_id, "statistics")
        assert [f["message"] for f in stats["constant_column"]] == [
            "column 'label' of output 'table' holds one value ('a') over 20 sampled values"]
        q.close()

    def test_the_outputs_statistics_are_stored_with_their_facts(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, WARNED, {"make": MAKE_WARNED})
        run_id = run_once(q)["make"]
        outputs = exit_of(q.runs.load_run(run_id)).outputs
        emb = outputs["emb"]["stats"]
        assert emb["shape"] == [50, 3] and emb["dtype"] == "float32"
        assert emb["count"] == 150 and emb["sampled"] is False
        assert emb["null_ratio"] == 0.0 and emb["unique"] == 150
        assert 4.0 < emb["entropy"] <= 6.0 and len(emb["quantiles"]) == 21
        label = outputs["table"]["stats"]["column_stats"]["label"]
        assert label["unique"] == 1 and label["entropy"] == 0.0
        assert outputs["table"]["stats"]["rows"] == 20
        # shown by inspect_run(include=["svs"]) without the drift sketch
        shown = q.inspect_run(run_id, include=["svs"])["svs"]
        assert shown["outputs"]["emb"]["mean"] == emb["mean"]
        assert "quantiles" not in json.dumps(shown)
        assert shown["counts"]["warning"] == 3
        q.close()


BLOCKING = """\
    stages:
      - name: make
        contracts: blocking
        outputs:
          emb: {type: npy, schema: {dtype: float32}}
    """

WRITES_ITSELF = """\
    import numpy as np
    from quipu import sdk

    # np.save behind the SDK's back: the executor's check is the one that catches it
    np.save(sdk.get_output_path("emb"), np.zeros(4, dtype=np.float64) + np.arange(4))
    """


class TestContractsInBlockingMode:
    def test_a_broken_contract_fails_the_run_with_a_precise_problem(self,
                                                                   tmp_path: Path) -> None:
        q = make_project(tmp_path, BLOCKING, {"make": WRITES_ITSELF})
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED
        assert exit_of(run).problems == [
            "output 'emb' breaks its contract: expected dtype float32, got float64; convert "
            "with array.astype('float32')"]
        (error,) = signals(q, run_id, "contract")["dtype_mismatch"]
        assert error["severity"] == "error"
        q.close()

    def test_the_sdk_refuses_the_data_before_writing_it(self, tmp_path: Path) -> None:
        code = """\
            import numpy as np
            from quipu import sdk

            sdk.save_output("emb", np.zeros(3))
            """
        q = make_project(tmp_path, BLOCKING, {"make": code})
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.current is State.FAILED
        assert "expected dtype float32, got float64" in (exit_of(run).error or "")
        q.close()


BAD_FILES = """\
    stages:
      - name: make
        outputs:
          scalar: {type: npy, schema: null}
          lying: {type: npy, schema: null}
          ragged: {type: csv, schema: null}
          broken: {type: json, schema: null}
    """

WRITES_BAD_FILES = """\
    import numpy as np
    from quipu import sdk

    np.save(sdk.get_output_path("scalar"), np.float32(1.5))
    path = sdk.get_output_path("lying")
    np.save(path, np.arange(100, dtype=np.int64))
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 80)
    sdk.get_output_path("ragged").write_text("a,b,c\\n1,2,3\\n4,5\\n6,7,8\\n")
    sdk.get_output_path("broken").write_text('{"loss": NaN}')
    """


class TestBadOutputFiles:
    def test_each_bad_file_gets_a_precise_contract_finding(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, BAD_FILES, {"make": WRITES_BAD_FILES})
        run_id = run_once(q)["make"]
        assert q.runs.load_run(run_id).current is State.SUCCEEDED  # warning: the run goes on
        found = {s: f[0] for s, f in signals(q, run_id, "contract").items()}
        assert set(found) == {"zero_dim_array", "npy_header_mismatch", "ragged_csv",
                              "invalid_json"}
        assert found["zero_dim_array"]["output"] == "scalar"
        assert ("the npy header says shape [100] of int64 (800 bytes of data), but the file "
                "holds 720 bytes") in found["npy_header_mismatch"]["message"]
        assert "the header has 3 fields but row 2 has 2" in found["ragged_csv"]["message"]
        assert "NaN is not JSON" in found["invalid_json"]["message"]
        # a file that cannot be trusted has no statistics
        outputs = exit_of(q.runs.load_run(run_id)).outputs
        assert "count" not in outputs["lying"]["stats"]
        q.close()


    def test_the_stage_config_file_overrides_the_pipelines_mode(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, BLOCKING, {"make": WRITES_ITSELF})
        configs = q.root / "workspaces" / "w1" / "configs"
        configs.mkdir()
        (configs / "make.yaml").write_text("svs_contracts: warning\n")
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.current is State.SUCCEEDED
        assert run.check_exists().outputs["emb"]["contract"] == "warning"
        assert run.check_exists().config == {}
        (warned,) = signals(q, run_id, "contract")["dtype_mismatch"]
        assert warned["severity"] == "warning"
        q.close()


SILENT = BLOCKING.replace("contracts: blocking", "contracts: silent")

UNSET = BLOCKING.replace("        contracts: blocking\n", "")
"""The same output contract, the stage naming no mode: the project's ``svs.contracts`` rules."""


def with_project_contracts(tmp_path: Path, mode: str, pipeline: str, code: str) -> Quipu:
    """A project whose quipu.yaml sets ``svs.contracts: mode``, opened again so the engine
    reads it (as a restarted ``quipu serve`` would)."""
    q = make_project(tmp_path, pipeline, {"make": code})
    root = q.root
    config = yaml.safe_load((root / "quipu.yaml").read_text())
    config.setdefault("svs", {})["contracts"] = mode
    (root / "quipu.yaml").write_text(yaml.safe_dump(config))
    q.close()
    return open_project(root)


class TestProjectWideContracts:
    def test_blocking_in_quipu_yaml_fails_a_stage_that_names_no_mode(self,
                                                                     tmp_path: Path) -> None:
        q = with_project_contracts(tmp_path, "blocking", UNSET, WRITES_ITSELF)
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.check_exists().outputs["emb"]["contract"] == "blocking"
        assert run.current is State.FAILED
        assert exit_of(run).problems == [
            "output 'emb' breaks its contract: expected dtype float32, got float64; convert "
            "with array.astype('float32')"]
        (error,) = signals(q, run_id, "contract")["dtype_mismatch"]
        assert error["severity"] == "error"
        q.close()

    def test_blocking_in_quipu_yaml_reaches_the_sdk_in_the_stage(self, tmp_path: Path) -> None:
        code = """\
            import numpy as np
            from quipu import sdk

            sdk.save_output("emb", np.zeros(3))
            """
        q = with_project_contracts(tmp_path, "blocking", UNSET, code)
        run = q.runs.load_run(run_once(q)["make"])
        assert run.current is State.FAILED
        assert "expected dtype float32, got float64" in (exit_of(run).error or "")
        q.close()

    def test_warning_in_quipu_yaml_records_a_finding_and_the_run_succeeds(
            self, tmp_path: Path) -> None:
        q = with_project_contracts(tmp_path, "warning", UNSET, WRITES_ITSELF)
        run_id = run_once(q)["make"]
        run = q.runs.load_run(run_id)
        assert run.check_exists().outputs["emb"]["contract"] == "warning"
        assert run.current is State.SUCCEEDED
        (warned,) = signals(q, run_id, "contract")["dtype_mismatch"]
        assert warned["severity"] == "warning"
        q.close()

    def test_a_stage_s_own_mode_wins_over_the_project_s(self, tmp_path: Path) -> None:
        stage_warns = BLOCKING.replace("contracts: blocking", "contracts: warning")
        q = with_project_contracts(tmp_path, "blocking", stage_warns, WRITES_ITSELF)
        run_id = run_once(q)["make"]
        assert q.runs.load_run(run_id).current is State.SUCCEEDED
        assert signals(q, run_id, "contract")["dtype_mismatch"][0]["severity"] == "warning"
        q.close()


class TestSilentContracts:
    def test_silent_checks_nothing(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, SILENT, {"make": WRITES_ITSELF})
        run_id = run_once(q)["make"]
        assert q.runs.load_run(run_id).current is State.SUCCEEDED
        assert signals(q, run_id, "contract") == {}
        q.close()


DRIFTING = """\
    stages:
      - name: make
        outputs:
          x: {type: npy, schema: {checks: {max_psi: 0.2}}}
    """

NORMAL = """\
    import numpy as np
    from quipu import sdk

    sdk.save_output("x", np.random.default_rng({seed}).normal({shift}, 1.0, size=5000))
    """


class TestDrift:
    def test_an_output_far_from_the_previous_succeeded_run_is_flagged(self,
                                                                     tmp_path: Path) -> None:
        q = make_project(tmp_path, DRIFTING, {"make": NORMAL.format(seed=1, shift=0.0)})
        first = run_once(q)["make"]
        assert signals(q, first, "statistics") == {}  # nothing to compare with yet
        q.finalize_run(first, {"ml_outcome": "unknown", "notes": "a baseline for the drift"})
        write_slot(q, DRIFTING, {"make": NORMAL.format(seed=2, shift=0.05)})
        close = run_once(q)["make"]
        assert "distribution_drift" not in signals(q, close, "statistics")
        q.finalize_run(close, {"ml_outcome": "unknown", "notes": "a small shift is no drift"})
        write_slot(q, DRIFTING, {"make": NORMAL.format(seed=3, shift=2.0)})
        far = run_once(q)["make"]
        (drifted,) = signals(q, far, "statistics")["distribution_drift"]
        assert drifted["evidence"]["baseline_run"] == close
        assert drifted["evidence"]["psi"] > 0.2 and drifted["evidence"]["ks"] > 0.5
        q.close()


MANY = """\
    stages:
      - name: make
        outputs:
          wide: {type: csv, schema: null}
    """

CONSTANT_COLUMNS = """\
    from quipu import sdk

    header = [f"column_{i:02d}_with_a_rather_long_name_to_fill_the_message" for i in range(32)]
    sdk.save_output("wide", [header] + [["same"] * 32 for _ in range(10)])
    """


class TestTheFindingsAnswer:
    def test_get_run_svs_findings_is_bounded_and_pages(self, tmp_path: Path) -> None:
        q = make_project(tmp_path, MANY, {"make": CONSTANT_COLUMNS})
        run_id = run_once(q)["make"]
        first = q.get_run_svs_findings(run_id)
        assert first["counts"]["total"] == 32 and first["counts"]["warning"] == 32
        assert len(first["findings"]) == 20 and first["omitted"] == 12
        assert len(json.dumps(first)) <= 9_000
        rest = q.get_run_svs_findings(run_id, offset=20, limit=50)
        assert len(rest["findings"]) == 12 and rest["omitted"] == 0
        widest = q.get_run_svs_findings(run_id, limit=50)
        assert len(json.dumps(widest)) <= 20_000
        q.close()


CONSTANT = """\
    stages:
      - name: make
        outputs:
          emb: {type: npy, schema: {dtype: float32}}
    """

MAKE_CONSTANT = """\
    import numpy as np
    from quipu import sdk

    sdk.save_output("emb", np.ones((40, 2), dtype=np.float32))
    """


class TestApprovedPatterns:
    def test_a_statistic_rule_of_an_approved_pattern_flags_the_output(self,
                                                                        tmp_path: Path) -> None:
        """The failure-pattern loop's statistic rules run where the statistics are made (the
        executor), as bootstrap wires them; a pattern of another stage does not apply."""
        q = make_project(tmp_path, CONSTANT, {"make": MAKE_CONSTANT})
        dead = ApprovedPattern(
            pattern_id="pat-0123456789ab", stage="make", severity="warning",
            signal="zero_variance", symptom="the embedding collapsed to one value",
            prevention="check the encoder's initialisation",
            detection={"kind": "statistic", "statistic": "std", "op": "==", "threshold": 0})
        other = ApprovedPattern(
            pattern_id="pat-ba9876543210", stage="train", severity="error",
            signal="zero_variance", symptom="another stage's rule",
            detection={"kind": "statistic", "statistic": "std", "op": ">=", "threshold": 0})
        ids = start(q)
        drive(executor(q, patterns=lambda stage: [dead, other]), ended(q, *ids.values()))
        run_id = ids["make"]
        assert q.runs.load_run(run_id).current is State.SUCCEEDED
        [found] = signals(q, run_id, "statistics")["failure_pattern"]
        assert found["pattern_id"] == "pat-0123456789ab" and found["output"] == "emb"
        assert found["fix"] == "check the encoder's initialisation"
        q.close()
