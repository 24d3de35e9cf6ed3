"""The Workspace and Slot aggregates: they decide (check guards, emit events) and apply (fold).

Consistency boundaries:

* **Workspace** owns its goal, its versions (numbers only grow, never reused, even across a
  delete and re-create), tags (unique per workspace, protect from pruning), soft pruning, the
  version its files are currently at (``current``) and the slot it is mounted in.
* **Slot** owns who occupies it: one workspace at a time.

Mounting and hibernating touch both, and are appended in one transaction, so two agents racing
for one slot, or a delete racing a mount, end with one winner and nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.errors import Conflict, InvalidInput, NotFound
from quipu.core.messages import Event
from quipu.core.validation import check_name, did_you_mean
from quipu.core.workspaces.events import (
    FinalizationCleared,
    FinalizationRequired,
    PipelineRunStarted,
    SlotClaimed,
    SlotReleased,
    SlotRolledBack,
    VersionPruned,
    VersionSaved,
    VersionTagged,
    VersionUnpruned,
    VersionUntagged,
    WorkspaceCreated,
    WorkspaceDeleted,
    WorkspaceHibernated,
    WorkspaceMounted,
)

__all__ = ["Slot", "VersionInfo", "Workspace"]


@dataclass
class VersionInfo:
    """What the Workspace aggregate needs to know about one version."""

    number: int
    manifest: str
    parent: int | None
    file_count: int = 0
    total_bytes: int = 0
    pruned: bool = False
    tags: set[str] = field(default_factory=set)


class Workspace(Aggregate):
    """An isolated line of experimentation: a goal and a history of versions."""

    KIND = "workspace"
    SNAPSHOT_SCHEMA = 1

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.exists = False
        self.goal = ""
        self.versions: dict[int, VersionInfo] = {}
        self.last_number = 0
        self.tags: dict[str, int] = {}
        self.slot: str | None = None
        self.current: int | None = None
        self.awaiting: dict[str, tuple[str, str]] = {}  # run_id -> (stage, state): the gate

    # --- guards --------------------------------------------------------------------------------

    def check_exists(self) -> None:
        """Raise NotFound unless the workspace exists now."""
        if not self.exists:
            raise NotFound(f"workspace {self.name!r} does not exist", code="unknown_workspace",
                           hint="list workspaces with status(), or create it with "
                           "create_workspace(name, goal, reason)")

    def check_version(self, number: int, *, allow_pruned: bool = False) -> VersionInfo:
        """The version, or NotFound; a pruned one is a Conflict unless allowed."""
        info = self.versions.get(number)
        if info is None:
            raise NotFound(f"workspace {self.name!r} has no version v{number}",
                           code="unknown_version",
                           hint=f"{did_you_mean(f'v{number}', self._labels())}versions of "
                           f"{self.name}: {self._known()}; list them with "
                           "manage_versions(workspace, action='list')")
        if info.pruned and not allow_pruned:
            raise Conflict(f"v{number} of {self.name!r} is pruned", code="version_pruned",
                           hint="bring it back first with manage_versions(action='unprune')")
        return info

    def _labels(self) -> list[str]:
        return [f"v{n}" for n in self.versions]

    def _known(self) -> str:
        """The versions for a hint: all of them when few, else the range (a hint stays short
        however many versions a workspace has)."""
        numbers = sorted(self.versions)
        if not numbers:
            return "none yet"
        if len(numbers) <= 12:
            return ", ".join(f"v{n}" for n in numbers)
        return f"v{numbers[0]}..v{numbers[-1]} ({len(numbers)} versions)"

    def latest(self) -> int | None:
        """The highest version number that is not pruned."""
        live = [n for n, v in self.versions.items() if not v.pruned]
        return max(live) if live else None

    # --- decisions -----------------------------------------------------------------------------

    def create(self, meta: Meta, goal: str, *,
               fork: tuple[str, VersionInfo] | None = None) -> None:
        """Bring the workspace into being, empty or from (source workspace, its version)."""
        check_name(self.name)
        if self.exists:
            raise Conflict(f"workspace {self.name!r} already exists", code="workspace_exists",
                           hint="pick another name, or inspect_workspace() the existing one")
        if not goal.strip():
            raise InvalidInput("a workspace needs a goal", code="goal_missing",
                               hint="say what this line of work is trying to achieve")
        self.trigger(WorkspaceCreated(**meta.fields(), workspace=self.name, goal=goal.strip(),
                                      forked_from=fork[0] if fork else None,
                                      from_version=fork[1].number if fork else None))
        if fork:
            source, info = fork
            self.trigger(VersionSaved(
                **meta.fields(), workspace=self.name, number=self.last_number + 1,
                manifest=info.manifest, parent=None, file_count=info.file_count,
                total_bytes=info.total_bytes, message=f"forked from {source}@v{info.number}",
                trigger="fork"))

    def mount(self, meta: Meta, slot: Slot) -> None:
        """Claim ``slot`` for this workspace."""
        self.check_exists()
        if self.slot is not None:
            raise Conflict(f"workspace {self.name!r} is already mounted in slot {self.slot}",
                           code="already_mounted",
                           hint=f"work in slot {self.slot}, or hibernate({self.slot!r}) first")
        slot.check_free()
        self.trigger(WorkspaceMounted(**meta.fields(), workspace=self.name, slot=slot.name,
                                      version=self.current))
        slot.trigger(SlotClaimed(**meta.fields(), slot=slot.name, workspace=self.name))

    def save(self, meta: Meta, manifest: str, *, file_count: int, total_bytes: int,
             message: str, trigger: str = "save") -> int:
        """Record the slot's tree as a new version; an unchanged tree returns the current one."""
        self.check_exists()
        if self.current is not None and self.versions[self.current].manifest == manifest:
            return self.current
        number = self.last_number + 1
        self.trigger(VersionSaved(**meta.fields(), workspace=self.name, number=number,
                                  manifest=manifest, parent=self.current, file_count=file_count,
                                  total_bytes=total_bytes, message=message, trigger=trigger))
        return number

    def hibernate(self, meta: Meta, slot: Slot, saved_version: int | None) -> None:
        """Leave ``slot`` (the caller saved any edits first)."""
        self.trigger(WorkspaceHibernated(**meta.fields(), workspace=self.name, slot=slot.name,
                                         saved_version=saved_version))
        slot.trigger(SlotReleased(**meta.fields(), slot=slot.name, workspace=self.name))

    def rollback(self, meta: Meta, number: int, files_changed: int) -> None:
        """Record that the slot now holds version ``number``'s tree."""
        self.check_exists()
        self.check_version(number)
        assert self.slot is not None
        self.trigger(SlotRolledBack(**meta.fields(), workspace=self.name, slot=self.slot,
                                    number=number, files_changed=files_changed))

    def tag(self, meta: Meta, number: int, tag: str) -> None:
        """Name a version; tags are unique within a workspace."""
        self.check_exists()
        check_name(tag, what="tag")
        if tag[0] in "vV" and tag[1:].isdigit():
            raise InvalidInput(f"tag {tag!r} looks like a version number", code="tag_is_version",
                               hint="ws@v3 must always mean version 3; pick a tag like 'best-acc'")
        self.check_version(number, allow_pruned=True)
        holder = self.tags.get(tag)
        if holder == number:
            return
        if holder is not None:
            raise Conflict(f"tag {tag!r} already names v{holder} of {self.name!r}",
                           code="tag_taken",
                           hint=f"untag it first: manage_versions(action='untag', tag={tag!r})")
        self.trigger(VersionTagged(**meta.fields(), workspace=self.name, number=number, tag=tag))

    def untag(self, meta: Meta, tag: str) -> None:
        """Remove a tag."""
        self.check_exists()
        if tag not in self.tags:
            raise NotFound(f"workspace {self.name!r} has no tag {tag!r}", code="unknown_tag",
                           hint=f"{did_you_mean(tag, self.tags)}list tags with "
                           "inspect_workspace(name)")
        self.trigger(VersionUntagged(**meta.fields(), workspace=self.name,
                                     number=self.tags[tag], tag=tag))

    def prune(self, meta: Meta, number: int) -> None:
        """Hide a version; refused for tagged versions and for the version the slot is at."""
        self.check_exists()
        info = self.check_version(number, allow_pruned=True)
        if info.pruned:
            return
        if info.tags:
            raise Conflict(f"v{number} of {self.name!r} is tagged {sorted(info.tags)}",
                           code="version_tagged",
                           hint="tags protect versions; untag it first if you really mean it")
        if number == self.current:
            raise Conflict(f"v{number} is the version {self.name!r} is currently at",
                           code="version_current",
                           hint="save or roll back to another version first")
        self.trigger(VersionPruned(**meta.fields(), workspace=self.name, number=number))

    def unprune(self, meta: Meta, number: int) -> None:
        """Bring a pruned version back."""
        self.check_exists()
        if self.check_version(number, allow_pruned=True).pruned:
            self.trigger(VersionUnpruned(**meta.fields(), workspace=self.name, number=number))

    def check_gate(self) -> None:
        """The finalization gate: refuse new runs while an ended run awaits its verdict."""
        if self.awaiting:
            pending = ", ".join(f"{run_id} ({stage}, {state})"
                                for run_id, (stage, state) in sorted(self.awaiting.items()))
            first = sorted(self.awaiting)[0]
            raise Conflict(
                f"workspace {self.name!r} has runs that ended but are not finalized: {pending}",
                code="finalization_required",
                hint=f"say what each result means first: finalize_run({first!r}, results) "
                "(list them with list_unfinalized_runs; one finalize_run('prun-...', results) "
                "closes every ended stage of a pipeline run); canceled runs never block")

    def start_pipeline(self, meta: Meta, *, pipeline_run_id: str, version: int,
                       runs: dict[str, str], detail: dict[str, str],
                       experiment_group: str | None) -> None:
        """Record that stages of the pipeline start on ``version`` (checks the gate first)."""
        self.check_exists()
        self.check_gate()
        self.trigger(PipelineRunStarted(
            **meta.fields(), workspace=self.name, pipeline_run_id=pipeline_run_id,
            version=version, stages=list(runs), runs=runs, detail=detail,
            experiment_group=experiment_group))

    def hold_gate(self, meta: Meta, run_id: str, stage: str, state: str) -> None:
        """An ended run now holds the gate."""
        if run_id not in self.awaiting:
            self.trigger(FinalizationRequired(**meta.fields(), workspace=self.name,
                                              run_id=run_id, stage=stage, state=state))

    def clear_gate(self, meta: Meta, run_id: str, why: str) -> None:
        """A run no longer holds the gate."""
        if run_id in self.awaiting:
            self.trigger(FinalizationCleared(**meta.fields(), workspace=self.name,
                                             run_id=run_id, why=why))

    def delete(self, meta: Meta) -> None:
        """Retire the workspace; refused while it is mounted."""
        self.check_exists()
        if self.slot is not None:
            raise Conflict(f"workspace {self.name!r} is mounted in slot {self.slot}",
                           code="workspace_mounted",
                           hint=f"hibernate({self.slot!r}, reason) first; its edits are saved")
        self.trigger(WorkspaceDeleted(**meta.fields(), workspace=self.name))

    # --- folding -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The folded state as JSON values (a snapshot)."""
        return {
            "exists": self.exists, "goal": self.goal, "last_number": self.last_number,
            "versions": [[v.number, v.manifest, v.parent, v.file_count, v.total_bytes, v.pruned,
                          sorted(v.tags)] for v in self.versions.values()],
            "tags": self.tags, "slot": self.slot, "current": self.current,
            "awaiting": {run: list(held) for run, held in self.awaiting.items()},
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a snapshot's state."""
        self.exists, self.goal = bool(data["exists"]), str(data["goal"])
        self.last_number = int(data["last_number"])
        self.versions = {int(n): VersionInfo(int(n), str(m), p, int(c), int(b), bool(pr), set(t))
                         for n, m, p, c, b, pr, t in data["versions"]}
        self.tags = {str(k): int(v) for k, v in data["tags"].items()}
        self.slot, self.current = data["slot"], data["current"]
        self.awaiting = {str(r): (str(st), str(sa)) for r, (st, sa) in data["awaiting"].items()}

    def apply(self, event: Event) -> None:
        """Fold one event of this workspace's stream."""
        if isinstance(event, WorkspaceCreated):
            self.exists, self.goal = True, event.goal
            self.versions, self.tags, self.slot, self.current = {}, {}, None, None
        elif isinstance(event, VersionSaved):
            self.versions[event.number] = VersionInfo(event.number, event.manifest, event.parent,
                                                      event.file_count, event.total_bytes)
            self.last_number = max(self.last_number, event.number)
            self.current = event.number
        elif isinstance(event, WorkspaceMounted):
            self.slot = event.slot
        elif isinstance(event, WorkspaceHibernated):
            self.slot = None
        elif isinstance(event, SlotRolledBack):
            self.current = event.number
        elif isinstance(event, VersionTagged):
            self.tags[event.tag] = event.number
            self.versions[event.number].tags.add(event.tag)
        elif isinstance(event, VersionUntagged):
            self.tags.pop(event.tag, None)
            self.versions[event.number].tags.discard(event.tag)
        elif isinstance(event, VersionPruned):
            self.versions[event.number].pruned = True
        elif isinstance(event, VersionUnpruned):
            self.versions[event.number].pruned = False
        elif isinstance(event, WorkspaceDeleted):
            self.exists = False
        elif isinstance(event, FinalizationRequired):
            self.awaiting[event.run_id] = (event.stage, event.state)
        elif isinstance(event, FinalizationCleared):
            self.awaiting.pop(event.run_id, None)


class Slot(Aggregate):
    """A directory agents edit in; holds one workspace at a time."""

    KIND = "slot"
    SNAPSHOT_SCHEMA = 1

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.occupant: str | None = None

    def check_free(self) -> None:
        """Raise Conflict if another workspace is mounted here."""
        if self.occupant is not None:
            raise Conflict(f"slot {self.name} already holds workspace {self.occupant!r}",
                           code="slot_occupied",
                           hint=f"hibernate({self.name!r}, reason) first (it saves the edits), "
                           "or mount into a free slot")

    def check_occupied(self) -> str:
        """The workspace mounted here, or Conflict if the slot is empty."""
        if self.occupant is None:
            raise Conflict(f"slot {self.name} is empty", code="slot_empty",
                           hint=f"mount a workspace first: mount(workspace, {self.name!r}, "
                           "reason)")
        return self.occupant

    def state_dict(self) -> dict[str, Any]:
        """The folded state as JSON values (a snapshot)."""
        return {"occupant": self.occupant}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        """Take a snapshot's state."""
        self.occupant = data["occupant"]

    def apply(self, event: Event) -> None:
        """Fold one event of this slot's stream."""
        if isinstance(event, SlotClaimed):
            self.occupant = event.workspace
        elif isinstance(event, SlotReleased):
            self.occupant = None
