"""The runs view, folded from a memory log that the real run commands write.

Runs are started with ``RunService.run`` and moved with the commands executors call
(``record_claim``, ``record_launch``, ``record_metrics``, ``record_exit``, ``record_lost``...);
the view is then asked what an agent would ask.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from toy_pipeline import FACTS_PIPELINE, FACTS_SPEC

from quipu.core.errors import Conflict
from quipu.core.ports import RunIndex
from quipu.core.runs.handlers import RunService
from quipu.core.runs.lifecycle import State
from quipu.projections import Views, dashboard_view, state_md

ACTOR = "agent-1"
WORKER = "worker-1"

PIPELINE, SPEC = FACTS_PIPELINE, FACTS_SPEC


def results(value: float, outcome: str = "partial") -> dict[str, Any]:
    return {"primary_metric": "val_acc", "direction": "maximize", "value": value,
            "dataset_split": "val", "ml_outcome": outcome,
            "notes": f"reached {value} on the validation split"}


NO_VALUE = {"ml_outcome": "success", "notes": "features were written as expected"}


@dataclass
class Lab:
    """A project with one mounted workspace whose pipeline is prep -> train."""

    project: Any
    views: Views
    runs: RunService

    def start(self, *, stages: list[str] | None = None, hypothesis: str = "wider layers help",
              group: str | None = None, **kwargs: Any) -> dict[str, str]:
        out = self.runs.run("ws", reason={"description": f"try it: {hypothesis}",
                                          "hypothesis": hypothesis},
                            results_spec=SPEC, actor=ACTOR, stages=stages,
                            experiment_group=group, **kwargs)
        return {q["stage"]: q["stage_run_id"] for q in out["queued"]}

    def launch(self, run_id: str) -> None:
        assert self.runs.record_claim(run_id, WORKER)
        self.runs.record_launch(run_id, worker=WORKER, host="host-a", pid=4242,
                                run_dir=f"/runs/{run_id}",
                                inputs={"features": {"sha256": "f" * 64, "size": 10}})

    def execute(self, run_id: str, *, state: State = State.SUCCEEDED,
                metrics: dict[str, float] | None = None,
                outputs: tuple[str, ...] = ("features", "model")) -> None:
        self.launch(run_id)
        if metrics:
            self.metrics(run_id, metrics)
        self.runs.record_exit(run_id, worker=WORKER, state=state,
                              exit_code=0 if state is State.SUCCEEDED else 1,
                              outputs={o: {"sha256": "a" * 64, "size": 3} for o in outputs}
                              if state is State.SUCCEEDED else {})

    def metrics(self, run_id: str, last: dict[str, float], points: int = 3) -> None:
        self.runs.record_metrics(
            run_id, actor="ingester", series=None, points=points, complete=False,
            summaries={n: {"min": v - 0.1, "max": v, "last": v, "count": points,
                           "trend": "up", "last_step": points - 1} for n, v in last.items()})

    def cycle(self, value: float, *, outcome: str = "partial", **kwargs: Any) -> dict[str, str]:
        """One full pipeline run, both stages finalized; returns the run ids."""
        ids = self.start(**kwargs)
        if "prep" in ids:
            self.execute(ids["prep"])
            self.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR)
        self.execute(ids["train"], metrics={"val_acc": value})
        self.runs.finalize(ids["train"], results(value, outcome), actor=ACTOR)
        return ids

    def fresh(self) -> Views:
        self.views.catch_up()
        return self.views


@pytest.fixture
def lab(project, tmp_path: Path) -> Iterator[Lab]:
    project.service.init_project("demo", "find a better model", actor=ACTOR)
    project.create("ws")
    project.mount("ws")
    project.write("w1", "pipeline.yaml", PIPELINE)
    project.write("w1", "modules/prep.py", "print('prep')\n")
    project.write("w1", "modules/train.py", "print('train')\n")
    views = Views(tmp_path / "views.db", project.store)
    counter = itertools.count(1)
    service = RunService(project.service, views, new_id=lambda: f"{next(counter):04d}")
    yield Lab(project, views, service)
    views.close()


def test_views_serve_the_run_index_port(lab):
    index: RunIndex = lab.views  # the protocol RunService is built on
    assert index.latest_output("ws", "prep", "features") is None


# --- folding the lifecycle ---------------------------------------------------------------------


class TestLifecycle:
    def test_a_started_pipeline_shows_every_stage_queued_with_its_hypothesis(self, lab):
        ids = lab.start(group="widths")

        records, total = lab.fresh().history("ws")

        assert total == 2
        assert [r["stage"] for r in records] == ["train", "prep"]  # newest first
        prep = records[1]
        assert prep["record_id"] == ids["prep"] and prep["state"] == "queued"
        assert prep["hypothesis"] == "wider layers help" and prep["version"] == "v1"
        assert prep["experiment_group"] == "widths" and prep["infra_outcome"] is None
        assert prep["results_status"] == "missing"
        rows = lab.views.conn.execute("SELECT pipeline_run_id, runs FROM pipeline_runs").fetchall()
        assert rows == [(prep["pipeline_run_id"],
                         f'{{"prep":"{ids["prep"]}","train":"{ids["train"]}"}}')]

    def test_a_running_run_shows_its_worker_run_dir_and_last_heartbeat(self, lab):
        ids = lab.start()
        lab.launch(ids["prep"])
        lab.runs.record_heartbeat(ids["prep"], worker=WORKER, message="epoch 3")

        execution = lab.fresh().run_execution(ids["prep"])

        assert execution is not None
        assert execution["state"] == "running" and execution["worker"] == WORKER
        assert execution["run_dir"] == f"/runs/{ids['prep']}" and execution["pid"] == 4242
        assert execution["last_seen_at"] == "2024-05-01T12:00:00Z"
        assert execution["heartbeat_message"] == "epoch 3" and execution["ended_at"] is None

    def test_provenance_keeps_inputs_as_requested_and_as_launched(self, lab):
        ids = lab.start()
        lab.execute(ids["prep"])
        lab.launch(ids["train"])

        prov = lab.fresh().run_provenance(ids["train"])
        upstream = lab.views.run_provenance(ids["prep"])

        assert prov is not None and upstream is not None
        assert prov["inputs"]["features"]["requested"]["run_id"] == ids["prep"]
        assert prov["inputs"]["features"]["launched"] == {"sha256": "f" * 64, "size": 10}
        assert prov["version"] == "v1" and prov["depends_on"] == [ids["prep"]]
        assert upstream["outputs"]["features"]["sha256"] == "a" * 64
        assert [d["run_id"] for d in upstream["downstream"]] == [ids["train"]]

    def test_an_ended_run_holds_the_gate_until_it_is_finalized(self, lab):
        ids = lab.start(stages=["prep"])
        lab.execute(ids["prep"])

        waiting = lab.fresh().unfinalized_runs("ws")
        assert [w["run_id"] for w in waiting] == [ids["prep"]]
        assert waiting[0]["infra_outcome"] == "succeeded"
        assert waiting[0]["finalize_call"].startswith(f'finalize_run("{ids["prep"]}", {{')

        lab.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR)
        record = lab.fresh().run_record(ids["prep"])

        assert lab.views.unfinalized_runs("ws") == []
        assert record is not None and record["state"] == "finalized"
        assert record["infra_outcome"] == "succeeded"  # kept after finalization
        assert record["ml_outcome"] == "success" and record["in_gate"] is False

    def test_a_run_that_logged_its_metric_is_offered_a_full_results_call(self, lab):
        ids = lab.start()
        lab.execute(ids["prep"])
        lab.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR)
        lab.execute(ids["train"], metrics={"val_acc": 0.85, "loss": 0.3})

        (waiting,) = lab.fresh().unfinalized_runs("ws")

        assert waiting["results_auto"]["value"] == 0.85
        assert waiting["finalize_args"]["value"] == 0.85
        assert waiting["finalize_args"]["ml_outcome"] == "partial"  # between min and goal
        assert set(waiting["finalize_args"]) == {"primary_metric", "direction", "value",
                                                 "dataset_split", "ml_outcome", "notes"}

    def test_a_failed_run_cancels_its_downstream_and_only_the_failed_one_holds_the_gate(self,
                                                                                        lab):
        ids = lab.start()
        lab.execute(ids["prep"], state=State.FAILED)

        views = lab.fresh()
        prep, train = views.run_record(ids["prep"]), views.run_record(ids["train"])

        assert prep is not None and train is not None
        assert (prep["state"], prep["infra_outcome"]) == ("failed", "failed")
        assert (train["state"], train["infra_outcome"]) == ("canceled", "canceled")
        assert [w["run_id"] for w in views.unfinalized_runs("ws")] == [ids["prep"]]
        assert views.unfinalized_runs("ws")[0]["finalize_args"]["ml_outcome"] == "miss"

    def test_a_lost_run_that_is_adopted_is_running_again_and_releases_the_gate(self, lab):
        ids = lab.start(stages=["prep"])
        lab.launch(ids["prep"])
        lab.runs.record_lost(ids["prep"], actor="supervisor", why="no heartbeat for 10 min")

        lost = lab.fresh().run_record(ids["prep"])
        assert lost is not None and lost["infra_outcome"] == "lost"
        assert lost["error"] == "no heartbeat for 10 min" and lost["in_gate"]

        lab.runs.record_adopted(ids["prep"], worker=WORKER, pid=4242)
        back = lab.fresh().run_record(ids["prep"])

        assert back is not None and back["state"] == "running"
        assert back["infra_outcome"] is None and back["ended_at"] is None
        assert lab.views.unfinalized_runs("ws") == []

    def test_metric_summaries_are_replaced_by_the_latest_ingestion(self, lab):
        ids = lab.start(stages=["prep"])
        lab.launch(ids["prep"])
        lab.metrics(ids["prep"], {"val_acc": 0.5, "loss": 1.0})
        lab.metrics(ids["prep"], {"val_acc": 0.7}, points=6)

        record = lab.fresh().run_record(ids["prep"])

        assert record is not None
        assert record["metrics"] == {"val_acc": {"min": pytest.approx(0.6), "max": 0.7,
                                                 "last": 0.7, "count": 6, "trend": "up",
                                                 "last_step": 5}}
        assert record["value"] == 0.7 and record["results_status"] == "auto"
        assert record["results_auto"]["value"] == 0.7


# --- the RunIndex port ---------------------------------------------------------------------------


class TestRunIndex:
    def test_a_stage_run_alone_reads_the_newest_good_output_of_its_upstream(self, lab):
        first = lab.cycle(0.82)
        second = lab.cycle(0.84)

        ids = lab.start(stages=["train"])  # resolves prep's output through the views

        prov = lab.fresh().run_provenance(ids["train"])
        assert prov is not None
        assert prov["inputs"]["features"]["requested"]["run_id"] == second["prep"]
        assert lab.views.latest_output("ws", "prep", "features") == second["prep"] != first["prep"]

    def test_bad_runs_are_skipped_when_resolving_inputs(self, lab):
        first = lab.cycle(0.82)
        second = lab.cycle(0.84)
        lab.runs.tag(second["prep"], "bad-results", "mark this run for the comparison", actor=ACTOR)

        assert lab.views.latest_output("ws", "prep", "features") == first["prep"]

    def test_a_miss_tagged_bad_is_skipped_but_a_miss_alone_is_not(self, lab):
        ids = lab.start(stages=["prep"])
        lab.execute(ids["prep"])
        lab.runs.finalize(ids["prep"], {"ml_outcome": "miss", "notes": "features look wrong"},
                          actor=ACTOR)
        assert lab.views.latest_output("ws", "prep", "features") == ids["prep"]

        lab.runs.tag(ids["prep"], "bad", "mark this run for the comparison", actor=ACTOR)
        assert lab.views.latest_output("ws", "prep", "features") is None

    def test_failed_runs_and_missing_signals_are_never_reused(self, lab):
        ids = lab.start(stages=["prep"])
        lab.execute(ids["prep"], state=State.FAILED)

        assert lab.views.latest_output("ws", "prep", "features") is None
        assert lab.views.latest_output("ws", "prep", "nothing") is None

    def test_finalize_compares_with_the_previous_and_the_tagged_best(self, lab):
        first = lab.cycle(0.85)
        lab.runs.tag(first["train"], "best-so-far", "mark this run for the comparison", actor=ACTOR)
        lab.cycle(0.86)
        third = lab.start(stages=["train"])
        lab.execute(third["train"], metrics={"val_acc": 0.80})

        out = lab.runs.finalize(third["train"], results(0.80, "miss"), actor=ACTOR)

        assert out["comparison"]["vs_previous"]["value"] == 0.86
        assert out["comparison"]["vs_best"]["run_id"] == first["train"]
        assert out["comparison"]["regression_alert"] is True
        assert lab.views.best("ws", "train", "val_acc", "x", direction="maximize") == (
            first["train"], 0.85)
        assert lab.views.previous_finalized("ws", "train", "val_acc", third["train"])[1] == 0.86


# --- history and context ------------------------------------------------------------------------


class TestHistory:
    def test_filters_sorting_and_paging(self, lab):
        a = lab.cycle(0.81, group="g1")
        b = lab.cycle(0.88, group="g2")
        c = lab.cycle(0.84, group="g2")
        lab.runs.tag(b["train"], "keeper", "mark this run for the comparison", actor=ACTOR)
        views = lab.fresh()

        def ids(**kw: Any) -> list[str]:
            return [r["run_id"] for r in views.history("ws", **kw)[0]]

        assert ids(stage="train") == [c["train"], b["train"], a["train"]]
        assert ids(stage="train", desc=False) == [a["train"], b["train"], c["train"]]
        assert ids(sort_by="metric", stage="train") == [b["train"], c["train"], a["train"]]
        assert ids(metric="val_acc", min_value=0.84) == [c["train"], b["train"]]
        assert ids(tagged="keeper") == [b["train"]]
        assert ids(experiment_group="g1") == [a["train"], a["prep"]]
        page, total = views.history("ws", limit=2, offset=2)
        assert total == 6 and len(page) == 2
        assert views.history("ws", tagged="keeper")[0][0]["tags"] == ["keeper"]

    def test_finalized_only_and_the_results_status(self, lab):
        lab.cycle(0.85)
        ids = lab.start(stages=["train"])
        lab.launch(ids["train"])
        lab.metrics(ids["train"], {"val_acc": 0.83})
        views = lab.fresh()

        statuses = {r["stage"] + ":" + r["state"]: r["results_status"]
                    for r in views.history("ws")[0]}
        assert statuses == {"train:running": "auto", "train:finalized": "finalized",
                            "prep:finalized": "finalized"}
        assert len(views.history("ws", finalized_only=True)[0]) == 2

    def test_a_tag_finds_its_run(self, lab):
        ids = lab.cycle(0.85)
        lab.runs.tag(ids["train"], "best", "mark this run for the comparison", actor=ACTOR)

        assert lab.fresh().tagged_run("ws", "best") == ids["train"]
        assert lab.views.tagged_run("ws", "nope") is None

    def test_experiment_context_reports_best_trend_and_alerts(self, lab):
        runs = [lab.cycle(v)["train"] for v in (0.82, 0.88, 0.85)]
        pending = lab.start(stages=["train"])
        lab.execute(pending["train"], metrics={"val_acc": 0.9})

        context = lab.fresh().experiment_context("ws")

        assert context["current_best"]["run_id"] == runs[1]
        assert context["current_best"]["chosen_by"] == "best value"
        assert [t["value"] for t in context["recent_trend"]] == [0.82, 0.88, 0.85]
        # Nothing is tagged best: 0.85 is compared with the best finalized so far, 0.88.
        assert [(a["run_id"], a["best_run"]) for a in context["regression_alerts"]] == [
            (runs[2], runs[1])]
        assert [w["run_id"] for w in context["awaiting_finalization"]] == [pending["train"]]

        lab.runs.tag(runs[0], "best", "mark this run for the comparison", actor=ACTOR)
        assert lab.fresh().experiment_context("ws")["current_best"]["run_id"] == runs[0]

    def test_an_unknown_sort_is_refused(self, lab):
        with pytest.raises(Exception, match="cannot sort by"):
            lab.fresh().history("ws", sort_by="speed")


# --- rebuilds, STATE.md ------------------------------------------------------------------------


def dump(views: Views) -> dict[str, list[tuple[Any, ...]]]:
    conn = views.conn
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


def test_incremental_equals_rebuilt_equals_small_pages(lab, tmp_path):
    """Folding after every command, all at once, and 3 events per page give the same rows."""
    first = lab.cycle(0.82)
    lab.runs.tag(first["train"], "best", "mark this run for the comparison", actor=ACTOR)
    lab.fresh()
    ids = lab.start()
    lab.fresh()
    lab.execute(ids["prep"], state=State.CRASHED)
    lab.fresh()
    lab.runs.finalize(ids["prep"], {"ml_outcome": "miss", "notes": "the process ran out of "
                                    "memory"}, actor=ACTOR)
    ids = lab.start(stages=["prep"])
    lab.launch(ids["prep"])
    lab.runs.record_lost(ids["prep"], actor="supervisor", why="silent")
    lab.fresh()
    lab.runs.record_adopted(ids["prep"], worker=WORKER, pid=1)
    lab.metrics(ids["prep"], {"val_acc": 0.4})
    incremental = dump(lab.fresh())
    text = lab.views.state_md(lambda s, m: False)

    with Views(tmp_path / "small.db", lab.project.store, page_size=3) as small:
        small.catch_up()
        assert dump(small) == incremental
    lab.views.rebuild()
    assert dump(lab.views) == incremental
    assert lab.views.state_md(lambda s, m: False) == text


def test_state_md_lists_active_awaiting_outcomes_and_best(lab):
    done = lab.cycle(0.87, hypothesis="dropout reduces overfitting")
    lab.runs.tag(done["train"], "best", "mark this run for the comparison", actor=ACTOR)
    ids = lab.start(hypothesis="a larger batch trains faster")
    lab.execute(ids["prep"])

    text = lab.fresh().state_md(lambda s, m: False)

    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[2:6] == ["## Active runs", "## Awaiting finalization", "## Recent outcomes",
                             "## Best results"]
    assert f"- {ids['train']} ws/train: queued since 2024-05-01 12:00 — a larger batch" in text
    assert f'`finalize_run("{ids["prep"]}", {{"ml_outcome": "unknown"' in text
    assert (f"{done['train']} ws/train: dropout reduces overfitting → partial, val_acc 0.87 "
            "(goal ≥ 0.9, min ≥ 0.8)") in text
    assert f"- ws: {done['train']} (train) val_acc 0.87 [tagged best]" in text


def test_state_md_has_no_run_sections_before_the_first_run(lab):
    assert "## Active runs" not in lab.fresh().state_md(lambda s, m: False)


def test_finalizing_twice_is_refused_and_changes_no_view(lab):
    ids = lab.cycle(0.85)
    before = dump(lab.fresh())
    with pytest.raises(Conflict):
        lab.runs.finalize(ids["train"], results(0.85), actor=ACTOR)
    assert dump(lab.fresh()) == before


# --- reading what STATE.md and the dashboard show costs the same at any length of history -------

_HISTORY_TABLES = {"runs", "valued_runs", "run_tags", "metric_summaries", "run_links",
                   "pipeline_runs", "run_marks", "run_unended"}
"""Tables that grow with every run ever made. (``active_runs``, ``troubled_runs``'s newest end,
``best_runs`` and ``unfinalized`` hold what is current: runs in flight, one row per workspace,
the gate.)"""


def _plans(views: Views, calls: list[Any]) -> list[tuple[str, list[str]]]:
    """(statement, query plan lines) of every SELECT the calls made."""
    statements: list[str] = []
    views.conn.set_trace_callback(statements.append)
    try:
        for call in calls:
            call()
    finally:
        views.conn.set_trace_callback(None)
    out = []
    for sql in dict.fromkeys(s for s in statements if s.lstrip().upper().startswith("SELECT")):
        plan = views.conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        out.append((sql, [str(row[3]) for row in plan]))
    return out


def _aliases(sql: str) -> dict[str, str]:
    found = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", sql, re.IGNORECASE)
    keywords = {"where", "join", "on", "order", "group", "limit", "left", "inner", "using"}
    return {(alias if alias and alias.lower() not in keywords else table): table
            for table, alias in found}


def test_board_and_state_md_queries_never_scan_or_sort_the_history(lab):
    """Every query behind the dashboard, STATE.md, the experiment context, the best lookups and
    the fold's upkeep of the best is an index lookup, or an index read in order and stopped at
    a LIMIT: no query visits every run, and none sorts (a temp B-tree) what it found."""
    first = lab.cycle(0.82)
    lab.runs.tag(first["train"], "best", "mark this run for the comparison", actor=ACTOR)
    lab.cycle(0.85)
    ids = lab.start()
    lab.execute(ids["prep"], state=State.CRASHED)
    lab.fresh()
    calls = [lab.views.dashboard, lambda: lab.views.state_md(lambda s, m: False),
             lambda: lab.views.experiment_context("ws"),
             lambda: lab.views.best("ws", "train", "val_acc", "", direction="maximize"),
             lambda: lab.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR), lab.views.catch_up,
             lambda: lab.views.history("ws", limit=5)]
    checked = 0
    for sql, plan in _plans(lab.views, calls):
        aliases = _aliases(sql)
        if not set(aliases.values()) & (_HISTORY_TABLES | {"active_runs", "troubled_runs",
                                                            "best_runs", "unfinalized"}):
            continue  # workspaces, thoughts, audit: not this view's tables
        checked += 1
        assert not [line for line in plan if "TEMP B-TREE" in line], (sql, plan)
        for line in plan:
            words = line.split()
            if words[0] != "SCAN" or aliases.get(words[1], words[1]) not in _HISTORY_TABLES:
                continue
            assert "USING" in line and "LIMIT" in sql.upper(), (sql, plan)
    assert checked >= 15


def test_an_unfiltered_history_total_is_the_kept_count_and_matches_a_filtered_one(lab):
    """The total of a workspace's unfiltered history comes from the count the fold keeps; it
    equals what counting the rows gives, incrementally and after a rebuild."""
    lab.cycle(0.82)
    lab.cycle(0.85)
    ids = lab.start()
    lab.execute(ids["prep"], state=State.CRASHED)
    views = lab.fresh()
    counted = views.conn.execute("SELECT COUNT(*) FROM runs WHERE workspace = 'ws'").fetchone()[0]
    assert counted == 6  # three pipeline runs of two stages
    _, total = views.history("ws", limit=1)
    _, filtered = views.history("ws", limit=1, experiment_group=None, stage=None,
                                finalized_only=False)
    assert total == filtered == counted
    _, nothing = views.history("no-such-workspace", limit=1)
    assert nothing == 0
    views.rebuild()
    assert views.history("ws", limit=1)[1] == counted


def test_state_md_mark_moves_only_for_what_state_md_shows_of_runs(lab):
    """A heartbeat in the minute already shown as "last seen", or metrics of a run in flight
    (whose value STATE.md does not show), leave the mark; a new minute, an exit, or metrics of
    a run that ended (its finalize call shows them) move it."""
    clock = lab.project.service.clock
    ids = lab.start(stages=["prep"])
    lab.launch(ids["prep"])

    def mark() -> int:
        return state_md.mark(lab.fresh().conn)[1]

    launched = mark()
    lab.runs.record_heartbeat(ids["prep"], worker=WORKER, message="step 1")
    lab.metrics(ids["prep"], {"val_acc": 0.5})
    assert mark() == launched

    clock.at += timedelta(minutes=1)
    lab.runs.record_heartbeat(ids["prep"], worker=WORKER, message="step 2")
    beat = mark()
    assert beat > launched
    lab.runs.record_exit(ids["prep"], worker=WORKER, state=State.SUCCEEDED, exit_code=0,
                         outputs={"features": {"sha256": "a" * 64, "size": 3}})
    ended = mark()
    assert ended > beat
    lab.metrics(ids["prep"], {"val_acc": 0.6}, points=4)
    assert mark() > ended


def test_new_since_counts_an_end_an_adoption_took_back_once(lab):
    """A run lost, adopted and ended again counts as ended once, at its last end, for a cursor
    before, between and after its ends."""
    ids = lab.start(stages=["prep"])
    lab.launch(ids["prep"])
    lost = lab.project.store.head() + 1
    lab.runs.record_lost(ids["prep"], actor="supervisor", why="silent")
    lab.runs.record_adopted(ids["prep"], worker=WORKER, pid=1)
    lab.runs.record_exit(ids["prep"], worker=WORKER, state=State.SUCCEEDED, exit_code=0,
                         outputs={"features": {"sha256": "a" * 64, "size": 3}})
    conn = lab.fresh().conn
    (ended,) = conn.execute("SELECT ended_position FROM runs WHERE run_id = ?",
                            (ids["prep"],)).fetchone()
    assert lost < ended
    for cursor, count in ((0, 1), (lost - 1, 1), (lost, 1), (ended - 1, 1), (ended, 0)):
        since = dashboard_view.new_since(conn, cursor)["ended"]
        assert since["count"] == count, cursor
        assert [r["run_id"] for r in since["runs"]] == [ids["prep"]] * count
    assert dashboard_view.new_since(conn, 0)["started"]["count"] == 1
