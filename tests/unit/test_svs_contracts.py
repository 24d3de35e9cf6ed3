"""Output contracts and statistics (SVS): the validators, the sampled statistics, the checks,
and the findings view (incremental == rebuilt)."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_runs_projection import ACTOR, PIPELINE, SPEC
from unit_support import make_project

from quipu import outputcheck, sdk
from quipu.core.errors import InvalidInput
from quipu.core.pipelines import (
    config_contracts,
    parse_pipeline,
    resolve_config,
    validate_pipeline,
)
from quipu.core.reviews.events import OutcomeSuggested, ReviewCompleted, ReviewStarted
from quipu.core.reviews.statistics import (
    BUILTIN_CHECKS,
    StatChecks,
    check_statistics,
    drift,
    effective_checks,
)
from quipu.core.runs.aggregate import Run
from quipu.core.runs.handlers import RunService
from quipu.projections import Views
from quipu.sdk import testing

# --- the validators -----------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)
dtypes = st.sampled_from(["float32", "float64", "int64", "uint8", "bool"])


@given(shape=shapes, dtype=dtypes)
def test_an_array_always_fits_the_schema_that_describes_it(shape: tuple[int, ...],
                                                          dtype: str) -> None:
    schema = {"shape": list(shape), "rank": len(shape), "dtype": dtype}
    assert outputcheck.check_array(shape, np.dtype(dtype), schema) == []


@given(shape=shapes, dtype=dtypes, other=dtypes, wild=st.integers(0, 2))
def test_each_broken_part_of_an_array_schema_is_named(shape: tuple[int, ...], dtype: str,
                                                      other: str, wild: int) -> None:
    wanted = [None if i == wild else d + 1 for i, d in enumerate(shape)]
    found = outputcheck.check_array(shape, np.dtype(dtype), {"shape": wanted, "dtype": other})
    signals = {v.signal for v in found}
    assert ("shape_mismatch" in signals) == any(w is not None for w in wanted)
    assert ("dtype_mismatch" in signals) == (dtype != other)


def test_a_zero_dimensional_array_breaks_any_schema_but_rank_zero() -> None:
    (found,) = outputcheck.check_array((), np.dtype("float32"), {})
    assert found.signal == "zero_dim_array" and "np.asarray([value])" in found.message
    assert outputcheck.check_array((), np.dtype("float32"), {"rank": 0}) == []


@given(columns=st.lists(st.sampled_from("abcdef"), unique=True, max_size=6),
       wanted=st.lists(st.sampled_from("abcdef"), unique=True, max_size=6))
def test_columns_fit_exactly_or_say_what_is_missing_extra_or_reordered(
        columns: list[str], wanted: list[str]) -> None:
    found = outputcheck.check_columns(columns, {"columns": wanted})
    if columns == wanted:
        assert found == []
        return
    (problem,) = found
    missing = [c for c in wanted if c not in columns]
    extra = [c for c in columns if c not in wanted]
    assert problem.signal == "columns_mismatch"
    assert (f"missing {missing}" in problem.message) == bool(missing or extra)
    assert ("order differs" in problem.message) == (not missing and not extra)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8)


@given(value=json_values, kind=st.sampled_from(list(outputcheck.JSON_KINDS)))
def test_the_json_kind_matches_exactly_when_it_is_the_values_kind(value: Any,
                                                                  kind: str) -> None:
    found = outputcheck.check_json_value(value, {"json_kind": kind})
    assert (found == []) == (outputcheck.json_kind(value) == kind)


class TestBadFiles:
    def test_an_npy_whose_header_lies_about_its_size(self, tmp_path: Path) -> None:
        path = tmp_path / "x.npy"
        np.save(path, np.zeros((10, 4), dtype=np.float32))
        path.write_bytes(path.read_bytes() + b"\0" * 8)
        (found,) = outputcheck.check_file(path, "npy", {})
        assert found.signal == "npy_header_mismatch"
        assert "shape [10, 4] of float32 (160 bytes of data)" in found.message
        assert "168 bytes after its header" in found.message

    def test_a_file_that_is_not_npy_at_all(self, tmp_path: Path) -> None:
        path = tmp_path / "x.npy"
        path.write_text("hello")
        (found,) = outputcheck.check_file(path, "npy", {})
        assert found.signal == "npy_unreadable"

    def test_a_ragged_csv_names_the_rows(self, tmp_path: Path) -> None:
        path = tmp_path / "t.csv"
        path.write_text("a,b\n1,2\n3\n4,5,6\n")
        (found,) = outputcheck.check_file(path, "csv", {})
        assert found.signal == "ragged_csv"
        assert "the header has 2 fields but row 2 has 1, row 3 has 3" in found.message

    def test_an_empty_csv_has_no_header(self, tmp_path: Path) -> None:
        path = tmp_path / "t.csv"
        path.write_text("")
        assert [v.signal for v in outputcheck.check_file(path, "csv", {})] == ["csv_no_header"]

    @pytest.mark.parametrize("text", ['{"a": 1', "[NaN]", "Infinity", "{'a': 1}"])
    def test_json_that_is_not_json(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "j.json"
        path.write_text(text)
        assert [v.signal for v in outputcheck.check_file(path, "json", {})] == ["invalid_json"]


# --- contract modes in the SDK ------------------------------------------------------------------


def _out(contract: str, schema: dict[str, Any], kind: str = "npy") -> dict[str, Any]:
    return {"o": {"type": kind, "schema": schema, "contract": contract}}


class TestSdkContractModes:
    def test_warning_writes_the_data_warns_and_records_what_broke(self, tmp_path: Path) -> None:
        with testing.stage(outputs=_out("warning", {"dtype": "float32"}), tmp_path=tmp_path) \
                as run, pytest.warns(sdk.SdkWarning, match="expected dtype float32"):
            sdk.save_output("o", np.zeros(3))
        (line,) = run.output_records
        assert line["contract"] == [{"signal": "dtype_mismatch", "message": line["contract"][0][
            "message"]}]
        assert run.output("o").dtype == np.float64

    def test_silent_writes_the_data_without_a_word(self, tmp_path: Path) -> None:
        with testing.stage(outputs=_out("silent", {"dtype": "float32"}), tmp_path=tmp_path) \
                as run:
            sdk.save_output("o", np.zeros(3))
        assert "contract" not in run.output_records[0]

    def test_blocking_raises_and_writes_nothing(self, tmp_path: Path) -> None:
        with testing.stage(outputs=_out("blocking", {"dtype": "float32"}), tmp_path=tmp_path) \
                as run, pytest.raises(sdk.SchemaMismatch, match="expected dtype float32"):
            sdk.save_output("o", np.zeros(3))
        assert run.output_records == []

    def test_a_zero_dimensional_array_is_refused_by_default(self, tmp_path: Path) -> None:
        with testing.stage(outputs={"o": "npy"}, tmp_path=tmp_path), \
                pytest.raises(sdk.SchemaMismatch, match="0-dimensional array"):
            sdk.save_output("o", np.float32(1.0))

    def test_ragged_rows_break_a_csv_contract(self, tmp_path: Path) -> None:
        with testing.stage(outputs=_out("blocking", {}, "csv"), tmp_path=tmp_path), \
                pytest.raises(sdk.SchemaMismatch, match="row 2 has 3"):
            sdk.save_output("o", [("a", "b"), (1, 2), (3, 4, 5)])

    def test_nan_in_a_json_output_is_refused_whatever_the_mode(self, tmp_path: Path) -> None:
        with testing.stage(outputs=_out("silent", {}, "json"), tmp_path=tmp_path), \
                pytest.raises(sdk.SchemaMismatch, match="not JSON"):
            sdk.save_output("o", {"loss": math.nan})


# --- pipeline.yaml ------------------------------------------------------------------------------


class TestDeclarations:
    def test_contracts_checks_vocab_size_and_json_kind_are_declared_in_pipeline_yaml(
            self) -> None:
        pipeline = parse_pipeline("""
stages:
  - name: tok
    contracts: blocking
    outputs:
      ids: {type: npy, schema: {rank: 1, vocab_size: 32000, checks: {min_entropy: 2}}}
      meta: {type: json, schema: {json_kind: object}}
""")
        stage = pipeline.stage("tok")
        assert stage.contracts == "blocking"
        schema = stage.outputs["ids"].schema_
        assert schema is not None and schema.vocab_size == 32000
        assert schema.checks == StatChecks(min_entropy=2.0)

    @pytest.mark.parametrize(("field", "code"), [
        ("contracts: strict", "bad_choice"),
        ("outputs: {x: {type: npy, schema: {checks: {max_null: 0.2}}}}", "invalid_value"),
        ("outputs: {x: {type: npy, schema: {checks: {max_null_ratio: 2}}}}", "invalid_value"),
        ("outputs: {x: {type: json, schema: {json_kind: dict}}}", "bad_choice"),
    ])
    def test_a_bad_declaration_is_reported_by_code(self, field: str, code: str) -> None:
        report = validate_pipeline(f"stages:\n  - name: a\n    {field}\n", config_texts={},
                                   file_exists=lambda _p: True)
        assert code in {p.code for p in report.errors}, report.errors
        with pytest.raises(InvalidInput):
            parse_pipeline(f"stages:\n  - name: a\n    {field}\n")

    def test_a_stage_config_file_may_set_the_contract_mode_and_the_stage_never_sees_it(
            self) -> None:
        pipeline = ("stages:\n  - name: a\n    contracts: blocking\n    config_schema:\n"
                    "      lr: {type: float, default: 0.1}\n")
        good = validate_pipeline(pipeline, config_texts={"a": "svs_contracts: warning\n"},
                                 file_exists=lambda _p: True)
        assert good.valid, good.errors
        assert config_contracts("svs_contracts: warning\nlr: 0.2\n") == "warning"
        assert resolve_config("a", parse_pipeline(pipeline),
                              {"a": "svs_contracts: warning\nlr: 0.2\n"}) == {"lr": 0.2}
        bad = validate_pipeline(pipeline, config_texts={"a": "svs_contracts: strict\n"},
                                file_exists=lambda _p: True)
        assert [(p.code, p.file) for p in bad.errors] == [("bad_choice", "configs/a.yaml")]

    def test_thresholds_layer_builtins_then_project_then_output(self) -> None:
        project = StatChecks(max_null_ratio=0.3, zero_variance=False)
        assert effective_checks(None, None) == dict(BUILTIN_CHECKS)
        assert effective_checks(project, {"max_null_ratio": 0.01}) == {
            **BUILTIN_CHECKS, "zero_variance": False, "max_null_ratio": 0.01}


# --- sampled statistics -------------------------------------------------------------------------


def _exact_entropy(values: np.ndarray[Any, Any], lo: float, hi: float) -> float:
    hist, _ = np.histogram(values[np.isfinite(values)], bins=outputcheck.HIST_BINS,
                           range=(lo, hi))
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(2_000, 30_000), nan_share=st.floats(0.0, 0.3),
       seed=st.integers(0, 2**16), loc=st.floats(-5, 5))
def test_sampled_npy_statistics_stay_near_the_exact_ones(rows: int, nan_share: float,
                                                          seed: int, loc: float) -> None:
    """Past the sample limit, null ratio and mean are within sampling error of the exact
    values, min/max within the exact range, and the histogram entropy near the exact one."""
    rng = np.random.default_rng(seed)
    values = rng.normal(loc, 1.0, size=(rows, 64)).astype(np.float32)
    values[rng.random(values.shape) < nan_share] = np.nan
    tmp = Path(tempfile.mkdtemp())
    try:
        path = tmp / "x.npy"
        np.save(path, values)
        limit = outputcheck.SAMPLE_LIMIT
        outputcheck.SAMPLE_LIMIT = 20_000  # a small limit: sampling happens on small data
        try:
            stats = outputcheck.summarise_file(path, "npy")
        finally:
            outputcheck.SAMPLE_LIMIT = limit
    finally:
        shutil.rmtree(tmp)
    exact_nulls = float(np.isnan(values).mean())
    assert stats["sampled"] is (values.size > 20_000)
    assert stats["sample"] <= 20_000
    assert abs(stats["null_ratio"] - exact_nulls) < 0.03
    finite = values[np.isfinite(values)]
    slack = 1e-5 * float(np.abs(finite).max())  # the stats keep 6 significant digits
    assert finite.min() - slack <= stats["min"] <= stats["max"] <= finite.max() + slack
    assert abs(stats["mean"] - float(finite.mean())) < 0.1
    exact = _exact_entropy(values, stats["min"], stats["max"])
    assert abs(stats["entropy"] - exact) < 0.1 * max(exact, 1.0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 5_000), categories=st.integers(1, 20), seed=st.integers(0, 999),
       empty=st.floats(0, 0.5))
def test_csv_statistics_on_a_reservoir_stay_near_the_exact_ones(rows: int, categories: int,
                                                                seed: int,
                                                                empty: float) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, categories, size=rows)
    blanks = rng.random(rows) < empty
    tmp = Path(tempfile.mkdtemp())
    try:
        path = tmp / "t.csv"
        path.write_text("label,x\n" + "".join(
            f"{'' if b else v},{i}\n" for i, (v, b) in enumerate(zip(labels, blanks,
                                                                      strict=True))))
        limit = outputcheck.ROW_LIMIT
        outputcheck.ROW_LIMIT = 1_000
        try:
            table = outputcheck._read_csv(path, limit=1_000)
            stats = outputcheck.summarise_file(path, "csv")
        finally:
            outputcheck.ROW_LIMIT = limit
    finally:
        shutil.rmtree(tmp)
    assert stats["rows"] == rows == table.total
    assert len(table.rows) == min(rows, 1_000)
    label = stats["column_stats"]["label"]
    assert abs(label["null_ratio"] - float(blanks.mean())) < 0.1
    assert label["unique"] <= categories
    counts = np.bincount(labels[~blanks], minlength=categories)
    p = counts[counts > 0] / max(counts.sum(), 1)
    exact = float(-(p * np.log2(p)).sum()) if counts.sum() else 0.0
    assert abs(label["entropy"] - exact) <= 0.15 * max(exact, 1.0)


def test_ragged_rows_and_empty_fields_are_counted_over_every_row(tmp_path: Path) -> None:
    """Past the sample, rows, ragged rows and empty fields are still exact (numpy counts
    them per chunk), whatever the sample holds; quotes fall back to the sample."""
    path = tmp_path / "t.csv"
    lines = [f"{i},{'' if i % 10 == 0 else i}\r\n" for i in range(5_000)]
    lines[4_321] = "1,2,3\n"
    lines.insert(100, "\n")  # a blank line is not a row
    path.write_text("a,b\n" + "".join(lines))
    table = outputcheck._read_csv(path, limit=100)
    assert table.total == 5_000 and len(table.rows) == 100 and table.sampled
    assert table.ragged == [(4_322, 3)] and table.exact
    assert table.empty == [0, 500]
    found = outputcheck.check_file(path, "csv", {})
    assert [v.signal for v in found] == ["ragged_csv"]
    assert "row 4322 has 3" in found[0].message and "sampled" not in found[0].message
    path.write_text('a,b\n"x,y",1\n' + "".join(f"{i},{i}\n" for i in range(500)))
    quoted = outputcheck._read_csv(path, limit=100)
    assert not quoted.exact and quoted.empty is None and quoted.total == 501


def test_a_reservoir_row_is_every_row_with_equal_chance(tmp_path: Path) -> None:
    """Rows past the first ``limit`` are kept as often as the first ones (Algorithm R)."""
    path = tmp_path / "t.csv"
    path.write_text("i\n" + "".join(f"{i}\n" for i in range(10_000)))
    kept = np.zeros(10_000)
    for seed in range(30):
        table = outputcheck._read_csv(path, limit=500, seed=seed)
        kept[[int(r[0]) for r in table.rows]] += 1
    first, last = kept[:5_000].sum(), kept[5_000:].sum()
    assert abs(first - last) / (first + last) < 0.05


# --- the checks ---------------------------------------------------------------------------------


def _stats(values: np.ndarray[Any, Any]) -> dict[str, Any]:
    return outputcheck.summarise_values(values)


class TestStatisticChecks:
    def test_a_constant_array_has_zero_variance(self) -> None:
        found = check_statistics(stage="s", output="x", stats=_stats(np.ones(100)),
                                 checks=BUILTIN_CHECKS)
        assert [f.signal for f in found] == ["zero_variance"]
        assert found[0].phase == "statistics" and found[0].output == "x"

    def test_a_nearly_collapsed_array_has_low_entropy(self) -> None:
        values = np.zeros(1000)
        values[0] = 1.0
        found = check_statistics(stage="s", output="x", stats=_stats(values),
                                 checks=BUILTIN_CHECKS)
        assert [f.signal for f in found] == ["low_entropy"]
        assert found[0].evidence["threshold"] == 0.1

    def test_too_many_nans(self) -> None:
        values = np.arange(100.0)
        values[:20] = np.nan
        found = check_statistics(stage="s", output="x", stats=_stats(values),
                                 checks={**BUILTIN_CHECKS, "max_null_ratio": 0.1})
        assert [f.signal for f in found] == ["high_null_ratio"]
        assert check_statistics(stage="s", output="x", stats=_stats(values),
                                checks={**BUILTIN_CHECKS, "max_null_ratio": 0.5}) == []

    def test_unused_vocabulary(self) -> None:
        stats = outputcheck.summarise_values(np.arange(100) % 5, vocab_size=1000)
        assert stats["vocab_utilisation"] == 0.005
        found = check_statistics(stage="s", output="ids", stats=stats,
                                 checks={"min_vocab_utilisation": 0.5})
        assert [f.signal for f in found] == ["low_vocab_utilisation"]

    def test_dead_features_of_a_matrix(self, tmp_path: Path) -> None:
        values = np.random.default_rng(0).normal(size=(200, 8))
        values[:, [2, 5]] = 0.5
        np.save(tmp_path / "m.npy", values)
        stats = outputcheck.summarise_file(tmp_path / "m.npy", "npy")
        found = check_statistics(stage="s", output="m", stats=stats, checks=BUILTIN_CHECKS)
        assert [f.signal for f in found] == ["constant_column"]
        assert found[0].evidence == {"constant_features": 2, "index": [2, 5]}

    def test_checks_switched_off_find_nothing(self) -> None:
        off = {"zero_variance": False, "constant_column": False, "min_entropy": 0,
               "max_null_ratio": 1}
        assert check_statistics(stage="s", output="x", stats=_stats(np.ones(10)),
                                checks=off) == []


class TestTopKShare:
    """``top_k_share``: the share of the sample its TOP_K (10) most common values cover."""

    def test_integers_whose_counts_are_known(self) -> None:
        # value i appears 20 - i times (0..19): 210 values, the 10 most common 20 + ... + 11
        values = np.repeat(np.arange(20), np.arange(20, 0, -1))
        assert outputcheck.summarise_values(values)["top_k_share"] == pytest.approx(155 / 210)

    def test_ten_values_or_fewer_cover_everything(self) -> None:
        assert outputcheck.summarise_values(np.arange(100) % 10)["top_k_share"] == 1.0

    def test_nans_are_left_out_of_the_share(self) -> None:
        values = np.concatenate([np.zeros(50), np.arange(1.0, 51.0), np.full(100, np.nan)])
        # 100 finite values: 0.0 fifty times and 1..50 once each; top 10 = 50 + 9
        stats = outputcheck.summarise_values(values)
        assert stats["top_k_share"] == pytest.approx(59 / 100)
        assert stats["null_ratio"] == 0.5

    def test_text_with_missing_fields_counts_the_present_ones(self, tmp_path: Path) -> None:
        path = tmp_path / "t.csv"
        words = ["a"] * 90 + [f"w{i}" for i in range(10)] + [""] * 10
        path.write_text("word,n\n" + "".join(f"{w},{i}\n" for i, w in enumerate(words)))
        stats = outputcheck.summarise_file(path, "csv")["column_stats"]["word"]
        assert stats["top_k_share"] == pytest.approx(99 / 100)  # a x90, then nine of w0..w9
        assert stats["top"] == "a" and stats["null_ratio"] == pytest.approx(10 / 110)

    def test_an_npy_file_gives_the_same_share_as_its_values(self, tmp_path: Path) -> None:
        values = np.repeat(np.arange(20), np.arange(20, 0, -1))
        np.save(tmp_path / "v.npy", values)
        stats = outputcheck.summarise_file(tmp_path / "v.npy", "npy")
        assert stats["top_k_share"] == pytest.approx(155 / 210)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(-30, 30), min_size=1, max_size=300))
    def test_it_equals_a_brute_force_count(self, values: list[int]) -> None:
        from collections import Counter

        top = sum(n for _, n in Counter(values).most_common(outputcheck.TOP_K))
        got = outputcheck.summarise_values(np.array(values, dtype=np.int64))["top_k_share"]
        assert got == pytest.approx(top / len(values))


quantiles = st.lists(st.floats(-100, 100), min_size=21, max_size=21).map(sorted)


class TestDrift:
    @given(quantiles)
    def test_a_distribution_has_no_drift_from_itself(self, q: list[float]) -> None:
        psi, ks = drift(q, q)
        assert psi < 1e-6 and ks == 0.0

    @given(quantiles, quantiles)
    def test_drift_is_finite_and_ks_is_a_distance(self, a: list[float], b: list[float]) -> None:
        psi, ks = drift(a, b)
        assert math.isfinite(psi) and psi >= 0
        assert 0.0 <= ks <= 1.0
        assert drift(b, a)[1] == pytest.approx(ks, abs=1e-6)

    def test_a_shift_by_two_standard_deviations_is_large(self) -> None:
        rng = np.random.default_rng(0)
        a = list(np.quantile(rng.normal(0, 1, 5000), np.linspace(0, 1, 21)))
        b = list(np.quantile(rng.normal(2, 1, 5000), np.linspace(0, 1, 21)))
        c = list(np.quantile(rng.normal(0, 1, 5000), np.linspace(0, 1, 21)))
        assert drift(a, b)[0] > 1.0 and drift(a, b)[1] > 0.6
        assert drift(a, c)[0] < 0.05


# --- the findings view --------------------------------------------------------------------------


FINDING = {"signal": "zero_variance", "severity": "warning", "message": "it is constant",
           "phase": "statistics", "source": "statistics"}

actions = st.lists(st.tuples(st.sampled_from(("start", "findings", "review", "outcome")),
                             st.integers(0, 9), st.integers(0, 3)), min_size=1, max_size=30)


def _act(project: Any, runs: RunService, ids: list[str], action: str, pick: int,
         n: int) -> None:
    if action == "start" or not ids:
        out = runs.run("ws", reason={"description": "a run to hang findings on",
                                     "hypothesis": "findings fold"},
                       results_spec=SPEC, actor=ACTOR, stages=["prep"])
        ids += [q["stage_run_id"] for q in out["queued"]]
        return
    run_id = ids[pick % len(ids)]
    if action == "findings":
        runs.record_findings(run_id, actor="worker", phase="statistics", source="statistics",
                             findings=[{**FINDING, "output": f"o{i}", "line": i + 1}
                                       for i in range(n)], omitted=n)
        return
    uow = project.service.uow
    run = uow.load(Run, run_id)
    meta = uow.stamp("reviewer", "a review for the findings view")
    if action == "review" and run.current.value == "requested":
        run.trigger(ReviewStarted(**meta.fields(), run_id=run_id, reviewers=["static"]))
        run.trigger(ReviewCompleted(**meta.fields(), run_id=run_id, decision="warn",
                                    reviewers=["static"], findings=[
                                        {**FINDING, "phase": "pre_run", "source": "static",
                                         "signal": "undefined_name", "file": "m.py",
                                         "line": 3}] * n))
    elif action == "outcome":
        run.trigger(OutcomeSuggested(**meta.fields(), run_id=run_id, outcome="success",
                                     evidence=[f"evidence {i}" for i in range(n)],
                                     reviewers=["post_run"]))
    if run.pending:
        uow.commit(run)


def _dump(views: Views) -> list[Any]:
    rows = views.conn.execute("SELECT * FROM findings ORDER BY position, idx").fetchall()
    return [tuple(r) for r in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_the_findings_view_folded_incrementally_equals_refolded(plan: list[Any]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="quipu-findings-property-"))
    project = make_project(tmp)
    try:
        project.service.init_project("demo", "find a better model", actor=ACTOR)
        project.create("ws")
        project.mount("ws")
        project.write("w1", "pipeline.yaml", PIPELINE)
        project.write("w1", "modules/prep.py", "print('prep')\n")
        project.write("w1", "modules/train.py", "print('train')\n")
        with Views(tmp / "live.db", project.store) as live:
            counter = itertools.count(1)
            runs = RunService(project.service, live, new_id=lambda: f"{next(counter):04d}")
            ids: list[str] = []
            expected = 0
            for step in plan:
                before = live.conn.execute("SELECT COUNT(*) FROM findings").fetchone()[0] \
                    if ids else 0
                _act(project, runs, ids, *step)
                live.catch_up()
                after = live.conn.execute("SELECT COUNT(*) FROM findings").fetchone()[0]
                expected += after - before
            incremental = _dump(live)
            assert all(row[3] == "ws" and row[4] == "prep" for row in incremental)
            with Views(tmp / "small.db", project.store, page_size=2) as small:
                small.catch_up()
                assert _dump(small) == incremental
            live.rebuild()
            assert _dump(live) == incremental
            for run_id in ids:
                counts = live.finding_counts(run_id)
                listed = live.run_findings(run_id, limit=1000)
                assert counts["total"] == len(listed)
                json.dumps(listed)
    finally:
        project.store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_same_findings_are_recorded_once(tmp_path: Path) -> None:
    """An executor that restarts and checks the outputs again writes nothing twice; other
    findings about the same run are still recorded."""
    project = make_project(tmp_path)
    project.service.init_project("demo", "find a better model", actor=ACTOR)
    project.create("ws")
    project.mount("ws")
    project.write("w1", "pipeline.yaml", PIPELINE)
    project.write("w1", "modules/prep.py", "print('prep')\n")
    project.write("w1", "modules/train.py", "print('train')\n")
    with Views(tmp_path / "views.db", project.store) as views:
        runs = RunService(project.service, views)
        out = runs.run("ws", reason={"description": "a run to hang findings on",
                                     "hypothesis": "findings are recorded once"},
                       results_spec=SPEC, actor=ACTOR, stages=["prep"])
        (run_id,) = [q["stage_run_id"] for q in out["queued"]]
        for _ in range(2):
            runs.record_findings(run_id, actor="worker", phase="contract", source="contract",
                                 findings=[{**FINDING, "phase": "contract"}])
        runs.record_findings(run_id, actor="worker", phase="statistics", source="statistics",
                             findings=[FINDING])
        assert project.types().count("FindingsRecorded") == 2
        views.catch_up()
        assert views.finding_counts(run_id) == {"error": 0, "warning": 2, "info": 0, "total": 2}
