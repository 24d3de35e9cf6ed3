"""``join_project``: a host joins a project on a shared log with slot names of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit_support import ACTOR, Project, make_project

from quipu.core.errors import Conflict, NotFound
from quipu.core.project.events import HostJoined, ProjectInitialized


def initialised(tmp_path: Path, *, host: str | None = "a") -> Project:
    p = make_project(tmp_path)
    p.service.init_project("lab", "learn digits", actor=ACTOR, host=host,
                           slots=("w1", "w2", "w3") if host else None)
    return p


def test_a_join_is_recorded_with_the_hosts_slots(tmp_path: Path) -> None:
    p = initialised(tmp_path)
    result = p.service.join_project("b", ("b-w1", "b-w2"), "gs://lab/x", actor=ACTOR)
    assert result["project"] == "lab" and result["hosts"] == ["a", "b"]
    joined = [r.event for r in p.events() if isinstance(r.event, HostJoined)]
    assert [(e.host, e.slots, e.blobs) for e in joined] == [("b", ["b-w1", "b-w2"],
                                                            "gs://lab/x")]
    first = next(r.event for r in p.events() if isinstance(r.event, ProjectInitialized))
    assert (first.host, first.slots) == ("a", ["w1", "w2", "w3"])


def test_nothing_to_join_on_an_empty_log(tmp_path: Path) -> None:
    p = make_project(tmp_path)
    with pytest.raises(NotFound) as caught:
        p.service.join_project("b", ("b-w1",), "gs://lab/x", actor=ACTOR)
    assert caught.value.code == "nothing_to_join" and p.events() == []


def test_a_host_name_or_a_slot_name_in_use_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    p = initialised(tmp_path)
    p.service.join_project("b", ("b-w1",), "gs://lab/x", actor=ACTOR)
    before = len(p.events())
    for host, slots, code in [("a", ("z-w1",), "host_taken"), ("b", ("z-w1",), "host_taken"),
                              ("c", ("w2",), "slots_taken"), ("c", ("b-w1",), "slots_taken")]:
        with pytest.raises(Conflict) as caught:
            p.service.join_project(host, slots, "gs://lab/x", actor=ACTOR)
        assert caught.value.code == code, (host, slots)
        assert caught.value.hint
    assert len(p.events()) == before


def test_a_slot_used_on_a_log_from_before_hosts_were_recorded_is_taken(
        tmp_path: Path) -> None:
    """An old log's ProjectInitialized names no host or slots: a slot that was ever claimed
    is still refused, by its stream."""
    p = initialised(tmp_path, host=None)
    p.create("ws")
    p.mount("ws", "w2")
    with pytest.raises(Conflict) as caught:
        p.service.join_project("c", ("c-w1", "w2"), "gs://lab/x", actor=ACTOR)
    assert caught.value.code == "slots_taken" and "w2" in caught.value.message
    p.service.join_project("c", ("c-w1",), "gs://lab/x", actor=ACTOR)


names = st.sampled_from(["a", "b", "c", "d"])
slot_names = st.lists(st.sampled_from(["w1", "w2", "b-w1", "c-w1", "c-w2", "d-w1"]),
                      min_size=1, max_size=3, unique=True)


@given(attempts=st.lists(st.tuples(names, slot_names), max_size=8))
def test_no_two_hosts_ever_share_a_name_or_a_slot(
        tmp_path_factory: pytest.TempPathFactory,
        attempts: list[tuple[str, list[str]]]) -> None:
    p = initialised(tmp_path_factory.mktemp("join"))
    for host, slots in attempts:
        try:
            p.service.join_project(host, tuple(slots), "gs://lab/x", actor=ACTOR)
        except Conflict:
            pass
    owners: dict[str, str] = {}
    hosts = ["a"]
    for slot in ("w1", "w2", "w3"):
        owners[slot] = "a"
    for e in (r.event for r in p.events() if isinstance(r.event, HostJoined)):
        assert e.host not in hosts
        hosts.append(e.host)
        for slot in e.slots:
            assert slot not in owners, (slot, owners)
            owners[slot] = e.host
