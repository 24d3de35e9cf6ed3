"""Command handlers: load aggregates, decide, touch the files, append atomically.

Every handler follows the same shape so that an error never leaves half-written state:

1. load the aggregates it needs from their streams;
2. decide (guards raise typed errors; nothing has been touched yet);
3. do the file work (snapshot into the blob store, restore a tree into a slot);
4. append every event of the command in ONE transaction;
5. if the append fails, undo the file work, then re-raise; a lost race is retried from step 1 a
   bounded number of times.

``mount`` swaps steps 3 and 4: it claims the slot in the log first and only then writes the
files, because the slot directory is shared and the loser of a race for it must not undo (clear)
the winner's files. If writing the files fails, it empties the slot and records it free again.

Blobs written before a failed append are harmless: they are content-addressed and unreferenced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID, uuid4

from quipu.core.aggregate import Aggregate, Meta
from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound, QuipuError
from quipu.core.log import stream_id
from quipu.core.ports import BlobStore, Clock, EventStore, NewEvent, SlotFiles
from quipu.core.project.aggregate import Cursor
from quipu.core.project.events import HostJoined, ProjectInitialized, ThoughtLogged
from quipu.core.project.record import project_record
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.validation import check_name, did_you_mean
from quipu.core.workspaces.aggregate import Slot, Workspace
from quipu.core.workspaces.versions import EMPTY_MANIFEST, Manifest, diff_manifests, text_diff

__all__ = ["Service", "Settings"]

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """The knobs workspace handlers need (the unit of work holds the reason rule and retries)."""

    slots: tuple[str, ...] = ("w1", "w2", "w3")


class Service:
    """Handles every workspace, slot, version and project command through the unit of work.

    Reads go through projections, not through here. ``mounted`` and ``save_slot`` are public:
    run handlers use them to find the workspace in a slot and to save it before a run.
    """

    def __init__(self, uow: UnitOfWork, blobs: BlobStore, slots: SlotFiles,
                 settings: Settings | None = None,
                 new_id: Callable[[], UUID] = uuid4) -> None:
        self.uow = uow
        self.blobs = blobs
        self.slots = slots
        self.settings = settings or Settings()
        self._new_id = new_id

    @property
    def store(self) -> EventStore:
        """The log (the unit of work's)."""
        return self.uow.store

    @property
    def clock(self) -> Clock:
        """Where time comes from (the unit of work's)."""
        return self.uow.clock

    def load(self, cls: type[A], name: str) -> A:
        """Rebuild an aggregate (see ``UnitOfWork.load``)."""
        return self.uow.load(cls, name)

    # --- helpers shared by the handlers --------------------------------------------------------

    def _slot(self, name: str) -> Slot:
        if name not in self.settings.slots:
            raise NotFound(f"there is no slot {name!r}", code="unknown_slot",
                           hint=f"{did_you_mean(name, self.settings.slots)}slots in this "
                           f"project: {', '.join(self.settings.slots)}")
        return self.load(Slot, name)

    def mounted(self, slot_name: str) -> tuple[Slot, Workspace]:
        """The slot and the workspace mounted in it (``Conflict(slot_empty)`` if none)."""
        slot = self._slot(slot_name)
        ws = self.load(Workspace, slot.check_occupied())
        return slot, ws

    def _manifest_of(self, ws: Workspace, number: int | None) -> bytes:
        if number is None:
            return EMPTY_MANIFEST.to_bytes()
        return self.blobs.get_bytes(ws.versions[number].manifest)

    # --- project -------------------------------------------------------------------------------

    def init_project(self, name: str, goal: str, *, actor: str, host: str | None = None,
                     slots: Sequence[str] | None = None) -> int:
        """Record the project's name and goal (once), and the host and slots that made it."""
        check_name(name, what="project")
        stream = stream_id("project", "project")
        if self.store.load(stream):
            raise Conflict("this project is already initialised", code="project_exists",
                           hint="run quipu status to see it; a second project directory on "
                           "this log joins it with `quipu init --join`")
        event = ProjectInitialized(actor=actor, reason=f"initialise project {name}",
                                   at=self.clock.now(), name=name, goal=goal.strip() or name,
                                   host=host, slots=list(slots) if slots is not None else None)
        return self.store.append([NewEvent(stream, 1, event)])[0]

    def join_project(self, host: str, slots: Sequence[str], blobs: str, *,
                     actor: str) -> dict[str, Any]:
        """Record that ``host`` joins the project with its own ``slots``.

        Refused, writing nothing: ``nothing_to_join`` on a log with no project;
        ``host_taken`` when a host of that name already created or joined it; ``slots_taken``
        when a slot name is another host's or was ever used on this log.
        """
        check_name(host, what="host")
        for slot in slots:
            check_name(slot, what="slot")
        if not slots:
            raise InvalidInput("a joining host needs at least one slot", code="invalid_slots",
                               hint="pass --slots N (1-64)")
        stream = stream_id("project", "project")
        records = self.store.load(stream)
        first, joined = project_record(self.store)
        if first is None:
            raise NotFound("this log holds no project to join", code="nothing_to_join",
                           hint="check eventstore.url (and eventstore.table); to start a new "
                           "project here run `quipu init` without --join")
        hosts = {e.host: list(e.slots) for e in joined}
        if first.host is not None:
            hosts = {first.host: list(first.slots or ()), **hosts}
        if host in hosts:
            raise Conflict(f"a host named {host!r} is already part of project {first.name!r} "
                           f"(slots {', '.join(hosts[host]) or 'none'})", code="host_taken",
                           hint="give this directory another name with --host NAME (hosts: "
                           f"{', '.join(sorted(hosts))}); if this directory IS {host} and "
                           "lost its .quipu/, add --again")
        owners = {slot: name for name, names in hosts.items() for slot in names}
        taken = sorted(slot for slot in slots
                       if slot in owners or self.store.load(stream_id("slot", slot)))
        if taken:
            whose = "; ".join(f"{slot} ({'host ' + owners[slot] if slot in owners else 'used'})"
                              for slot in taken)
            raise Conflict(f"slot name(s) already in use on this log: {whose}",
                           code="slots_taken",
                           hint="every host needs slot names of its own: choose another --host "
                           "(slots are named HOST-w1..) or list other names in quipu.yaml")
        event = HostJoined(actor=actor, reason=f"host {host} joins project {first.name}",
                           at=self.clock.now(), host=host, slots=list(slots), blobs=blobs)
        position = self.store.append([NewEvent(stream, len(records) + 1, event)])[0]
        return {"project": first.name, "goal": first.goal, "host": host, "slots": list(slots),
                "hosts": sorted({*hosts, host}), "position": position}

    # --- workspaces ----------------------------------------------------------------------------

    def create_workspace(self, name: str, goal: str, reason: str, *, actor: str,
                         from_workspace: str | None = None,
                         from_version: int | str | None = None) -> dict[str, Any]:
        """Create a workspace, empty or forked from another workspace's version."""
        check_name(name)
        if name in self.settings.slots:
            raise InvalidInput(f"{name!r} is the name of a slot", code="name_is_a_slot",
                               hint="slot names refer to slots everywhere (diff, save_version); "
                               "give the workspace a descriptive name such as 'baseline'")
        meta = self.uow.meta(actor, reason)
        if from_version is not None and from_workspace is None:
            raise InvalidInput("from_version needs from_workspace", code="from_version_alone",
                               hint="pass the workspace the version belongs to as from_workspace")

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, name)
            fork = None
            if from_workspace is not None:
                source = self.load(Workspace, check_name(from_workspace))
                source.check_exists()
                number = (version_number(source, from_version) if from_version is not None
                          else source.current)
                if number is None:
                    raise Conflict(f"workspace {from_workspace!r} has no versions to fork from",
                                   code="nothing_to_fork",
                                   hint="save_version in its slot first, or create an empty "
                                   "workspace")
                fork = (from_workspace, source.check_version(number))
            ws.create(meta, goal, fork=fork)
            positions = self.uow.commit(ws)
            return {"workspace": name, "forked_from": (f"{fork[0]}@v{fork[1].number}"
                                                       if fork else None),
                    "version": _label(ws.current), "position": positions[-1]}

        return self.uow.attempt(command)

    def mount(self, workspace: str, slot: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Copy a workspace's current version into a free slot."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, check_name(workspace))
            s = self._slot(slot)
            ws.mount(meta, s)
            if not self.slots.is_empty(slot):
                raise Conflict(
                    f"slot {slot} is free but still holds files at {self.slots.path(slot)}",
                    code="slot_not_empty",
                    hint="those files belong to no workspace; move them somewhere safe (or into "
                    "a workspace) and mount again; Quipu will not overwrite them")
            manifest = self._manifest_of(ws, ws.current)
            self._check_blobs(manifest)
            # Claim the slot in the log BEFORE writing its files. The slot directory is shared:
            # a mount that loses the race for it (and would then undo its file work) must never
            # have touched the files of the mount that won.
            positions = self.uow.commit(ws, s)
            try:
                self.slots.restore(slot, manifest)
            except BaseException:
                self._release_failed_mount(workspace, slot, meta)
                raise
            return {"workspace": workspace, "slot": slot, "version": _label(ws.current),
                    "path": str(self.slots.path(slot)), "position": positions[-1]}

        return self.uow.attempt(command)

    def _check_blobs(self, manifest: bytes) -> None:
        """Refuse, before anything is written, a tree whose file contents are not all intact."""
        for rel, entry in Manifest.from_bytes(manifest).files.items():
            if entry.kind == "file" and not self.blobs.exists(entry.sha256):
                raise IntegrityFailure(
                    f"the stored content of {rel} ({entry.sha256[:12]}) is missing",
                    code="blob_missing",
                    hint="restore the blob directory from a backup; nothing was written")
            if entry.kind == "file":
                # Checked before the mount is committed, so a damaged blob leaves no trace.
                self.blobs.verify(entry.sha256)

    def _release_failed_mount(self, workspace: str, slot: str, meta: Meta) -> None:
        """Undo a committed mount whose files could not be written: empty and free the slot."""
        # Best effort, each step on its own: the caller re-raises the original error.
        with contextlib.suppress(Exception):
            self.slots.clear(slot)
        with contextlib.suppress(Exception):
            ws, s = self.load(Workspace, workspace), self._slot(slot)
            ws.hibernate(Meta(meta.actor, f"mount failed while writing files: {meta.reason}",
                              self.clock.now()), s, None)
            self.uow.commit(ws, s)

    def save_slot(self, ws: Workspace, slot: str, meta: Meta, message: str,
                  trigger: str) -> tuple[int | None, bool]:
        """Snapshot the slot into ``ws`` as a new version (pending, not committed): (number or
        None for an empty slot of a new workspace, whether a version was created)."""
        digest, data = self.slots.snapshot(slot)
        if ws.current is None and not Manifest.from_bytes(data).files:
            return None, False  # an empty slot of a new workspace has nothing to save
        manifest = Manifest.from_bytes(data)
        before = len(ws.pending)
        number = ws.save(meta, digest, file_count=len(manifest.files),
                         total_bytes=manifest.total_bytes, message=message, trigger=trigger)
        return number, len(ws.pending) > before

    def save_version(self, slot: str, message: str, *, actor: str) -> dict[str, Any]:
        """Snapshot the slot; an unchanged slot returns its existing version."""
        meta = self.uow.meta(actor, message, what="message")

        def command() -> dict[str, Any]:
            _slot, ws = self.mounted(slot)
            number, created = self.save_slot(ws, slot, meta, meta.reason, "save")
            if number is None:
                raise Conflict(f"slot {slot} is empty and {ws.name!r} has no versions yet",
                               code="nothing_to_save",
                               hint="add files to the slot first")
            position = self.uow.commit(ws)[-1] if created else None
            info = ws.versions[number]
            return {"workspace": ws.name, "slot": slot, "version": f"v{number}",
                    "number": number, "created": created, "manifest": info.manifest,
                    "file_count": info.file_count, "total_bytes": info.total_bytes,
                    "position": position}

        return self.uow.attempt(command)

    def hibernate(self, slot: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Save the slot's edits (if any), then free the slot."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            s, ws = self.mounted(slot)
            number, created = self.save_slot(ws, slot, meta,
                                         f"auto-save before hibernate: {meta.reason}",
                                         "hibernate")
            ws.hibernate(meta, s, number if created else None)
            positions = self.uow.commit(ws, s)
            result = {"workspace": ws.name, "slot": slot, "auto_saved": created,
                      "saved_version": f"v{number}" if created else None,
                      "current_version": f"v{ws.current}" if ws.current else None,
                      "position": positions[-1]}
            try:
                self.slots.clear(slot)
            except QuipuError as exc:
                # Recorded and saved: the leftover files are only in the way of the next mount
                # (which refuses a free slot that holds files), so say so instead of failing.
                result["warning"] = {
                    "code": "slot_not_cleared",
                    "message": f"{ws.name!r} is hibernated and its edits saved, but the files "
                               f"in slot {slot} could not be removed: {exc.message}",
                    "hint": f"remove the files under {self.slots.path(slot)} by hand before "
                            f"mounting into {slot}; they are already saved as "
                            f"{ws.name}@v{ws.current}"}
            return result

        return self.uow.attempt(command)

    def rollback(self, slot: str, version: int | str, reason: str, *,
                 actor: str) -> dict[str, Any]:
        """Make the slot exactly a version's tree; unsaved edits are saved first."""
        meta = self.uow.meta(actor, reason)
        if not isinstance(version, str):
            parse_version(version)  # a malformed version is refused before anything is loaded

        def command() -> dict[str, Any]:
            _slot, ws = self.mounted(slot)
            number = version_number(ws, version)
            ws.check_version(number)
            before = self.slots.manifest(slot)
            saved, created = self.save_slot(ws, slot, meta,
                                        f"auto-save before rollback to v{number}: {meta.reason}",
                                        "rollback")
            changed = self.slots.restore(slot, self._manifest_of(ws, number))
            ws.rollback(meta, number, changed)
            try:
                positions = self.uow.commit(ws)
            except BaseException:
                self.slots.restore(slot, before)
                raise
            return {"workspace": ws.name, "slot": slot, "version": f"v{number}",
                    "files_reverted": changed,
                    "auto_saved_version": f"v{saved}" if created else None,
                    "position": positions[-1]}

        return self.uow.attempt(command)

    def tag_version(self, workspace: str, version: int | str, tag: str, reason: str | None, *,
                    actor: str) -> dict[str, Any]:
        """Name a version (protects it from pruning)."""
        meta = self.uow.meta(actor, reason)
        number = parse_version(version)

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, check_name(workspace))
            ws.tag(meta, number, tag)
            self.uow.commit(ws)
            return {"workspace": workspace, "version": f"v{number}", "tag": tag}

        return self.uow.attempt(command)

    def untag_version(self, workspace: str, tag: str, reason: str | None, *,
                      actor: str) -> dict[str, Any]:
        """Remove a tag."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, check_name(workspace))
            number = ws.tags.get(tag)
            ws.untag(meta, tag)
            self.uow.commit(ws)
            return {"workspace": workspace, "version": f"v{number}", "untagged": tag}

        return self.uow.attempt(command)

    def prune_versions(self, workspace: str, reason: str, *, actor: str,
                       version: int | str | None = None, from_version: int | str | None = None,
                       to_version: int | str | None = None, unprune: bool = False
                       ) -> dict[str, Any]:
        """Soft-prune (or unprune) one version or an inclusive range; tagged ones are skipped
        in a range and refused when named alone."""
        meta = self.uow.meta(actor, reason)
        if version is not None:
            numbers = [parse_version(version)]
        elif from_version is not None and to_version is not None:
            lo, hi = parse_version(from_version), parse_version(to_version)
            if lo > hi:
                raise InvalidInput(f"from_version v{lo} is after to_version v{hi}",
                                   code="bad_range", hint="swap them")
            numbers = list(range(lo, hi + 1))
        else:
            raise InvalidInput("say which versions", code="version_missing",
                               hint="pass version, or from_version and to_version")

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, check_name(workspace))
            done, skipped = [], []
            for n in numbers:
                if len(numbers) > 1 and (n not in ws.versions or ws.versions[n].tags
                                         or (not unprune and n == ws.current)):
                    skipped.append(f"v{n}")
                    continue
                before = len(ws.pending)
                (ws.unprune if unprune else ws.prune)(meta, n)
                if len(ws.pending) > before:
                    done.append(f"v{n}")
            self.uow.commit(ws)
            return {"workspace": workspace, "unpruned" if unprune else "pruned": done,
                    "skipped": skipped}

        return self.uow.attempt(command)

    def delete_workspace(self, workspace: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Retire an unmounted workspace (its history stays in the log)."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            ws = self.load(Workspace, check_name(workspace))
            ws.delete(meta)
            position = self.uow.commit(ws)[-1]
            return {"workspace": workspace, "deleted": True, "position": position}

        return self.uow.attempt(command)

    def log_thought(self, thought: str, *, actor: str, workspace: str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
        """Write down a thought; it is its own reason."""
        text = (thought or "").strip()
        if not text:
            raise InvalidInput("the thought is empty", code="thought_missing",
                               hint="write what you are thinking, e.g. 'loss plateaus at "
                               "epoch 3; the LR schedule may be too aggressive'")
        if workspace is not None:
            self.load(Workspace, check_name(workspace)).check_exists()
        event = ThoughtLogged(actor=actor, reason=text, at=self.clock.now(), thought=text,
                              workspace=workspace, run_id=run_id)
        position = self.store.append([NewEvent(self._new_id(), 1, event)])[0]
        return {"logged": True, "position": position, "workspace": workspace}

    def mark_seen(self, consumer: str, position: int, *, actor: str) -> dict[str, Any]:
        """Record that ``consumer`` has seen everything up to ``position`` (``CursorMoved``).

        Reading never changes state; "new since you last looked" moves only by this command.
        """
        check_name(consumer, what="consumer")
        head = self.store.head()
        if isinstance(position, bool) or not isinstance(position, int) or not (
                0 <= position <= head):
            raise InvalidInput(f"position {position!r} is not in the log (0..{head})",
                               code="invalid_position",
                               hint="pass the cursor_position that dashboard() returned")

        def command() -> dict[str, Any]:
            cursor = self.uow.load(Cursor, consumer)
            cursor.move(Meta(actor, f"{consumer} has seen everything up to position {position}",
                             self.clock.now()), position)
            logged = self.uow.commit(cursor)
            return {"consumer": consumer, "position": position, "event_position": logged[0]}

        return self.uow.attempt(command)

    # --- reads that need files -----------------------------------------------------------------

    def diff(self, target: str, against: str | None = None) -> dict[str, Any]:
        """Compare a slot, a workspace or ``workspace@vN`` with another (see resolve rules)."""
        left_ref, right_ref = self._diff_operands(target, against)
        left_manifest, left_label, left_read = left_ref
        right_manifest, right_label, right_read = right_ref
        changes = diff_manifests(left_manifest, right_manifest)
        text = []
        for f in changes.files:
            old = left_read(f.path) if f.old and f.old.kind == "file" else None
            new = right_read(f.path) if f.new and f.new.kind == "file" else None
            text.append(text_diff(f.path, old, new, left=left_label, right=right_label,
                                  old_entry=f.old, new_entry=f.new))
        return {
            "left": left_label, "right": right_label, "has_changes": changes.has_changes,
            "summary": changes.summary(),
            "files_changed": [{"path": f.path, "change": f.change} for f in changes.files],
            "diff_text": "".join(text),
        }

    _Operand = tuple[Manifest, str, Callable[[str], bytes]]

    def _version_operand(self, ws: Workspace, number: int | None) -> _Operand:
        manifest = Manifest.from_bytes(self._manifest_of(ws, number))
        label = f"{ws.name}@v{number}" if number is not None else f"{ws.name}@empty"

        def read(path: str) -> bytes:
            return self.blobs.get_bytes(manifest.files[path].sha256)

        return manifest, label, read

    def _operand(self, ref: str, context: Workspace | None) -> tuple[_Operand, Workspace, str]:
        """Resolve ``w1`` (slot), ``ws``, ``ws@vN``, ``ws@tag`` or ``vN`` (needs context)."""
        if ref in self.settings.slots:
            _slot, ws = self.mounted(ref)
            manifest = Manifest.from_bytes(self.slots.manifest(ref))
            return ((manifest, f"{ref} (working copy of {ws.name})",
                     lambda p: self.slots.read_file(ref, p)), ws, "slot")
        name, _, version = ref.partition("@")
        if not version and _is_version_ref(name):
            if context is None:
                raise InvalidInput(f"{ref!r} alone does not say which workspace",
                                   code="ambiguous_version",
                                   hint="write workspace@vN, or diff a slot against vN")
            ws, version = context, name
        else:
            ws = self.load(Workspace, check_name(name))
            ws.check_exists()
        if not version:
            return self._version_operand(ws, ws.current), ws, "workspace"
        number = version_number(ws, version)
        ws.check_version(number, allow_pruned=True)
        return self._version_operand(ws, number), ws, "version"

    def _diff_operands(self, target: str, against: str | None) -> tuple[_Operand, _Operand]:
        right, ws, kind = self._operand(target, None)
        if against is not None:
            left, _, _ = self._operand(against, ws)
        elif kind == "slot":
            left = self._version_operand(ws, ws.current)
        elif kind == "version":
            parent = ws.versions[int(right[1].rsplit("@v", 1)[1])].parent
            left = self._version_operand(ws, parent)
        else:
            raise InvalidInput(f"diff of workspace {target!r} needs something to compare with",
                               code="diff_needs_against",
                               hint="pass against='ws@vN', or diff its slot or one version")
        return left, right

    def aggregates(self, names: Sequence[str]) -> list[Workspace]:
        """Load several workspaces (for callers that need aggregate truth)."""
        return [self.load(Workspace, n) for n in names]


def _is_version_ref(text: str) -> bool:
    return len(text) > 1 and text[0] in "vV" and text[1:].isdigit()


def _label(number: int | None) -> str | None:
    """Versions are shown as 'v3' everywhere an agent or a person reads them."""
    return None if number is None else f"v{number}"


def version_number(ws: Workspace, ref: int | str) -> int:
    """The number ``ref`` names in ``ws``: one of its tags, or 'v3' / 3; a misspelt tag or
    version is refused with the closest one suggested."""
    if isinstance(ref, str) and ref.strip() in ws.tags:
        return ws.tags[ref.strip()]
    try:
        return parse_version(ref)
    except InvalidInput as exc:
        names = [*ws.tags, *(f"v{n}" for n in ws.versions)]
        exc.hint = did_you_mean(str(ref), names) + exc.hint + (
            f"; tags of {ws.name}: {', '.join(sorted(ws.tags))}" if ws.tags else "")
        raise


def parse_version(value: int | str | None) -> int:
    """Accept 3, '3' or 'v3'; anything else is InvalidInput."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if _is_version_ref(text):
            return int(text[1:])
        if text.isdigit() and int(text) > 0:
            return int(text)
    raise InvalidInput(f"{value!r} is not a version", code="invalid_version",
                       hint="write versions as v3 (or 3)")
