"""The run directory: build it before a stage starts, read what the stage left behind.

Layout (names from :mod:`quipu.rundir`, the contract shared with the SDK; see ``docs/sdk.md``)::

    runs_dir/<run_id>/
      code/        the workspace version's files
      inputs/      one read-only file or tree per declared input
      outputs/     where the stage writes
      .quipu/      stage.json (ours), the SDK's side files, and the executor's own:
                   resume/<run_id>/<name>/<step_N|latest>/ (a resumed run's given checkpoints),
                   launch.json (pid, inputs), tree.json (the tree before the stage ran),
                   stdout.log (+ stdout.head, stdout.tail, stdout.cap.json while capping),
                   exit.json (written by the wrapper)

Everything the executor must remember about a running stage is written here, not kept only in
memory, so an executor that restarts can pick the run up again.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quipu.adapters._storage import storage_errors
from quipu.core.errors import IntegrityFailure, InvalidInput, NotFound
from quipu.core.ports import BlobStore
from quipu.core.workspaces.versions import FileEntry, Manifest
from quipu.rundir import (
    CHECKPOINTS,
    CODE_DIR,
    INPUTS_DIR,
    OUTPUTS,
    OUTPUTS_DIR,
    SIDE_DIR,
    STAGE_JSON,
    STOP_REQUESTED,
    file_digest,
    output_filename,
    tree_digest,
)

__all__ = [
    "CappedLog",
    "build_run_dir",
    "collect_checkpoints",
    "collect_outputs",
    "read_json",
    "restore_checkpoints",
    "tree_changes",
    "tree_snapshot",
    "write_json",
    "write_stop_request",
]

_IGNORED_TOP = {OUTPUTS_DIR, SIDE_DIR}


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is absent or not (yet) valid JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically with ``obj`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_stop_request(run_dir: Path, reason: str, requested_by: str) -> bool:
    """Ask the stage in ``run_dir`` to stop: write ``.quipu/stop_requested`` (the SDK's
    ``should_stop()`` looks for it; the stage may read why from it). False when this machine
    has no such run directory (another host runs the stage, or it was never built)."""
    side = Path(run_dir) / SIDE_DIR
    if not side.is_dir():
        return False
    write_json(side / STOP_REQUESTED, {"reason": reason, "requested_by": requested_by})
    return True


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def restore_manifest(blobs: BlobStore, manifest: Manifest, dest: Path, *,
                     link: bool = False) -> None:
    """Write a manifest's tree under ``dest`` (files with their modes, symlinks as links).

    With ``link`` the files are read-only views of the stored blobs (``BlobStore.link_to``:
    hard links, no copy) and keep mode 0444: for inputs, which no stage may change.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for rel, entry in sorted(manifest.files.items()):
        target = dest / rel
        if not target.resolve().is_relative_to(dest.resolve()):
            raise InvalidInput(f"manifest path {rel!r} leaves its tree",
                               code="manifest_path_escapes", hint="the manifest is damaged")
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "symlink":
            os.symlink(entry.target or "", target)
            continue
        if link:
            blobs.link_to(entry.sha256, target)
            continue
        blobs.copy_to(entry.sha256, target)
        os.chmod(target, entry.mode & 0o777)


RESUME_DIR = "resume"
"""Under ``.quipu/``: the checkpoints a resumed run was given, one tree per source run."""


def restore_checkpoints(blobs: BlobStore, resume: Mapping[str, Any],
                        run_dir: Path) -> dict[str, Any]:
    """Restore a resumed run's checkpoints; return stage.json's ``resume_from``.

    Each checkpoint ``{name, step, sha256, size, manifest}`` of run ``resume["run_id"]`` goes
    to ``.quipu/resume/<run_id>/<name>/<step_N|latest>/``, every file verified while it is
    copied, and the tree is then hashed as the SDK hashed it when it was saved: a missing or
    damaged blob, or a tree that hashes otherwise, raises naming the checkpoint, so the launch
    fails rather than start a stage on other state than the one recorded. They lie outside
    ``.quipu/checkpoints/`` and ``checkpoints.jsonl``, so they are never recorded again as the
    new run's own.
    """
    source = str(resume["run_id"])
    base = run_dir / SIDE_DIR / RESUME_DIR / source
    given: list[dict[str, Any]] = []
    for point in resume["checkpoints"]:
        name, step = str(point["name"]), point.get("step")
        leaf = "latest" if step is None else f"step_{int(step)}"
        which = f"checkpoint {name!r} {leaf} of run {source}"
        dest = base / name / leaf
        try:
            manifest = Manifest.from_bytes(blobs.get_bytes(str(point["manifest"])))
            restore_manifest(blobs, manifest, dest)
        except (NotFound, IntegrityFailure) as exc:
            raise type(exc)(f"{which} cannot be restored: {exc.message}", code=exc.code,
                            hint="the blob store lost or damaged it; resume from another run "
                            "or checkpoint") from exc
        digest, size = tree_digest(dest)
        if digest != point["sha256"]:
            raise IntegrityFailure(
                f"{which} restored as sha256 {digest}, recorded as {point['sha256']}",
                code="checkpoint_corrupt",
                hint="the blob store holds other content than was saved; resume from another "
                "run or checkpoint")
        given.append({"name": name, "step": step, "sha256": digest, "size": size,
                      "path": dest.relative_to(run_dir).as_posix()})
    return {"run_id": source, "stage": resume.get("stage"), "checkpoints": given}


def _make_read_only(path: Path) -> None:
    if path.is_symlink():
        return
    if path.is_dir():
        for child in path.iterdir():
            _make_read_only(child)
        os.chmod(path, 0o555)
    else:
        os.chmod(path, 0o444)


def _stage_input(blobs: BlobStore, how: Mapping[str, Any], dest: Path,
                 producer: Callable[[str], dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Put one input at ``dest``; return what was given (sha256, size, where from)."""
    kind = how.get("kind")
    if kind in ("upstream", "run"):
        run_id, signal = str(how["run_id"]), str(how["signal"])
        outputs = producer(run_id)
        if signal not in outputs:
            raise NotFound(f"run {run_id} recorded no output {signal!r} "
                           f"(it has: {', '.join(sorted(outputs)) or 'none'})",
                           code="input_missing", hint="rerun the producing stage")
        out = outputs[signal]
        if out.get("kind") == "directory":
            manifest = Manifest.from_bytes(blobs.get_bytes(str(out["manifest"])))
            restore_manifest(blobs, manifest, dest, link=True)
        else:
            # A read-only hard link to the stored output: a large artifact is not copied.
            blobs.link_to(str(out["sha256"]), dest)
        return {"sha256": out["sha256"], "size": out["size"], "kind": out.get("kind", "file"),
                "producer": run_id, "signal": signal}
    if kind == "path":
        source = Path(str(how["path"]))
        if not source.exists():
            raise NotFound(f"input path {source} does not exist", code="input_missing",
                           hint="pass an existing absolute path in inputs_override")
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=False)
            digest, size = tree_digest(dest)
            return {"sha256": digest, "size": size, "kind": "directory", "path": str(source)}
        shutil.copyfile(source, dest)
        digest, size = file_digest(dest)
        if how.get("source") and how.get("sha256") and digest != how["sha256"]:
            # A registered source is pinned to its hash at run(): never stage other bytes.
            raise IntegrityFailure(
                f"the file of source {how['source']!r} ({source}) changed since the run was "
                f"requested: registered sha256 {how['sha256']}, now sha256 {digest}",
                code="source_changed",
                hint="put the registered content back, or register the new content under a "
                "new name and run again")
        return {"sha256": digest, "size": size, "kind": "file", "path": str(source),
                **({"source": how["source"]} if how.get("source") else {})}
    if kind == "blob":
        # A gs:// source's object, staged into the blob store when the run was requested:
        # handed over like a stored output (a read-only link, verified against its sha256).
        digest = str(how["sha256"])
        try:
            blobs.link_to(digest, dest)
        except NotFound as exc:
            raise NotFound(f"the staged copy of source {how.get('source')!r} "
                           f"({how.get('uri')}) is not in the blob store: {exc.message}",
                           code="input_missing",
                           hint="run again: the object is staged again when the run is "
                           "requested") from exc
        return {"sha256": digest, "size": int(how.get("size") or blobs.size(digest)),
                "kind": "file", "source": how.get("source"), "uri": how.get("uri")}
    raise InvalidInput(f"inputs of kind {kind!r} cannot be staged by the local executor yet",
                       code="input_kind_unsupported",
                       hint="pass inputs_override={input: '/absolute/path'}")


def build_run_dir(run_dir: Path, *, blobs: BlobStore, run_id: str, stage: str, workspace: str,
                  manifest_digest: str, config: Mapping[str, Any],
                  inputs: Mapping[str, Mapping[str, Any]],
                  outputs: Mapping[str, Mapping[str, Any]],
                  producer: Callable[[str], dict[str, dict[str, Any]]],
                  resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create the run directory from scratch; return the inputs given {name: {sha256, ...}}.

    Every file restored from the blob store is checked against its hash while it is copied. If
    anything fails (``blob_corrupt``, a missing input, a full disk), the half-built directory
    is removed and the error raised: a stage never starts on damaged code or inputs.
    ``resume`` is the request's ``resume_from``: its checkpoints are restored under
    ``.quipu/resume/`` (see :func:`restore_checkpoints`) and named in stage.json.
    """
    _remove_tree(run_dir)
    try:
        with storage_errors(run_dir, "building the run directory"):
            return _build(run_dir, blobs=blobs, run_id=run_id, stage=stage,
                          workspace=workspace, manifest_digest=manifest_digest, config=config,
                          inputs=inputs, outputs=outputs, producer=producer, resume=resume)
    except BaseException:
        _remove_tree(run_dir)
        raise


def _remove_tree(run_dir: Path) -> None:
    if run_dir.exists():
        _make_writable(run_dir)
        shutil.rmtree(run_dir)


def _build(run_dir: Path, *, blobs: BlobStore, run_id: str, stage: str, workspace: str,
           manifest_digest: str, config: Mapping[str, Any],
           inputs: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, Mapping[str, Any]],
           producer: Callable[[str], dict[str, dict[str, Any]]],
           resume: Mapping[str, Any] | None) -> dict[str, Any]:
    for sub in (CODE_DIR, INPUTS_DIR, OUTPUTS_DIR, SIDE_DIR):
        (run_dir / sub).mkdir(parents=True)
    restore_manifest(blobs, Manifest.from_bytes(blobs.get_bytes(manifest_digest)),
                     run_dir / CODE_DIR)
    given: dict[str, Any] = {}
    described: dict[str, Any] = {}
    for name, how in sorted(inputs.items()):
        dest = run_dir / INPUTS_DIR / output_filename(name, how.get("type"))
        given[name] = _stage_input(blobs, how, dest, producer)
        _make_read_only(dest)
        described[name] = {"path": dest.relative_to(run_dir).as_posix(),
                           "type": how.get("type"), "format": how.get("format"),
                           "schema": how.get("schema")}
    os.chmod(run_dir / INPUTS_DIR, 0o555)
    stage_json = {
        "run_id": run_id, "stage": stage, "workspace": workspace, "config": dict(config),
        "inputs": described,
        "outputs": {n: {"type": o.get("type"), "format": o.get("format"),
                        "schema": o.get("schema"),
                        **({"contract": o["contract"]} if o.get("contract") else {})}
                    for n, o in sorted(outputs.items())},
    }
    if resume is not None:
        stage_json["resume_from"] = restore_checkpoints(blobs, resume, run_dir)
    (run_dir / SIDE_DIR / STAGE_JSON).write_text(json.dumps(stage_json, indent=2))
    write_json(run_dir / SIDE_DIR / "tree.json", tree_snapshot(run_dir))
    return given


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755)
    os.chmod(root, 0o755)


# --- what the stage did -------------------------------------------------------------------------


def tree_snapshot(run_dir: Path) -> dict[str, list[int]]:
    """Every path outside ``outputs/`` and ``.quipu/``: [size, mtime_ns] (dirs: [-1, 0])."""
    found: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        rel_dir = here.relative_to(run_dir)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in _IGNORED_TOP]
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for d in dirnames:
            found[(rel_dir / d).as_posix()] = [-1, 0]
        for f in filenames:
            if rel_dir == Path(".") and f in _IGNORED_TOP:
                continue
            stat = (here / f).lstat()
            found[(rel_dir / f).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return found


def tree_changes(before: Mapping[str, list[int]], after: Mapping[str, list[int]]) -> list[str]:
    """Paths created, changed or removed between two snapshots, sorted."""
    return sorted(p for p in set(before) | set(after)
                  if list(before.get(p, [])) != list(after.get(p, [])))


def _last_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The last ``outputs.jsonl`` line per output name (complete lines only)."""
    try:
        data = (run_dir / SIDE_DIR / OUTPUTS).read_bytes()
    except OSError:
        return {}
    records: dict[str, dict[str, Any]] = {}
    for line in data.rpartition(b"\n")[0].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            records[record["name"]] = record
    return records


def _store_dir(blobs: BlobStore, root: Path, *,
               adopt: bool = False) -> tuple[str, int, int]:
    """Store every file of a tree and its manifest; return (manifest digest, size, files).

    With ``adopt`` the files move into the store and stay as read-only links (``adopt_file``).
    """
    entries: dict[str, FileEntry] = {}
    for file in _files(root):
        mode = file.stat().st_mode & 0o777
        digest, size = blobs.adopt_file(file) if adopt else blobs.put_file(file)
        entries[file.relative_to(root).as_posix()] = FileEntry(
            sha256=digest, size=size, mode=mode)
    manifest = Manifest(files=entries)
    return blobs.put_bytes(manifest.to_bytes()), manifest.total_bytes, len(entries)


def collect_outputs(run_dir: Path, declared: Mapping[str, Mapping[str, Any]],
                    blobs: BlobStore) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Store each declared output; return ({name: record}, problems)."""
    outputs_dir = (run_dir / OUTPUTS_DIR).resolve()
    records = _last_records(run_dir)
    stored: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, spec in sorted(declared.items()):
        path = outputs_dir / output_filename(name, spec.get("type"))
        record = records.get(name, {})
        if isinstance(record.get("path"), str):
            candidate = (run_dir / record["path"]).resolve()
            if candidate.is_relative_to(outputs_dir) and candidate.exists():
                path = candidate
        rel = f"outputs/{path.relative_to(outputs_dir).as_posix()}"
        if not path.exists():
            problems.append(f"declared output {name!r} was not written (expected {rel})")
            continue
        stats = record.get("stats") if isinstance(record.get("stats"), dict) else {}
        if path.is_dir():
            digest, size = tree_digest(path)
            if size == 0:
                problems.append(f"declared output {name!r} is an empty directory ({rel})")
                continue
            manifest, _, count = _store_dir(blobs, path, adopt=True)
            stored[name] = {"kind": "directory", "sha256": digest, "size": size,
                            "manifest": manifest, "files": count, "path": rel,
                            "type": spec.get("type"), "stats": stats}
            continue
        if path.stat().st_size == 0:
            problems.append(f"declared output {name!r} is empty ({rel})")
            continue
        # Moved into the store, a read-only link left in outputs/: stored once, never copied.
        digest, size = blobs.adopt_file(path)
        stored[name] = {"kind": "file", "sha256": digest, "size": size, "path": rel,
                        "type": spec.get("type"), "stats": stats}
    return stored, problems


def collect_checkpoints(run_dir: Path, blobs: BlobStore,
                        offset: int) -> tuple[list[dict[str, Any]], int]:
    """Store the checkpoints recorded in ``checkpoints.jsonl`` after byte ``offset``; return
    their records ``{name, step, sha256, size, manifest, files, path}`` and the new offset.

    Only complete lines are read (the stage may be writing the next one). A line whose
    directory is gone or no longer has the recorded hash (a later save of the same name and
    step replaced it; its own line follows) is skipped, as is anything outside
    ``.quipu/checkpoints/``.
    """
    try:
        with (run_dir / SIDE_DIR / CHECKPOINTS).open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    complete = data[:data.rfind(b"\n") + 1]
    root = (run_dir / SIDE_DIR / "checkpoints").resolve()
    stored: list[dict[str, Any]] = []
    for line in complete.splitlines():
        try:
            record = json.loads(line)
            name, step, path = record["name"], record.get("step"), record["path"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(name, str) or not isinstance(path, str) or not (
                step is None or (isinstance(step, int) and not isinstance(step, bool))):
            continue
        directory = (run_dir / path).resolve()
        if not directory.is_relative_to(root) or not directory.is_dir():
            continue
        digest, size = tree_digest(directory)
        if digest != record.get("sha256"):
            continue
        manifest, _, files = _store_dir(blobs, directory)
        stored.append({"name": name, "step": step, "sha256": digest, "size": size,
                       "manifest": manifest, "files": files, "path": path})
    return stored, offset + len(complete)


# --- the captured stdout/stderr -----------------------------------------------------------------


class CappedLog:
    """``.quipu/stdout.log`` kept under ``limit`` bytes while the stage writes to it.

    The stage appends to the file through an O_APPEND descriptor, so the executor may cut it
    under the writer's feet: once it grows past ``limit``, the first half is kept in
    ``stdout.head`` (once), the newest half in ``stdout.tail``, and the bytes read are freed.
    ``finish()`` joins head, a truncation notice and the newest tail back into ``stdout.log``.
    Its state lives in ``stdout.cap.json`` so a restarted executor continues where it was.

    Freeing is a hole punched over the bytes already read (Linux): the writer keeps appending
    at the end and nothing it writes during a cut is lost; ``offset`` is where unread bytes
    start. Where holes cannot be punched the file is truncated instead, and bytes the stage
    appends during the cut are lost.
    """

    def __init__(self, quipu_dir: Path, limit: int) -> None:
        self.live = quipu_dir / "stdout.log"
        self.head = quipu_dir / "stdout.head"
        self.tail = quipu_dir / "stdout.tail"
        self.state_file = quipu_dir / "stdout.cap.json"
        self.limit = max(limit, 1024)
        state = read_json(self.state_file) or {}
        self.dropped = int(state.get("dropped", 0))
        self.offset = int(state.get("offset", 0))
        self.finished = bool(state.get("finished", False))

    @property
    def truncated(self) -> bool:
        """Whether anything was cut."""
        return self.head.exists()

    def _unread(self) -> bytes:
        """The live file's bytes from ``offset`` on (what no cut has taken yet)."""
        if not self.live.exists():
            return b""
        with self.live.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read()

    def check(self) -> None:
        """Cut the live file if it grew past the limit."""
        try:
            size = self.live.stat().st_size
        except OSError:
            return
        if size - self.offset <= self.limit or self.finished:
            return
        half = self.limit // 2
        with self.live.open("r+b") as handle:
            if not self.head.exists():
                self.head.write_bytes(handle.read(half))
                kept_head = half
            else:
                kept_head = 0
            start = max(size - half, self.offset)
            handle.seek(start)
            newest = handle.read(size - start)
            end = start + len(newest)
            if _punch_hole(handle.fileno(), end):
                offset = end  # bytes appended since the read stay, past the hole
            else:
                handle.truncate(0)  # bytes appended since the read are lost (and not counted)
                offset = 0
        old_tail = self.tail.stat().st_size if self.tail.exists() else 0
        self.tail.write_bytes(newest)
        self.dropped += old_tail + end - self.offset - kept_head - len(newest)
        self.offset = offset
        write_json(self.state_file, {"dropped": self.dropped, "offset": self.offset})

    def view(self) -> bytes:
        """What the log holds now: while capping, the head, a notice and the newest bytes."""
        live = self._unread()
        if self.finished or not self.truncated:
            return live
        notice = f"\n[quipu: about {self.dropped} bytes of output dropped here]\n".encode()
        tail = self.tail.read_bytes() if self.tail.exists() else b""
        return self.head.read_bytes() + notice + tail + live

    def finish(self) -> tuple[Path, bool]:
        """Assemble the final log; return (path, truncated). Calling it again changes nothing."""
        if self.finished:
            return self.live, self.truncated
        self.check()
        if not self.truncated:
            return self.live, False
        half = self.limit // 2
        newest = (self.tail.read_bytes() if self.tail.exists() else b"") + self._unread()
        if len(newest) > half:
            self.dropped += len(newest) - half
            newest = newest[-half:]
        notice = (f"\n[quipu: output exceeded {self.limit} bytes; about {self.dropped} bytes "
                  "in the middle were dropped]\n").encode()
        tmp = self.live.with_name(".stdout.log.tmp")
        tmp.write_bytes(self.head.read_bytes() + notice + newest)
        os.replace(tmp, self.live)
        self.tail.unlink(missing_ok=True)
        self.finished, self.offset = True, 0
        write_json(self.state_file, {"dropped": self.dropped, "finished": True})
        return self.live, True


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@functools.cache
def _fallocate() -> Any:
    """libc's ``fallocate64``, or None where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.fallocate64
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def _punch_hole(fd: int, length: int) -> bool:
    """Free the file's first ``length`` bytes in place (they read as zeros, the size stays)."""
    function = _fallocate()
    if function is None or length <= 0:
        return False
    # Fails (EOPNOTSUPP) on filesystems without holes; the caller then truncates.
    return bool(function(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, length) == 0)
