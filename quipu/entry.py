"""The ``quipu`` script.

A plain ``quipu status`` (optionally with ``--project``/``-p`` and ``--actor``) is answered from
STATE.md when ``quipu.app.quick_status`` proves it shows the project as it is now, without
importing the command line or opening the project; every other command line, and a status
whose proof fails, goes to ``quipu.cli`` as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main"]

_VALUED = {"-p": "project", "--project": "project", "--actor": "actor"}


def plain_status(argv: list[str]) -> tuple[bool, Path | None]:
    """Whether ``argv`` (without the program name) is a plain ``status``, and its project."""
    project: Path | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in _VALUED and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif eq and name in ("--project", "--actor"):
            i += 1
        elif arg == "status" and i == len(argv) - 1:
            return True, project
        else:
            return False, None
        if _VALUED.get(name) == "project":
            project = Path(value)
    return False, None


def main() -> None:
    """Run the ``quipu`` command line."""
    plain, project = plain_status(sys.argv[1:])
    if plain:
        from quipu.app.quick_status import read_state_md

        text = read_state_md(project)
        if text is not None:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            return
    from quipu.cli import main as cli

    cli()
