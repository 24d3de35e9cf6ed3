"""The views defend themselves: a log that went back in time or was swapped, garbled pages.

Every scenario uses real files: a project made through the facade, ``events.db`` copied and put
back the way a restore from a backup would, ``views.db`` overwritten byte by byte. The answers
afterwards must be the log's, with no exception and a warning that says why.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from toy_pipeline import FACTS_PIPELINE, FACTS_SPEC

from quipu.adapters.eventstore import open_sqlite_store
from quipu.app.bootstrap import Quipu, init_project, open_project
from quipu.core.errors import Unavailable
from quipu.core.runs.handlers import RunService
from quipu.projections import Views

ACTOR = "agent:repair"
REASON = "exercise the repair of the views"


def backup(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included), as a backup tool makes it."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def restore(copy: Path, live: Path) -> None:
    """Put a copy back in place of the live file, dropping the live WAL with it."""
    for suffix in ("-wal", "-shm"):
        Path(f"{live}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(copy, live)


def texts(q: Quipu, workspace: str = "ws") -> list[str]:
    return [t["thought"] for t in q.get_workspace_thoughts(workspace)["thoughts"]]


def new_project(root: Path) -> Quipu:
    q = init_project(root, name="demo", goal="beat the baseline", actor=ACTOR)
    q.create_workspace("ws", "a digits classifier", REASON)
    return q


@pytest.fixture
def views_warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="quipu.views")
    return caplog


# --- a log behind the views -------------------------------------------------------------------


class TestALogBehindTheViews:
    def test_a_restored_shorter_log_is_refolded_and_its_new_events_are_not_skipped(
            self, tmp_path, views_warnings):
        root = tmp_path / "proj"
        events = root / ".quipu" / "events.db"
        q = new_project(root)
        q.log_thought("kept: before the backup", workspace="ws")
        backup(events, tmp_path / "backup.db")
        kept_head = q.store.head()
        for i in range(5):
            q.log_thought(f"lost: after the backup {i}", workspace="ws")
        assert len(texts(q)) == 6  # folded: the views are now at the longer log's head
        q.close()

        restore(tmp_path / "backup.db", events)
        with open_project(root, actor=ACTOR) as again:
            assert again.store.head() == kept_head
            assert texts(again) == ["kept: before the backup"]
            assert "ends at" in views_warnings.text  # it says why it refolded
            again.log_thought("after the restore", workspace="ws")
            assert texts(again) == ["after the restore", "kept: before the backup"]
            assert again.views.position() == again.store.head()

    def test_a_different_log_of_the_same_length_is_detected_by_its_hash(
            self, tmp_path, views_warnings):
        mine, theirs = new_project(tmp_path / "mine"), new_project(tmp_path / "theirs")
        mine.log_thought("what this project thought", workspace="ws")
        theirs.log_thought("what another project thought", workspace="ws")
        assert texts(mine) == ["what this project thought"]
        assert mine.store.head() == theirs.store.head()
        mine.close()
        theirs.close()

        restore(tmp_path / "theirs" / ".quipu" / "events.db",
                tmp_path / "mine" / ".quipu" / "events.db")
        with open_project(tmp_path / "mine", actor=ACTOR) as again:
            assert texts(again) == ["what another project thought"]
            assert "not the one they folded" in views_warnings.text

    def test_views_past_the_log_show_only_what_the_log_has(self, tmp_path, views_warnings):
        """At the Views level, with the log file swapped under an open store's path."""
        q = new_project(tmp_path / "proj")
        q.close()
        events = tmp_path / "proj" / ".quipu" / "events.db"
        backup(events, tmp_path / "short.db")
        with open_project(tmp_path / "proj", actor=ACTOR) as longer:
            for i in range(30):
                longer.log_thought(f"thought {i}", workspace="ws")
        restore(tmp_path / "short.db", events)

        store = open_sqlite_store(events)
        try:
            with Views(tmp_path / "proj" / ".quipu" / "views.db", store) as views, \
                    Views(tmp_path / "reference.db", store) as reference:
                assert views.catch_up() == store.head()
                reference.catch_up()
                assert views.thoughts() == reference.thoughts() == []
                assert views.audit_log(limit=100) == reference.audit_log(limit=100)
                assert views.workspaces() == reference.workspaces()
        finally:
            store.close()

    def test_views_in_step_with_the_log_are_not_refolded(self, tmp_path, views_warnings):
        with new_project(tmp_path / "proj") as q:
            q.log_thought("one", workspace="ws")
            q.status()
        with open_project(tmp_path / "proj", actor=ACTOR) as again:
            again.log_thought("two", workspace="ws")
            assert texts(again) == ["two", "one"]
        assert views_warnings.records == []


# --- garbled pages -----------------------------------------------------------------------------


def garble_pages(path: Path, *, seed: int) -> int:
    """Random bytes over a third of the pages in the middle of the file (never the header page);
    returns how many pages were overwritten."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    pages = len(data) // page
    rng = random.Random(seed)
    hit = range(pages // 3, 2 * pages // 3)
    for n in hit:
        data[n * page:(n + 1) * page] = rng.randbytes(page)
    path.write_bytes(bytes(data))
    return len(hit)


def garble_text(path: Path, needle: bytes, replacement: bytes) -> int:
    """Overwrite every occurrence of ``needle`` in the file with bytes of the same length."""
    assert len(replacement) == len(needle)
    data = path.read_bytes()
    count = data.count(needle)
    path.write_bytes(data.replace(needle, replacement))
    return count


def garble_spans(path: Path, *, seed: int, spans: int = 8) -> None:
    """Random bytes over a few short spans (4 to 64 bytes) anywhere after the first page: what
    a bad sector or a stray write does, sometimes inside a value, sometimes in page structure."""
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for _ in range(spans):
        at = rng.randrange(4096, len(data) - 64)
        size = rng.choice([4, 16, 64])
        data[at:at + size] = rng.randbytes(size)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def busy_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A closed project whose views.db spans many pages, and the answers it gave."""
    root = tmp_path_factory.mktemp("busy") / "proj"
    with new_project(root) as q:
        q.create_workspace("other", "a second workspace", REASON)
        for i in range(300):
            q.log_thought(f"thought {i:03d}: " + "the learning rate looks too high " * 6,
                          workspace="ws" if i % 2 else "other")
        answers = ask(q)
    views = root / ".quipu" / "views.db"
    assert not Path(f"{views}-wal").exists() or Path(f"{views}-wal").stat().st_size == 0
    assert views.stat().st_size > 40 * 4096
    return root, answers


@pytest.fixture
def busy_project(busy_base: tuple[Path, dict[str, Any]],
                 tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of ``busy_base`` of this test's own, to damage."""
    root, answers = busy_base
    shutil.copytree(root, tmp_path / "proj")
    return tmp_path / "proj", answers


def ask(q: Quipu) -> dict[str, Any]:
    return {"status": q.status(), "ws": q.get_workspace_thoughts("ws"),
            "audit": q.get_audit_log(limit=40), "other": q.inspect_workspace("other")}


def only_text_edited_in_place(right: Any, got: Any) -> bool:
    """Whether ``got`` differs from ``right`` only in strings that kept their UTF-8 length:
    bytes overwritten inside a value that still decode (SQLite has no page checksums)."""
    if isinstance(right, dict) and isinstance(got, dict):
        return right.keys() == got.keys() and all(
            only_text_edited_in_place(right[k], got[k]) for k in right)
    if isinstance(right, list) and isinstance(got, list):
        return len(right) == len(got) and all(
            only_text_edited_in_place(a, b) for a, b in zip(right, got, strict=True))
    if isinstance(right, str) and isinstance(got, str):
        return len(right.encode()) == len(got.encode())
    return bool(right == got)


SPAN_SEEDS = range(1, 41)
"""Random damage: short spans of random bytes at random places. Where a span lands depends on
the file's layout (which changes whenever a view's tables do), so no seed is pinned to a kind of
damage. Every seed must leave the answers right with no exception; across the seeds, many must be
met as damage (seen: "malformed" pages, text that is not UTF-8 in a value, a garbled schema
entry, a UnicodeDecodeError), the others garbled pages nothing reads. SQLite has no page
checksums, so bytes changed inside a value into other valid text go unnoticed: the test allows
a few seeds to do that (with the layout after the patterns view was added, seeds 26 and 29 turn
a few bytes of a thought into other valid text of the same length) and fails on any other
wrong answer."""
MET_AS_DAMAGE_AT_LEAST = 10
SILENT_AT_MOST = 4
"""Seeds (of 40) whose damage may stay valid text in place: the blind spot above, not a
repair that failed."""


class TestGarbledViews:
    def test_short_spans_of_random_bytes_are_repaired_with_no_exception(
            self, busy_base, tmp_path, views_warnings):
        base, answers = busy_base
        met, silent = [], []
        for seed in SPAN_SEEDS:
            root = tmp_path / f"proj-{seed}"
            shutil.copytree(base, root)
            garble_spans(root / ".quipu" / "views.db", seed=seed)
            views_warnings.clear()
            with open_project(root, actor=ACTOR) as q:
                got = ask(q)
                if got != answers:
                    # The one blind spot the docstring names: bytes changed in place inside a
                    # stored text into other valid UTF-8 (same byte length). Anything else
                    # answered wrong is a failure.
                    assert only_text_edited_in_place(answers, got), \
                        f"seed {seed} answered wrong"
                    silent.append(seed)
                assert q.views.catch_up() == q.store.head()
            if "damaged" in views_warnings.text:
                met.append(seed)
        assert len(met) >= MET_AS_DAMAGE_AT_LEAST, met
        assert len(silent) <= SILENT_AT_MOST, f"seeds whose damage stayed valid text: {silent}"

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_random_bytes_over_middle_pages_are_repaired_at_the_first_query(
            self, busy_project, seed, views_warnings):
        root, answers = busy_project
        assert garble_pages(root / ".quipu" / "views.db", seed=seed) > 5

        with open_project(root, actor=ACTOR) as q:
            assert ask(q) == answers
            assert q.views.catch_up() == q.store.head()

    def test_text_that_is_not_utf8_is_repaired_by_the_query_that_meets_it(
            self, busy_project, views_warnings):
        root, answers = busy_project
        assert garble_text(root / ".quipu" / "views.db", b"learning rate",
                           b"\xff\xfe\xfd\xfc\xff\xfe\xfd\xfc\xff\xfe\xfd\xfc\xff") > 100

        with open_project(root, actor=ACTOR) as q:
            assert ask(q) == answers
        assert "damaged" in views_warnings.text

    def test_a_garbled_views_db_is_repaired_through_the_views_class_too(
            self, busy_project, views_warnings):
        root, answers = busy_project
        garble_pages(root / ".quipu" / "views.db", seed=7)
        store = open_sqlite_store(root / ".quipu" / "events.db")
        try:
            with Views(root / ".quipu" / "views.db", store) as views:
                # Queries first, without a catch-up: they still answer from the log.
                assert views.thoughts(workspace="ws", limit=50) == answers["ws"]["thoughts"]
                assert views.position() == store.head()
        finally:
            store.close()

    def test_a_locked_file_is_still_refused_not_repaired(self, busy_project):
        root, _ = busy_project
        path = root / ".quipu" / "views.db"
        store = open_sqlite_store(root / ".quipu" / "events.db")
        try:
            with Views(path, store, busy_timeout=0.1) as views:
                holder = sqlite3.connect(path, isolation_level=None)
                holder.execute("BEGIN EXCLUSIVE")
                try:
                    with pytest.raises(sqlite3.OperationalError, match="locked"):
                        views.rebuild(["thoughts"])  # needs the write lock: waits, then raises
                finally:
                    holder.execute("ROLLBACK")
                    holder.close()
                assert views.position() == store.head()  # nothing was thrown away
                assert len(views.thoughts(limit=500)) == 300
        finally:
            store.close()


def test_a_json_column_that_does_not_parse_is_repaired(tmp_path, views_warnings):
    """A run's JSON column garbled (valid UTF-8, not JSON) is damage, not a crash."""
    q = new_project(tmp_path / "proj")
    try:
        q.mount("ws", "w1", REASON)
        slot = q.root / "workspaces" / "w1"
        (slot / "modules").mkdir()
        (slot / "pipeline.yaml").write_text(FACTS_PIPELINE)
        (slot / "modules" / "prep.py").write_text("print('prep')\n")
        (slot / "modules" / "train.py").write_text("print('train')\n")
        counter = itertools.count(1)
        runs = RunService(q.service, q.views, new_id=lambda: f"{next(counter):04d}")
        out = runs.run("ws", reason={"description": "see whether wider layers help",
                                     "hypothesis": "wider layers help"},
                       results_spec=FACTS_SPEC, actor=ACTOR)
        run_id = out["queued"][0]["stage_run_id"]
        q.views.catch_up()
        expected = q.views.run_record(run_id)
        assert expected is not None
        other = sqlite3.connect(q.root / ".quipu" / "views.db", isolation_level=None)
        other.execute("UPDATE runs SET config = '{\"lr\": 0.1' WHERE run_id = ?", (run_id,))
        other.close()

        assert q.views.run_record(run_id) == expected
        assert "JSONDecodeError" in views_warnings.text
    finally:
        q.close()


# --- the rebuild path for catch-ups from far behind --------------------------------------------


def dump(views: Views) -> dict[str, list[tuple[Any, ...]]]:
    conn = views.conn
    names = [n for (n,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}


@pytest.mark.parametrize(("folded_first", "why"), [
    (50, "far behind, less than half the log: folded on with the rebuild's settings"),
    (10, "far behind, more than half the log: refolded from 0"),
])
def test_a_catch_up_from_far_behind_ends_where_an_incremental_one_does(
        tmp_path, folded_first, why):
    with new_project(tmp_path / "proj") as q:
        for i in range(80):
            q.log_thought(f"thought {i}", workspace="ws")
    store = open_sqlite_store(tmp_path / "proj" / ".quipu" / "events.db")
    try:
        with Views(tmp_path / "far.db", store, until=folded_first) as early:
            early.catch_up()
        with Views(tmp_path / "far.db", store, far_behind=5, page_size=7) as far, \
                Views(tmp_path / "near.db", store, far_behind=10**9, page_size=7) as near:
            near.catch_up()
            assert far.position() == folded_first
            assert far.catch_up() == store.head()
            assert dump(far) == dump(near), why
    finally:
        store.close()


def test_a_refold_another_process_already_began_is_not_started_again(tmp_path):
    """Two views on one file decide at once to refold: the second keeps the first one's work."""
    with new_project(tmp_path / "proj") as q:
        for i in range(40):
            q.log_thought(f"thought {i}", workspace="ws")
    store = open_sqlite_store(tmp_path / "proj" / ".quipu" / "events.db")
    try:
        path = tmp_path / "shared.db"
        with Views(path, store, page_size=5) as first, Views(path, store, page_size=5) as second:
            seen = second._runner().stored()  # what the second saw before the first folded
            first.catch_up()
            report = second._refold(second._projections, seen=seen)
            assert report["views"] == []  # nothing reset: the first one's progress stands
            assert second.position() == store.head()
            with Views(tmp_path / "reference.db", store) as reference:
                reference.catch_up()
                assert dump(second) == dump(reference)
    finally:
        store.close()


def test_a_views_path_that_cannot_be_opened_is_a_typed_refusal_that_says_what_to_do(
        tmp_path: Path) -> None:
    """Not damage (nothing to refold into): the views file cannot even be opened, here because
    something else took its name. The answer is a typed error with the way out, never a raw
    sqlite3 error, and the log is left as it was."""
    root = tmp_path / "proj"
    init_project(root, name="blocked", goal="open views that cannot be opened").close()
    views = root / ".quipu" / "views.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{views}{suffix}").unlink(missing_ok=True)
    views.mkdir()
    with pytest.raises(Unavailable) as caught:
        open_project(root)
    assert caught.value.code == "views_unavailable"
    assert "remove it and it is rebuilt" in caught.value.hint
    views.rmdir()
    with open_project(root) as q:  # the way out works
        assert q.status()["project"]["name"] == "blocked"
