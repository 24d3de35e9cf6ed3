"""A plain `quipu status` answered from STATE.md: only when it provably shows the project now.

`read_state_md` must return exactly the text a full `status()` gives whenever it returns
anything, and return None (so the project is opened) after every change it cannot see: a new
event, a restored older log, an edited STATE.md, an edited slot, another quipu.yaml, another
log URL, a damaged or missing key, a missing log. The subprocess tests drive the real script.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import quipu

from quipu.app.bootstrap import build, init_project, open_project
from quipu.app.config import load_config
from quipu.app.facade import Quipu
from quipu.app.quick_status import KEY_FILE, read_state_md
from quipu.entry import plain_status


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    q = init_project(tmp_path / "p", name="p", goal="show status quickly")
    q.create_workspace("base", "a baseline", "a baseline to compare against")
    q.mount("base", "w1", "start editing the baseline")
    (q.root / "workspaces" / "w1" / "train.py").write_text("print('hi')\n")
    q.save_version("w1", "the first training script")
    q.close()
    yield tmp_path / "p"


def full_status(root: Path) -> str:
    q = open_project(root, actor="cli:test")
    try:
        text: str = q.status()["state_md"]
        return text
    finally:
        q.close()


def keyless(root: Path) -> Quipu:
    """The project opened without STATE.md's key: its commands move the log, not the key."""
    return build(root, load_config(root), actor="cli:other")


def test_the_shortcut_gives_exactly_the_full_answer(root: Path) -> None:
    expected = full_status(root)
    assert read_state_md(root) == expected
    assert "base" in expected
    # from a directory inside the project, as `quipu status` finds it
    assert read_state_md(root / "workspaces" / "w1") == expected


def test_a_new_event_from_elsewhere_makes_it_open_the_project(root: Path) -> None:
    full_status(root)
    q = keyless(root)
    q.log_thought("the learning rate looks too high")  # STATE.md's key is not rewritten
    q.close()
    assert read_state_md(root) is None
    fresh = full_status(root)
    assert "the learning rate looks too high" in fresh
    assert read_state_md(root) == fresh


def test_an_older_log_restored_at_the_same_length_is_noticed(root: Path) -> None:
    full_status(root)
    log = root / ".quipu" / "events.db"
    backup = root.parent / "events.backup.db"
    conn = sqlite3.connect(log)  # one file: fold the WAL in before copying
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copy(log, backup)
    q = open_project(root, actor="cli:test")
    q.log_thought("written after the backup")  # the key now names this event's chain hash
    q.close()
    head_with_key = json.loads((root / ".quipu" / KEY_FILE).read_text())["position"]
    for name in ("events.db-wal", "events.db-shm"):
        (root / ".quipu" / name).unlink(missing_ok=True)
    shutil.copy(backup, log)
    other = keyless(root)
    other.log_thought("a different event at the same position")
    assert other.store.head() == head_with_key
    other.close()
    assert read_state_md(root) is None


def test_an_edited_state_md_is_not_shown(root: Path) -> None:
    full_status(root)
    state = root / "STATE.md"
    state.write_text(state.read_text().replace("baseline", "tampered"))
    assert read_state_md(root) is None
    assert "tampered" not in full_status(root)


def test_an_edited_slot_is_noticed_both_ways(root: Path) -> None:
    clean = full_status(root)
    assert "DIRTY" not in clean
    script = root / "workspaces" / "w1" / "train.py"
    script.write_text("print('changed')\n")
    assert read_state_md(root) is None
    dirty = full_status(root)
    assert "DIRTY" in dirty
    assert read_state_md(root) == dirty
    script.write_text("print('hi')\n")  # back to the saved tree: clean again
    assert read_state_md(root) is None
    assert full_status(root) == clean
    assert read_state_md(root) == clean


def test_another_config_or_log_url_opens_the_project(root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    full_status(root)
    monkeypatch.setenv("QUIPU_EVENTSTORE_URL", f"sqlite:///{root.parent / 'other.db'}")
    assert read_state_md(root) is None
    monkeypatch.delenv("QUIPU_EVENTSTORE_URL")
    assert read_state_md(root) is not None
    config = root / "quipu.yaml"
    config.write_text(config.read_text() + "reason_min_length: 12\n")
    assert read_state_md(root) is None


@pytest.mark.parametrize("damage", ["garbled", "missing", "wrong_type", "bad_table"])
def test_a_damaged_key_opens_the_project(root: Path, damage: str) -> None:
    expected = full_status(root)
    key = root / ".quipu" / KEY_FILE
    if damage == "garbled":
        key.write_bytes(key.read_bytes()[:40])
    elif damage == "missing":
        key.unlink()
    elif damage == "wrong_type":
        key.write_text(json.dumps([1, 2, 3]))
    else:
        data = json.loads(key.read_text())
        data["table"] = "stored_events; DROP TABLE stored_events"
        key.write_text(json.dumps(data))
    assert read_state_md(root) is None
    assert full_status(root) == expected
    assert read_state_md(root) == expected  # the full path wrote a good key again


def test_a_missing_log_is_not_created_by_the_shortcut(root: Path) -> None:
    full_status(root)
    data = root / ".quipu"
    for name in ("events.db", "events.db-wal", "events.db-shm"):
        (data / name).unlink(missing_ok=True)
    assert read_state_md(root) is None
    assert not (data / "events.db").exists()


def test_outside_a_project_it_answers_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUIPU_PROJECT", raising=False)
    assert read_state_md(tmp_path) is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["status"], (True, None)),
    (["-p", "x", "status"], (True, Path("x"))),
    (["--project", "x", "--actor", "me", "status"], (True, Path("x"))),
    (["--project=x", "status"], (True, Path("x"))),
    (["--actor=me", "status"], (True, None)),
    (["status", "--json"], (False, None)),
    (["status", "-h"], (False, None)),
    (["--project", "status"], (False, None)),
    (["events"], (False, None)),
    ([], (False, None)),
    (["-x", "status"], (False, None)),
])
def test_only_a_plain_status_takes_the_shortcut(argv: list[str],
                                                expected: tuple[bool, Path | None]) -> None:
    assert plain_status(argv) == expected


PROBE = textwrap.dedent("""\
    import json, sys
    sys.argv = ["quipu", "--project", sys.argv[1], "status"]
    from quipu.entry import main
    try:
        main()
    except SystemExit as exc:  # click's standalone mode exits
        assert not exc.code, exc.code
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
    """)


def modules_and_output(root: Path) -> tuple[set[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(root)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "QUIPU_ACTOR": "cli:test"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stderr.strip().splitlines()[-1])), proc.stdout


def test_the_script_answers_without_opening_the_project_and_falls_back(root: Path) -> None:
    expected = full_status(root)
    loaded, out = modules_and_output(root)
    assert out == expected + "\n"
    opened = {"quipu.cli", "quipu.projections", "quipu.app.facade", "eventsourcing", "click"}
    assert sorted(opened & loaded) == []
    (root / "workspaces" / "w1" / "train.py").write_text("print('changed')\n")
    loaded, out = modules_and_output(root)
    assert sorted(opened & loaded) == sorted(opened)  # the proof failed: it opened the project
    assert "DIRTY" in out
    assert out == full_status(root) + "\n"


def test_plain_and_json_status_agree_through_the_script(root: Path) -> None:
    plain = quipu("status", cwd=root).stdout
    again = quipu("status", cwd=root).stdout  # the second one takes the shortcut
    as_json = json.loads(quipu("status", "--json", cwd=root).stdout)
    assert plain == again == as_json["state_md"] + "\n"


def test_the_data_sources_count_moves_with_the_sources(root: Path) -> None:
    """STATE.md counts the sources; registering, retiring and deleting one each move the mark,
    so STATE.md (and its key, so the shortcut) follow at once."""
    import numpy as np

    from quipu.projections.sources_view import COUNTED
    from quipu.projections.state_md import StateMdMarkView

    assert COUNTED.issubset(StateMdMarkView.types)
    (root / "data").mkdir()
    np.save(root / "data" / "x.npy", np.zeros((3, 2), dtype="float32"))
    description = "three rows of two zero features"
    doc = {"schema_version": 1, "description": description,
           "source": {"format": "npy", "size_bytes": (root / "data" / "x.npy").stat().st_size,
                      "created_at": "2024-05-01T12:00:00Z"},
           "schema": {"kind": "tensor", "primary_array": "x",
                      "arrays": {"x": {"role": "features", "shape": [3, 2], "dtype": "float32",
                                       "feature_names": {"kind": "sequence"}}}}}
    why = "count the sources in STATE.md"
    q = open_project(root, actor="cli:test")
    try:
        assert "Data sources" not in q.status()["state_md"]
        assert q.status()["source_count"] == {"active": 0, "retired": 0}
        steps = [(lambda: q.register_source("x", "data/x.npy", description, why, doc),
                  "**Data sources:** 1 active —"),
                 (lambda: q.manage_sources("retire", name="x", reason=why),
                  "**Data sources:** 0 active, 1 retired —"),
                 (lambda: q.manage_sources("delete", name="x", reason=why), None)]
        for act, line in steps:
            act()
            on_disk = (root / "STATE.md").read_text()
            assert read_state_md(root) == on_disk
            if line is None:
                assert "Data sources" not in on_disk
            else:
                assert line in on_disk
        assert q.status()["source_count"] == {"active": 0, "retired": 0}
    finally:
        q.close()
