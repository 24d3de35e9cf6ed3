"""The command line, run as people run it: the real `quipu` entry point in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_runner import quipu

from quipu.cli._root import main

ROOT = Path(__file__).resolve().parents[2]




def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, f"{full} "))
    return out


@pytest.mark.parametrize("name,cmd", _commands(main), ids=lambda v: str(v))
def test_every_command_has_help_with_an_example_and_a_docs_entry(name: str,
                                                                 cmd: click.Command) -> None:
    assert cmd.help and "Example" in cmd.help, f"`quipu {name}` has no example in its help"
    docs = (ROOT / "docs" / "cli.md").read_text()
    assert f"quipu {name}" in docs, f"`quipu {name}` is missing from docs/cli.md"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    quipu("init", "proj", "--goal", "learn to classify digits well", cwd=tmp_path)
    return tmp_path / "proj"


def test_a_person_can_work_a_workspace_from_the_command_line(project: Path) -> None:
    quipu("workspace", "create", "base", "--goal", "baseline model",
          "--reason", "start with a simple baseline", cwd=project)
    quipu("workspace", "mount", "base", "w1", "--reason", "write the first script", cwd=project)
    (project / "workspaces" / "w1" / "train.py").write_text("lr = 0.1\n")
    out = quipu("workspace", "save", "w1", "-m", "first script with lr 0.1", "--json",
                cwd=project)
    assert json.loads(out.stdout)["version"] == "v1"
    (project / "workspaces" / "w1" / "train.py").write_text("lr = 0.01\n")
    diff = quipu("workspace", "diff", "w1", cwd=project).stdout
    assert "-lr = 0.1" in diff and "+lr = 0.01" in diff
    status = quipu("status", cwd=project).stdout
    assert "base" in status and "DIRTY" in status
    assert "base" in (project / "STATE.md").read_text()
    events = [json.loads(line) for line in
              quipu("events", "--json", "--workspace", "base", cwd=project).stdout.splitlines()]
    assert [e["type"] for e in events] == ["WorkspaceCreated", "WorkspaceMounted",
                                           "SlotClaimed", "VersionSaved"]
    assert all(e["actor"] == "cli:test" for e in events)


def test_bad_input_prints_code_and_hint_and_exits_2(project: Path) -> None:
    proc = quipu("workspace", "create", "a/b", "--goal", "g", "--reason",
                 "a reason that is long enough", cwd=project, check=False)
    assert proc.returncode == 2
    assert "invalid_name" in proc.stderr and "hint:" in proc.stderr
    proc = quipu("workspace", "create", "ok", "--goal", "g", "--reason", "short", cwd=project,
                 check=False)
    assert proc.returncode == 2 and "reason_too_short" in proc.stderr
    only_init = quipu("events", "--json", cwd=project).stdout.splitlines()
    assert len(only_init) == 1


def test_audit_verify_fails_with_the_first_bad_position_after_tampering(project: Path) -> None:
    for i in range(3):
        quipu("workspace", "thought", f"thought number {i} about the learning rate",
              cwd=project)
    assert "OK" in quipu("audit", "verify", cwd=project).stdout
    quipu("audit", "seal", cwd=project)
    db = sqlite3.connect(project / ".quipu" / "events.db")
    state = db.execute("SELECT state FROM stored_events WHERE rowid=3").fetchone()[0]
    db.execute("UPDATE stored_events SET state=? WHERE rowid=3",
               (bytes(state).replace(b"number 1", b"number 7"),))
    db.commit()
    db.close()
    proc = quipu("audit", "verify", "--json", cwd=project, check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["first_bad_position"] == 3


def test_audit_verify_catches_truncation_after_a_seal(project: Path) -> None:
    for i in range(3):
        quipu("workspace", "thought", f"thought number {i} about the batch size",
              cwd=project)
    quipu("audit", "seal", cwd=project)
    db = sqlite3.connect(project / ".quipu" / "events.db")
    db.execute("DELETE FROM stored_events WHERE rowid >= 3")
    db.commit()
    db.close()
    proc = quipu("audit", "verify", cwd=project, check=False)
    assert proc.returncode == 1 and "TAMPERED" in proc.stderr


def test_audit_verify_names_the_first_position_after_every_position_is_renumbered(
    project: Path,
) -> None:
    for i in range(3):
        quipu("workspace", "thought", f"thought number {i} about positions", cwd=project)
    db = sqlite3.connect(project / ".quipu" / "events.db")
    db.execute("UPDATE stored_events SET rowid = rowid + 100")
    db.commit()
    db.close()
    proc = quipu("audit", "verify", "--json", cwd=project, check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["first_bad_position"] == 101


@pytest.mark.parametrize("state", [None, "a text state"])
def test_audit_verify_names_a_row_whose_state_is_not_bytes(project: Path, state: object) -> None:
    for i in range(3):
        quipu("workspace", "thought", f"thought number {i} about damage", cwd=project)
    db = sqlite3.connect(project / ".quipu" / "events.db")
    db.execute("UPDATE stored_events SET state=? WHERE rowid=3", (state,))
    db.commit()
    db.close()
    proc = quipu("audit", "verify", cwd=project, check=False)
    assert proc.returncode == 1
    assert "first bad position 3" in proc.stderr and "Traceback" not in proc.stderr
    rebuilt = quipu("rebuild", "--all", cwd=project, check=False)
    assert rebuilt.returncode == 2
    assert "state_unreadable" in rebuilt.stderr and "audit verify" in rebuilt.stderr


def test_audit_verify_checks_a_keyed_log_with_its_key_and_says_when_it_has_none(
    project: Path, tmp_path: Path
) -> None:
    key = tmp_path / "audit.key"
    key.write_text("k" * 32 + "\n")
    config = (project / "quipu.yaml").read_text()
    (project / "quipu.yaml").write_text(config + f"audit:\n  key_file: {key}\n")
    quipu("workspace", "thought", "a thought written with the key", cwd=project)
    assert "OK" in quipu("audit", "verify", cwd=project).stdout
    (project / "quipu.yaml").write_text(config)
    proc = quipu("audit", "verify", cwd=project)
    assert "1 event(s) carry audit-key MACs but no key was given" in proc.stderr


def test_replay_shows_the_past_without_touching_live_views(project: Path) -> None:
    quipu("workspace", "create", "early", "--goal", "first idea",
          "--reason", "the first idea of the day", cwd=project)
    head = int(json.loads(quipu("events", "--json", cwd=project).stdout.splitlines()[-1])
               ["position"])
    quipu("workspace", "create", "late", "--goal", "second idea",
          "--reason", "the second idea of the day", cwd=project)
    then = json.loads(quipu("audit", "replay", "--until", str(head), "--json",
                            cwd=project).stdout)
    assert [w["name"] for w in then["workspaces"]] == ["early"]
    assert "late" not in then["state_md"]
    now = json.loads(quipu("status", "--json", cwd=project).stdout)
    assert "late" in now["state_md"]


def test_rebuild_reports_events_per_second(project: Path) -> None:
    quipu("workspace", "create", "w", "--goal", "g", "--reason", "a workspace to rebuild",
          cwd=project)
    out = quipu("rebuild", "--all", cwd=project).stdout
    assert "events/s" in out
    proc = quipu("rebuild", cwd=project, check=False)
    assert proc.returncode == 2 and "rebuild_what" in proc.stderr


def test_serve_outside_a_project_says_so_instead_of_a_traceback(tmp_path: Path) -> None:
    """It still serves (an agent can call initialize_project, tests/e2e/test_mcp_contact.py);
    stdin at its end stops it at once."""
    env = {k: v for k, v in os.environ.items() if k != "QUIPU_PROJECT"}
    proc = subprocess.run([sys.executable, "-m", "quipu", "--project", str(tmp_path / "nowhere"),
                           "serve"], cwd=tmp_path, env=env, input="", capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no project at or above" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "nowhere").exists()


def test_events_follow_prints_events_appended_after_it_started(project: Path) -> None:
    env = {**os.environ, "QUIPU_ACTOR": "cli:test"}
    follower = subprocess.Popen([sys.executable, "-m", "quipu.cli", "events", "--follow",
                                 "--json"], cwd=project, env=env, stdout=subprocess.PIPE,
                                text=True)
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["type"] == "ProjectInitialized"
        quipu("workspace", "thought", "a thought written while someone follows the log",
              cwd=project)
        live = json.loads(follower.stdout.readline())
        assert live["type"] == "ThoughtLogged" and "follows the log" in live["thought"]
    finally:
        follower.kill()
        follower.wait(timeout=10)
