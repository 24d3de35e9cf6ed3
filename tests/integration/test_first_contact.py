"""What a person sees first: `quipu init`, `quipu --version` and a fresh project's STATE.md.

Through the real entry point in a subprocess (``tests/cli_runner.py``), as at a terminal.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from cli_runner import quipu


def test_init_prints_the_project_its_slots_and_the_next_steps(tmp_path: Path) -> None:
    out = quipu("init", "digits", "--goal", "reach 98% on sklearn digits", "--slots", "2",
                cwd=tmp_path).stdout
    root = (tmp_path / "digits").resolve()
    assert " object at 0x" not in out
    assert f"Created project 'digits' in {root}" in out
    assert "goal:  reach 98% on sklearn digits" in out
    assert "slots: w1, w2 (all free)" in out
    assert "log:   .quipu/events.db (SQLite)" in out
    assert f"quipu --project {root} serve" in out
    assert "quipu status" in out


def test_a_fresh_projects_state_md_lists_every_slot_as_free(tmp_path: Path) -> None:
    quipu("init", "p", "--slots", "3", cwd=tmp_path)
    root = tmp_path / "p"
    text = (root / "STATE.md").read_text()
    assert "(no slots configured)" not in text
    assert "- w1: (free)\n- w2: (free)\n- w3: (free)\n" in text
    # the plain `quipu status` answered from the key shows the same text
    assert quipu("status", cwd=root).stdout == text + "\n"


def test_state_md_keeps_listing_the_free_slots_beside_a_mounted_one(tmp_path: Path) -> None:
    quipu("init", "p", "--slots", "2", cwd=tmp_path)
    root = tmp_path / "p"
    quipu("workspace", "create", "base", "--goal", "a first baseline", "--reason",
          "start from a simple baseline", cwd=root)
    quipu("workspace", "mount", "base", "w2", "--reason", "work on the baseline now", cwd=root)
    text = (root / "STATE.md").read_text()
    assert "- w1: (free)\n- w2: base" in text
    assert quipu("status", cwd=root).stdout == text + "\n"


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    assert quipu("--version", cwd=tmp_path).stdout.strip() == f"quipu {version('quipu')}"
