"""Run queries through ``Quipu`` over a real project (SQLite log, local blobs, files on disk).

Runs are started and moved with ``RunService``, the commands the executor calls; the answers
come from the facade methods the MCP tools and the CLI use.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from toy_pipeline import FACTS_PIPELINE, FACTS_SPEC

from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.errors import InvalidInput, NotFound
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State

ACTOR = "agent-1"
WORKER = "worker-1"
REASON = "exercise the run queries in a test"
PIPELINE, SPEC = FACTS_PIPELINE, FACTS_SPEC
NO_VALUE = {"ml_outcome": "success", "notes": "features were written as expected"}


def results(value: float) -> dict[str, Any]:
    return {"primary_metric": "val_acc", "direction": "maximize", "value": value,
            "dataset_split": "val", "ml_outcome": "partial",
            "notes": f"reached {value} on the validation split"}


class Lab:
    def __init__(self, q: Quipu) -> None:
        self.q = q
        counter = itertools.count(1)
        self.runs = RunService(q.service, q.views, new_id=lambda: f"{next(counter):04d}")

    def start(self, stages: list[str] | None = None) -> dict[str, str]:
        out = self.runs.run("ws", reason={"description": "see whether wider layers help",
                                          "hypothesis": "wider layers help"},
                            results_spec=SPEC, actor=ACTOR, stages=stages)
        return {x["stage"]: x["stage_run_id"] for x in out["queued"]}

    def launch(self, run_id: str) -> Path:
        run_dir = self.q.root / ".quipu" / "runs" / run_id
        (run_dir / ".quipu").mkdir(parents=True)
        assert self.runs.record_claim(run_id, WORKER)
        self.runs.record_launch(run_id, worker=WORKER, host="host-a", pid=1, run_dir=str(run_dir),
                                inputs={})
        return run_dir

    def exit(self, run_id: str, *, logs: bytes | None = None,
             state: State = State.SUCCEEDED) -> None:
        log = {"sha256": self.q.blobs.put_bytes(logs), "size": len(logs),
               "truncated": False} if logs is not None else None
        self.runs.record_exit(run_id, worker=WORKER, state=state, exit_code=0, logs=log,
                              outputs={"features": {"sha256": "a" * 64, "size": 3},
                                       "model": {"sha256": "b" * 64, "size": 3}})

    def metrics(self, run_id: str, points: list[tuple[str, int, float]]) -> None:
        table = pa.table({"name": [p[0] for p in points], "step": [p[1] for p in points],
                          "value": [p[2] for p in points],
                          "ts": [float(i) for i in range(len(points))]})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        series = self.q.blobs.put_bytes(sink.getvalue())
        last: dict[str, dict[str, Any]] = {}
        for name, step, value in points:
            s = last.setdefault(name, {"min": value, "max": value, "count": 0})
            s.update(min=min(s["min"], value), max=max(s["max"], value), last=value,
                     count=s["count"] + 1, last_step=step, trend="up")
        self.runs.record_metrics(run_id, actor="ingester", series=series, points=len(points),
                                 summaries=last, complete=True)

    def cycle(self, value: float) -> dict[str, str]:
        ids = self.start()
        self.launch(ids["prep"])
        self.exit(ids["prep"])
        self.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR)
        self.launch(ids["train"])
        self.metrics(ids["train"], [("val_acc", 1, value - 0.1), ("val_acc", 2, value)])
        self.exit(ids["train"])
        self.runs.finalize(ids["train"], results(value), actor=ACTOR)
        self.q.refresh()
        return ids


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    q = init_project(tmp_path / "proj", name="demo", goal="beat the baseline", actor=ACTOR)
    q.create_workspace("ws", "a digits classifier", REASON)
    q.mount("ws", "w1", REASON)
    slot = q.root / "workspaces" / "w1"
    (slot / "modules").mkdir()
    (slot / "pipeline.yaml").write_text(PIPELINE)
    (slot / "modules" / "prep.py").write_text("print('prep')\n")
    (slot / "modules" / "train.py").write_text("print('train')\n")
    yield Lab(q)
    q.close()


def serialisable(answer: dict[str, Any]) -> dict[str, Any]:
    assert json.loads(json.dumps(answer)) == answer
    return answer


class TestRecords:
    def test_history_pages_and_accepts_a_slot_for_its_workspace(self, lab):
        for value in (0.82, 0.85):
            lab.cycle(value)

        page = serialisable(lab.q.list_history("w1", limit=3))
        rest = lab.q.list_history("ws", limit=3, offset=3)

        assert page["workspace"] == "ws" and page["total"] == 4 and page["has_more"] is True
        assert rest["has_more"] is False and len(rest["records"]) == 1
        best = lab.q.list_history("ws", sort_by="metric", finalized_only=True)["records"][0]
        assert best["value"] == 0.85 and best["results_status"] == "finalized"

    def test_history_sorted_by_metric_leaves_out_runs_without_a_value(self, lab):
        """Regression: the prep stages, which never log the metric, filled the ranking."""
        for value in (0.82, 0.85):
            lab.cycle(value)

        ranked = serialisable(lab.q.list_history("ws", sort_by="metric"))

        assert [r["value"] for r in ranked["records"]] == [0.85, 0.82]
        assert {r["stage"] for r in ranked["records"]} == {"train"}
        assert ranked["total"] == 2 and ranked["without_value"] == 2
        assert ranked["has_more"] is False
        assert "without_value" not in lab.q.list_history("ws")

    def test_history_of_an_unknown_workspace_is_refused(self, lab):
        with pytest.raises(NotFound, match="does not exist"):
            lab.q.list_history("nope")

    def test_a_record_is_found_by_id_and_by_tag(self, lab):
        ids = lab.cycle(0.85)
        lab.runs.tag(ids["train"], "best", "mark this run for the comparison", actor=ACTOR)

        by_id = serialisable(lab.q.inspect_record(ids["train"]))
        by_tag = lab.q.inspect_record("@best", workspace="ws")

        assert by_id == by_tag
        assert by_id["tags"] == ["best"] and by_id["results"]["value"] == 0.85
        assert by_id["comparison"]["meets_min"] is True
        with pytest.raises(InvalidInput, match="tags are per workspace"):
            lab.q.inspect_record("@best")
        with pytest.raises(NotFound):
            lab.q.inspect_record("@nope", workspace="ws")
        with pytest.raises(NotFound):
            lab.q.inspect_record("stage-unknown")

    def test_unfinalized_runs_come_with_the_call_to_make(self, lab):
        ids = lab.start(["prep"])
        lab.launch(ids["prep"])
        lab.exit(ids["prep"])

        answer = serialisable(lab.q.list_unfinalized_runs("ws"))

        assert answer["count"] == 1 and "cannot start a run" in answer["gate_rule"]
        call = answer["runs"][0]["finalize_call"]
        assert call.startswith(f'finalize_run("{ids["prep"]}"')

    def test_experiment_context(self, lab):
        first = lab.cycle(0.88)
        lab.cycle(0.84)

        context = serialisable(lab.q.get_experiment_context("ws"))

        assert context["current_best"]["run_id"] == first["train"]
        assert [t["value"] for t in context["recent_trend"]] == [0.88, 0.84]
        assert context["awaiting_finalization"] == []


class TestInspectRun:
    def test_a_running_run_shows_progress_and_the_live_log(self, lab):
        ids = lab.start(["prep"])
        run_dir = lab.launch(ids["prep"])
        (run_dir / ".quipu" / "stdout.log").write_text("".join(f"line {i}\n" for i in range(30)))

        run = serialisable(lab.q.inspect_run(ids["prep"], log_lines=3))

        assert run["state"] == "running" and run["dashboard"]["progress"]["stage"] == "prep"
        assert run["dashboard"]["progress"]["elapsed_seconds"] is not None
        assert run["dashboard"]["log_tail"] == {"source": "live", "truncated": False,
                                                "lines": ["line 27", "line 28", "line 29"]}
        assert run["provenance"]["version"] == "v1" and "metrics" in run

    def test_an_ended_run_reads_its_log_from_the_blob_store(self, lab):
        ids = lab.start(["prep"])
        lab.launch(ids["prep"])
        lab.exit(ids["prep"], logs=b"started\nfinished\n")

        run = lab.q.inspect_run(ids["prep"], include=["events"])

        assert run["dashboard"]["log_tail"]["source"] == "blob"
        assert run["dashboard"]["log_tail"]["lines"] == ["started", "finished"]
        assert [e["type"] for e in run["events"]] == ["RunRequested", "RunQueued", "RunClaimed",
                                                       "RunLaunched", "RunExited"]
        assert "provenance" not in run

    def test_provenance_lists_downstream_runs(self, lab):
        ids = lab.cycle(0.85)

        prov = lab.q.inspect_run(ids["prep"], include=["provenance"])["provenance"]

        assert [d["run_id"] for d in prov["downstream"]] == [ids["train"]]
        assert prov["outputs"]["features"]["sha256"] == "a" * 64

    def test_an_unknown_section_is_refused(self, lab):
        ids = lab.start(["prep"])
        with pytest.raises(InvalidInput, match="unknown include"):
            lab.q.inspect_run(ids["prep"], include=["bogus"])

    def test_metric_history_reads_the_parquet_series(self, lab):
        ids = lab.start(["prep"])
        lab.launch(ids["prep"])
        lab.metrics(ids["prep"], [("loss", 0, 1.0), ("val_acc", 0, 0.5), ("loss", 1, 0.7)])

        history = serialisable(lab.q.get_metric_history(ids["prep"], "loss"))

        assert [(p["step"], p["value"]) for p in history["points"]] == [(0, 1.0), (1, 0.7)]
        assert history["count"] == 2 and history["downsampled"] is False
        with pytest.raises(NotFound, match="did you mean 'loss'") as refused:
            lab.q.get_metric_history(ids["prep"], "los")
        assert refused.value.code == "unknown_metric"

    def test_a_long_curve_is_thinned_by_default_and_paged_raw_on_request(self, lab):
        """Regression: 200 points answered with ~13 K characters, every point spelled out."""
        ids = lab.start(["prep"])
        lab.launch(ids["prep"])
        curve = [1.0 / (1 + step) + 0.01 * (step % 5) for step in range(200)]
        curve[150] = -3.0  # a dip that thinning must not smooth away
        lab.metrics(ids["prep"], [("loss", step, v) for step, v in enumerate(curve)])

        thinned = serialisable(lab.q.get_metric_history(ids["prep"], "loss"))
        size = len(json.dumps(thinned))

        assert thinned["downsampled"] is True and thinned["count"] == 200
        assert len(thinned["points"]) <= 50
        steps = [p["step"] for p in thinned["points"]]
        assert steps[0] == 0 and steps[-1] == 199 and 150 in steps
        assert max(p["value"] for p in thinned["points"]) == max(curve)
        assert size < 4_000, size
        pages, offset = [], 0
        while offset is not None:
            page = lab.q.get_metric_history(ids["prep"], "loss", offset=offset, limit=64)
            pages += page["points"]
            offset = page["next_offset"]
        assert [p["value"] for p in pages] == curve
        whole = json.dumps(lab.q.get_metric_history(ids["prep"], "loss", limit=200))
        assert len(whole) > 3 * size  # what every call used to cost


class TestDashboard:
    def test_reading_twice_shows_the_same(self, lab):
        lab.cycle(0.85)
        assert serialisable(lab.q.dashboard()) == lab.q.dashboard()

    def test_after_mark_seen_nothing_is_new_and_a_later_event_is(self, lab):
        ids = lab.cycle(0.85)
        first = lab.q.dashboard("me")
        assert first["new_since_last_look"]["finalized"]["count"] == 2

        lab.q.mark_seen("me", first["cursor_position"])
        seen = lab.q.dashboard("me")
        assert all(seen["new_since_last_look"][k]["count"] == 0
                   for k in ("started", "ended", "finalized"))
        assert lab.q.dashboard("someone-else")["new_since_last_look"]["finalized"]["count"] == 2

        later = lab.start(["train"])
        news = lab.q.dashboard("me")["new_since_last_look"]
        assert [r["run_id"] for r in news["started"]["runs"]] == [later["train"]]
        assert news["finalized"]["count"] == 0
        assert ids["train"] != later["train"]

    def test_the_dashboard_shows_active_pending_outcomes_failures_and_bests(self, lab):
        done = lab.cycle(0.85)
        ids = lab.start()
        lab.launch(ids["prep"])
        lab.exit(ids["prep"], state=State.CRASHED)

        board = lab.q.dashboard()

        assert board["active"]["count"] == 0  # train was canceled with its upstream
        assert board["pending_finalization"]["by_workspace"]["ws"]["example"] == ids["prep"]
        assert board["recent_outcomes"][0]["run_id"] == done["train"]
        assert board["recent_outcomes"][0]["goal_value"] == 0.9
        assert [f["run_id"] for f in board["failed_recent"]] == [ids["prep"]]
        assert board["best_by_workspace"]["ws"]["run_id"] == done["train"]

    def test_the_cursor_survives_reopening_because_it_is_an_event(self, lab):
        lab.cycle(0.85)
        position = lab.q.dashboard("me")["cursor_position"]
        lab.q.mark_seen("me", position)
        root = lab.q.root

        with open_project(root, actor=ACTOR) as again:
            assert again.dashboard("me")["new_since_last_look"]["cursor"] == position

    def test_a_position_past_the_log_is_refused(self, lab):
        with pytest.raises(InvalidInput, match="not in the log"):
            lab.q.mark_seen("me", 10_000)
        with pytest.raises(InvalidInput):
            lab.q.mark_seen("bad/name", 0)
