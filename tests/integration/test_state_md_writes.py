"""Writing STATE.md never turns a committed command into an error, and concurrent writers never
trip over each other's file (issue 6, fault 2: a fixed ``STATE.md.tmp`` made 48 of 2,000
commands under 4 writers report failure after they had committed, and an agent that retries
then does the work twice)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from quipu.adapters.eventstore import open_sqlite_store
from quipu.app.bootstrap import init_project, open_project
from quipu.core.log import decode

WRITERS = 4
COMMANDS = 60

_WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from quipu.app.bootstrap import open_project

    root, writer, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    q = open_project(root, actor=f"agent:{writer}")
    (root / f"ready-{writer}").touch()
    deadline = time.monotonic() + 120  # a bound on waiting for the others, not a timing test
    while not (root / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    ok, failed, warnings = 0, [], []
    for i in range(count):
        try:
            answer = q.log_thought(f"writer {writer} thought {i}")
        except Exception as exc:
            failed.append(repr(exc))
        else:
            ok += 1
            if "warning" in answer:
                warnings.append(answer["warning"]["code"])
    q.close()
    print(json.dumps({"ok": ok, "failed": failed, "warnings": warnings}))
""")


def _thoughts(root: Path) -> list[str]:
    store = open_sqlite_store(root / ".quipu" / "events.db")
    try:
        return [decode(r).event.thought  # type: ignore[attr-defined]
                for r in store.read(after=0, limit=1_000_000) if r.type == "ThoughtLogged"]
    finally:
        store.close()


def test_concurrent_writers_each_command_succeeds_exactly_once_and_state_md_is_whole(
        tmp_path: Path) -> None:
    root = tmp_path / "p"
    init_project(root, name="race", goal="four agents at once", actor="t:1").close()
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), f"w{n}",
                                 str(COMMANDS)], stdout=subprocess.PIPE, text=True)
               for n in range(WRITERS)]
    deadline = time.monotonic() + 120  # a bound on waiting for the processes to start
    while len(list(root.glob("ready-*"))) < WRITERS and time.monotonic() < deadline:
        assert all(w.poll() is None for w in writers), "a writer died while starting"
        time.sleep(0.05)
    (root / "go").touch()
    reports = [json.loads(w.communicate(timeout=600)[0]) for w in writers]

    assert [r["failed"] for r in reports] == [[]] * WRITERS
    assert [r["ok"] for r in reports] == [COMMANDS] * WRITERS
    assert [r["warnings"] for r in reports] == [[]] * WRITERS
    thoughts = _thoughts(root)
    expected = [f"writer w{n} thought {i}" for n in range(WRITERS) for i in range(COMMANDS)]
    assert sorted(thoughts) == sorted(expected)  # each exactly once
    q = open_project(root, actor="t:check")
    try:
        q.views.catch_up()
        assert (root / "STATE.md").read_text() == q.views.state_md(
            lambda _s, _m: False, slot_names=q.config.slot_names())
    finally:
        q.close()
    assert not list(root.glob(".STATE.md.*")), "a temporary file was left behind"


def test_a_command_whose_state_md_cannot_be_written_answers_with_a_warning(
        tmp_path: Path) -> None:
    root = tmp_path / "p"
    q = init_project(root, name="blocked", goal="a directory where STATE.md goes", actor="t:1")
    try:
        (root / "STATE.md").unlink()
        (root / "STATE.md").mkdir()
        (root / "STATE.md" / "keep").write_text("something in the way")
        head = q.store.head()

        answer = q.log_thought("the command must take effect and say so")

        assert answer["logged"] is True and answer["position"] == head + 1
        assert answer["warning"]["code"] == "state_md_not_written"
        assert q.store.head() == head + 1
        assert _thoughts(root) == ["the command must take effect and say so"]
        status = q.status()
        assert status["warning"]["code"] == "state_md_not_written"
        assert "the command must take effect" in status["state_md"]
        assert not list(root.glob(".STATE.md.*")), "a temporary file was left behind"

        (root / "STATE.md" / "keep").unlink()
        (root / "STATE.md").rmdir()
        answer = q.log_thought("once the way is clear STATE.md is written again")
        assert "warning" not in answer
        assert "once the way is clear" in (root / "STATE.md").read_text()
    finally:
        q.close()


def test_a_command_whose_views_cannot_catch_up_answers_with_a_warning(tmp_path: Path) -> None:
    """Another process holding the views' write lock (a long rebuild) delays the views, not the
    command: it is committed and says so, and the next command catches up."""
    root = tmp_path / "p"
    q = init_project(root, name="busy", goal="views locked by another process", actor="t:1")
    try:
        q.views.conn.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(root / ".quipu" / "views.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            answer = q.log_thought("committed while the views were locked")
        finally:
            other.execute("ROLLBACK")
            other.close()

        assert answer["warning"]["code"] == "views_not_refreshed"
        assert _thoughts(root) == ["committed while the views were locked"]
        q.log_thought("and the next command catches up")
        assert "committed while the views were locked" in (root / "STATE.md").read_text()
    finally:
        q.close()


def test_state_md_is_not_rendered_again_while_nothing_it_shows_changed(tmp_path: Path) -> None:
    """Reads, and events that change nothing shown (a cursor moved), neither render STATE.md
    (no statement reads what only STATE.md shows) nor touch the file."""
    root = tmp_path / "p"
    q = init_project(root, name="quiet", goal="nothing new to show", actor="t:1")
    try:
        q.log_thought("something to show")
        before = (root / "STATE.md").stat()
        statements: list[str] = []
        q.views.conn.set_trace_callback(statements.append)

        q.status()
        q.status()
        q.mark_seen("default", q.store.head())
        q.dashboard()

        assert not [s for s in statements if "FROM thoughts" in s]
        after = (root / "STATE.md").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        q.log_thought("something new to show")
        assert [s for s in statements if "FROM thoughts" in s]
        assert "something new to show" in (root / "STATE.md").read_text()
    finally:
        q.views.conn.set_trace_callback(None)
        q.close()
