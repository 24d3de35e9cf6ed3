"""The log folded in memory into what the exports describe: workspaces, versions, pipeline
runs, runs (with every lifecycle transition), content, checkpoints and sources, plus the
lineage edges.

The edges come from ``projections.lineage_facts`` (the same facts the lineage view stores), so
an export and ``get_lineage`` never disagree about what is connected to what.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from quipu.core.errors import NotFound
from quipu.core.log import decode
from quipu.core.messages import Event
from quipu.core.ports import EventStore
from quipu.core.project.events import ProjectInitialized
from quipu.core.runs import lifecycle
from quipu.core.runs.events import RunExited, RunFinalized, RunLaunched, RunRequested
from quipu.core.workspaces.events import PipelineRunStarted, VersionSaved, WorkspaceCreated
from quipu.projections.lineage_facts import FACTS, Node, facts, kind_of, merge

__all__ = ["History", "RunRecord", "Transition", "read_history"]

PAGE = 2000
_SVS_KEYS = frozenset({"findings", "blocked", "stop", "suggested"})


@dataclass
class Transition:
    """A run entering ``state`` at ``at`` (position ``position``), recorded by ``actor``."""

    state: str
    at: str
    position: int
    actor: str


@dataclass
class RunRecord:
    """One stage run as the exports need it."""

    request: RunRequested
    requested_at: str
    transitions: list[Transition] = field(default_factory=list)
    launched: RunLaunched | None = None
    launched_at: str | None = None
    launched_position: int | None = None
    exited: RunExited | None = None
    exited_position: int | None = None
    ended_at: str | None = None
    finalized: RunFinalized | None = None
    svs_facts: list[tuple[int, Node]] = field(default_factory=list)
    """(position, the run node's facts) of each event that added SVS findings or reasons."""

    def svs(self, until: int | None = None) -> dict[str, Any]:
        """The run's SVS facts up to position ``until`` (default: all): ``findings`` counts
        per severity, ``blocked``, ``stop``, ``suggested`` (the lineage facts, merged the
        lineage view's way, so the exports and ``get_lineage`` agree)."""
        out: dict[str, Any] = {}
        for position, node in self.svs_facts:
            if until is not None and position > until:
                break
            out = merge(out, node) or out
        return {k: v for k, v in out.items() if k in _SVS_KEYS}


@dataclass
class History:
    """The log up to ``position``, folded."""

    position: int = 0
    project: str = "quipu"
    workspaces: dict[str, tuple[WorkspaceCreated, str]] = field(default_factory=dict)
    versions: dict[tuple[str, int], tuple[VersionSaved, str]] = field(default_factory=dict)
    pipelines: dict[str, tuple[PipelineRunStarted, str]] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    content: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sha256 -> {size, kind, name, producer, path}: the first description of the content."""
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """name -> {format, size, sha256, status, uri, description, promoted_from}: the newest
    description of each source (registered or promoted)."""
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sha256 -> {run, name, step, size, files}: the first description of a checkpoint."""
    edges: dict[tuple[str, str, str, str], None] = field(default_factory=dict)
    """(src, kind, dst, name) lineage edges, upstream -> downstream."""

    def fold(self, position: int, event: Event) -> None:
        """Add one event (events must come in log order)."""
        self.position = position
        at = event.at.isoformat()
        if isinstance(event, ProjectInitialized):
            self.project = event.name
        elif isinstance(event, WorkspaceCreated):
            self.workspaces[event.workspace] = (event, at)
        elif isinstance(event, VersionSaved):
            self.versions[(event.workspace, event.number)] = (event, at)
        elif isinstance(event, PipelineRunStarted):
            self.pipelines[event.pipeline_run_id] = (event, at)
        elif isinstance(event, RunRequested):
            self.runs[event.run_id] = RunRecord(event, at)
            self.runs[event.run_id].transitions.append(
                Transition(lifecycle.State.REQUESTED.value, at, position, event.actor))
        else:
            self._run_event(position, event, at)
        found = facts(event)
        for n in found.nodes:
            if kind_of(n.id) == "output":
                known = self.content.setdefault(n.id.partition(":")[2], {})
                for k, v in n.attrs.items():
                    known.setdefault(k, v)
            elif kind_of(n.id) == "checkpoint":
                known = self.checkpoints.setdefault(n.id.partition(":")[2], {})
                for k, v in n.attrs.items():
                    known.setdefault(k, v)
            elif kind_of(n.id) == "source":
                self.sources.setdefault(n.id.partition(":")[2], {}).update(n.attrs)
            elif kind_of(n.id) == "run" and (n.adds or _SVS_KEYS & n.attrs.keys()):
                record = self.runs.get(n.id.partition(":")[2])
                if record is not None:
                    record.svs_facts.append((position, n))
        for e in found.edges:
            self.edges[(e.src, e.kind, e.dst, e.name)] = None

    def _run_event(self, position: int, event: Event, at: str) -> None:
        record = self.runs.get(str(event.__dict__.get("run_id", "")))
        # Only the lifecycle's events move a run (SourceConsumed, ArtifactPromoted name a run too).
        if record is None or event.TYPE not in _RUN_TRIGGERS:
            return
        # lineage_facts' argument: a trigger's target does not depend on the state before.
        state = lifecycle.state_after(lifecycle.State.REQUESTED, event).value
        if isinstance(event, RunLaunched):
            record.launched, record.launched_at, record.launched_position = event, at, position
        elif isinstance(event, RunExited):
            record.exited, record.exited_position = event, position
        elif isinstance(event, RunFinalized):
            record.finalized = event
        if lifecycle.is_ended(state) and record.ended_at is None:
            record.ended_at = at
        elif state == lifecycle.State.RUNNING.value:
            record.ended_at = None  # adopted back
        record.transitions.append(Transition(state, at, position, event.actor))

    def closure(self, node: str) -> set[str]:
        """Every node upstream of ``node``, itself included."""
        into: dict[str, list[str]] = {}
        for src, _, dst, _ in self.edges:
            into.setdefault(dst, []).append(src)
        seen, frontier = {node}, [node]
        while frontier:
            frontier = [s for n in frontier for s in into.get(n, ()) if s not in seen]
            seen.update(frontier)
        return seen

    def check_run(self, run_id: str) -> None:
        """``NotFound(unknown_run)`` unless the log (so far) holds the run."""
        if run_id not in self.runs:
            import difflib

            close = difflib.get_close_matches(run_id, sorted(self.runs), n=1)
            raise NotFound(f"the log up to position {self.position} holds no run {run_id!r}",
                           code="unknown_run",
                           hint=(f"did you mean {close[0]!r}? " if close else "")
                           + "list runs with `quipu run list WORKSPACE`")

    def check_workspace(self, name: str) -> None:
        """``NotFound(unknown_workspace)`` unless the log (so far) holds the workspace."""
        if name not in self.workspaces:
            import difflib

            close = difflib.get_close_matches(name, sorted(self.workspaces), n=1)
            raise NotFound(f"the log up to position {self.position} holds no workspace "
                           f"{name!r}", code="unknown_workspace",
                           hint=(f"did you mean {close[0]!r}? " if close else "")
                           + "`quipu status` lists the workspaces")


_TYPES = sorted({ProjectInitialized.TYPE, *FACTS})
_RUN_TRIGGERS = frozenset(t.event for t in lifecycle.EVENT_TRIGGERS)


def read_history(store: EventStore, *, until: int | None = None) -> History:
    """Fold the log up to ``until`` (default: its head) into a ``History``."""
    head = store.head() if until is None else min(until, store.head())
    history = History()
    after = 0
    while True:
        page = store.read(after=after, limit=PAGE, until=head, types=_TYPES)
        for record in page:
            history.fold(record.position, decode(record).event)
        if len(page) < PAGE:
            break
        after = page[-1].position
    history.position = head
    return history


def fold_events(events: Iterable[tuple[int, Event]]) -> History:
    """A ``History`` of events already decoded, in log order (for tests and tools)."""
    history = History()
    for position, event in events:
        history.fold(position, event)
    return history
