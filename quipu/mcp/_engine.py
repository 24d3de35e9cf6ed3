"""The project a running server drives: absent until ``initialize_project``, reopened by
``reload_config``.

``quipu serve`` outside any project still starts, so an agent can create one over MCP; until it
does, every project tool answers ``[no_project]`` with the call that fixes it. ``reload_config``
validates ``quipu.yaml`` first and then swaps in a project opened afresh from it (the composition
root builds every adapter again, so a changed slot count, reason length, data root or executor
setting all take effect); a bad file is refused and the running project is left as it was.
Stage processes survive the swap: the old executor stops following the log without ending
them, and the new one adopts them (docs/executor.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu.core.errors import Conflict, NotFound, QuipuError

if TYPE_CHECKING:
    from quipu.app.facade import Quipu

__all__ = ["Engine"]

log = logging.getLogger("quipu.mcp")


@dataclass
class Engine:
    """The open project of a server (or none yet) and how to open, create or reload it."""

    start: Path
    """Where the server was started for: ``--project``, else ``$QUIPU_PROJECT``, else the cwd."""
    actor: str
    workers: bool = True
    """Start the executor with the project (``quipu serve``); tests of the tools may not."""
    opened: Quipu | None = None

    @property
    def q(self) -> Quipu:
        """The open project, or ``NotFound(no_project)`` telling how to create one."""
        if self.opened is None:
            raise NotFound(f"no Quipu project at or above {self.start}", code="no_project",
                           hint="call initialize_project(name, goal) to create one there, or "
                           "start the server with --project PATH")
        return self.opened

    def open(self) -> None:
        """Open the project at or above ``start`` if there is one (else stay without)."""
        from quipu.app.bootstrap import open_project

        try:
            self._adopt(open_project(self.start, actor=self.actor))
        except QuipuError as exc:
            if exc.code != "no_project":
                raise

    def initialize(self, *, name: str | None, goal: str, slots: int,
                   path: str | None) -> dict[str, Any]:
        """Create a project at ``path`` (relative to ``start``; default ``start``) and drive it."""
        from quipu.app.bootstrap import describe_log, init_project

        if self.opened is not None:
            raise Conflict(f"this server already drives the project at {self.opened.root}",
                           code="project_exists",
                           hint="use status(); to create another project, start a server "
                           "there with --project PATH")
        root = (self.start / path) if path else self.start
        q = init_project(root, name=name, goal=goal, slots=slots, actor=self.actor)
        self._adopt(q)
        return {"project": q.config.name, "root": str(q.root), "goal": q.config.goal,
                "slots": q.config.slot_names(), "log": describe_log(q.root, q.config),
                "next": "create_workspace(name, goal, reason), then mount() it into a slot"}

    def reload(self) -> dict[str, Any]:
        """Re-read ``quipu.yaml`` into the running server (see the module docstring)."""
        from quipu.app.bootstrap import open_project
        from quipu.app.config import read_config

        old = self.q
        config, _digest = read_config(old.root)  # invalid_config: refused, nothing changed
        before = old.config.model_dump(mode="json")
        after = config.model_dump(mode="json")
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if not changed:
            return {"reloaded": False, "changed": [], "slots": old.config.slot_names(),
                    "reason_min_length": old.config.reason_min_length}
        fresh = open_project(old.root, actor=self.actor)
        # Start the new workers before stopping the old ones: a failure to open or start
        # leaves ``old`` serving as it was, and two executors on one log never run a stage
        # twice (they claim runs through the log), so the overlap is harmless.
        self._adopt(fresh)
        try:
            old.close()
        except Exception:
            log.exception("the project as it was before reload_config did not close cleanly")
        return {"reloaded": True, "changed": changed, "slots": fresh.config.slot_names(),
                "reason_min_length": fresh.config.reason_min_length}

    def _adopt(self, q: Quipu) -> None:
        try:
            if self.workers:
                # The workers execute queued runs in this process; without them run() would
                # queue forever, so a missing executor fails here, loudly.
                q.start_workers()
        except BaseException:
            q.close()
            raise
        self.opened = q

    def close(self) -> None:
        """Stop the workers and close the project, if one is open."""
        if self.opened is not None:
            self.opened.close()
            self.opened = None
