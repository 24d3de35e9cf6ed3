"""One verdict per experiment: finalizing a pipeline run records the verdict of the stage that
decides its results spec and closes its other ended stages, in one transaction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_runs_projection import ACTOR, NO_VALUE, Lab, dump, lab, results

from quipu.core.errors import Conflict
from quipu.core.runs.lifecycle import State
from quipu.core.runs.results import deciding_run, pipeline_order

__all__ = ["lab"]  # the fixture, imported for pytest


def test_one_call_judges_the_deciding_stage_and_closes_the_others_in_one_transaction(lab: Lab):
    ids = lab.start(hypothesis="dropout reduces overfitting")
    lab.execute(ids["prep"])
    lab.execute(ids["train"], metrics={"val_acc": 0.87})
    head = lab.project.store.read(after=0, limit=100_000)[-1].position

    out = lab.runs.finalize_pipeline(ids["prep"], results(0.87), actor=ACTOR)

    assert (out["run_id"], out["stage"], out["ml_outcome"]) == (ids["train"], "train", "partial")
    assert out["closed"] == [{"run_id": ids["prep"], "stage": "prep",
                              "infra_outcome": "succeeded"}]
    assert out["still_open"] == []
    written = lab.project.store.read(after=head, limit=100)
    assert len({r.position for r in written}) == len(written)
    # one transaction: the two verdicts and the two gate releases, nothing else
    assert sorted(r.type for r in written) == ["FinalizationCleared", "FinalizationCleared",
                                               "RunFinalized", "RunFinalized"]
    views = lab.fresh()
    assert views.unfinalized_runs("ws") == []
    prep = views.run_record(ids["prep"])
    assert prep is not None and prep["results"] is None and prep["comparison"] is None
    text = views.state_md(lambda s, m: False)
    outcomes = text.split("## Recent outcomes\n")[1].split("\n\n")[0].splitlines()
    assert len(outcomes) == 1  # one row for the experiment, not "prep → ..."
    assert f"{ids['train']} ws/train: dropout reduces overfitting → partial, val_acc 0.87" \
        in outcomes[0]
    with pytest.raises(Conflict, match="closed by the verdict on") as err:
        lab.runs.finalize(ids["prep"], NO_VALUE, actor=ACTOR)
    assert err.value.code == "already_finalized"


def test_canceling_the_last_stage_leaves_no_upstream_stage_holding_the_gate(lab: Lab):
    ids = lab.start()
    lab.execute(ids["prep"])
    lab.runs.cancel(ids["train"], "the idea is wrong, stop before training", actor=ACTOR)
    assert [r["run_id"] for r in lab.fresh().unfinalized_runs("ws")] == [ids["prep"]]
    record = lab.fresh().run_record(ids["prep"])
    assert record is not None
    verdict = lab.fresh().pipeline_verdict(record["pipeline_run_id"])
    assert verdict is not None and verdict["deciding_run_id"] == ids["train"]

    out = lab.runs.finalize_pipeline(ids["train"], {"ml_outcome": "unknown",
                                                    "notes": "canceled before training"},
                                     actor=ACTOR)

    assert [c["run_id"] for c in out["closed"]] == [ids["prep"]]
    assert lab.fresh().unfinalized_runs("ws") == []
    lab.start()  # the gate is open


def test_awaiting_finalization_groups_a_pipeline_run_under_one_call(lab: Lab):
    ids = lab.start(hypothesis="a larger batch trains faster")
    lab.execute(ids["prep"])
    lab.execute(ids["train"], metrics={"val_acc": 0.91})
    views = lab.fresh()
    prun = views.run_record(ids["prep"])["pipeline_run_id"]  # type: ignore[index]

    text = views.state_md(lambda s, m: False)

    section = text.split("## Awaiting finalization\n")[1].split("\n\n")[0].splitlines()
    assert len(section) == 1
    assert section[0].startswith(f"- {prun} ws (a larger batch trains faster): prep "
                                 f"{ids['prep']} succeeded, train {ids['train']} succeeded; "
                                 "one verdict for the experiment: "
                                 f'`finalize_run("{prun}", {{"primary_metric": "val_acc"')
    assert '"value": 0.91' in section[0] and '"ml_outcome": "success"' in section[0]


def test_a_pipeline_verdict_waits_for_its_deciding_stage(lab: Lab):
    ids = lab.start()
    lab.execute(ids["prep"])
    lab.launch(ids["train"])
    before = dump(lab.fresh())

    with pytest.raises(Conflict) as err:
        lab.runs.finalize_pipeline(ids["prep"], results(0.9), actor=ACTOR)

    assert err.value.code == "run_not_ended"
    assert dump(lab.fresh()) == before
    assert lab.fresh().pipeline_verdict(
        lab.fresh().run_record(ids["prep"])["pipeline_run_id"]) is None  # type: ignore[index]


def test_per_stage_finalization_stays_possible(lab: Lab):
    ids = lab.cycle(0.86)  # prep then train, one call each
    assert lab.fresh().unfinalized_runs("ws") == []
    assert lab.fresh().run_record(ids["prep"])["ml_outcome"] == "success"  # type: ignore[index]


# --- the deciding stage --------------------------------------------------------------------------

dags = st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n)))


@given(dags)
def test_the_deciding_run_is_the_last_in_order_that_logged_the_metric(dag) -> None:
    n, deps, logged = dag
    # run i may depend only on runs before it: a DAG
    stages = {f"r{i}": (f"s{i}", [f"r{d}" for d in deps[i] if d < i]) for i in range(n)}
    order = pipeline_order(stages)
    assert sorted(order) == sorted(stages)
    for i, run in enumerate(order):
        assert all(order.index(d) < i for d in stages[run][1])
    flags = {f"r{i}": logged[i] for i in range(n)}
    chosen = deciding_run(stages, flags)
    with_metric = [r for r in order if flags[r]]
    assert chosen == (with_metric[-1] if with_metric else order[-1])


def test_a_stage_of_a_failed_pipeline_run_is_closed_with_the_verdict(lab: Lab):
    ids = lab.start()
    lab.execute(ids["prep"], state=State.FAILED)  # train is canceled by the cascade
    out = lab.runs.finalize_pipeline(ids["prep"], {"ml_outcome": "miss",
                                                   "notes": "prep failed: the loader broke"},
                                     actor=ACTOR)
    assert out["run_id"] == ids["train"] and [c["run_id"] for c in out["closed"]] == [ids["prep"]]
    assert lab.fresh().unfinalized_runs("ws") == []
