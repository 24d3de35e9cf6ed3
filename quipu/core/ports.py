"""The ports: small Protocols for everything outside the domain.

Adapters in ``quipu.adapters`` implement them; ``quipu.app.bootstrap`` picks which. Unit tests use
small fakes of these ports, never mocks of Quipu's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from quipu.core.messages import Event
from quipu.core.reviews.review import ReviewContext, ReviewVerdict

__all__ = [
    "BackendCapabilities",
    "BlobStore",
    "Clock",
    "ComputeProfiles",
    "EventStore",
    "Executor",
    "FileFacts",
    "Images",
    "LaunchSpec",
    "NewEvent",
    "PatternIndex",
    "RemoteObject",
    "RemoteSources",
    "Resources",
    "Reviewer",
    "RunIndex",
    "SlotFiles",
    "SourceFiles",
    "StageBackend",
    "StageExit",
    "StageHandle",
    "StoredRecord",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended at ``version`` of ``stream`` (optimistic concurrency)."""

    stream: UUID
    version: int
    event: Event


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One stored event, undecoded: its global position, stream, version, type and state."""

    position: int
    stream: UUID
    version: int
    type: str
    state: bytes


class EventStore(Protocol):
    """The one ordered, append-only, hash-chained log."""

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append all events atomically and return their positions.

        Raises ``Conflict(code="concurrency_conflict")`` when any (stream, version) is taken,
        and ``Unavailable`` when storage is locked or unreachable. Either way nothing is written.
        """
        ...

    def load(self, stream: UUID, *, after: int = 0) -> list[StoredRecord]:
        """The events of one stream with a version above ``after``, in version order
        (positions are 0: not needed there)."""
        ...

    def read(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[StoredRecord]:
        """Up to ``limit`` events with ``after < position <= until``, in log order."""
        ...

    def scan(
        self,
        *,
        after: int = 0,
        limit: int = 1000,
        until: int | None = None,
        types: Sequence[str] = (),
    ) -> list[tuple[int, str, bytes]]:
        """Like ``read`` but only (position, type, state) straight from the database cursor.

        The fast path for folding projections, which need neither stream ids nor versions.
        """
        ...

    def head(self) -> int:
        """The position of the newest event, 0 for an empty log."""
        ...

    def hash_at(self, position: int) -> str:
        """The chain hash of the newest event at or before ``position`` (positions may have
        gaps), or ``chain.GENESIS`` when there is none.

        What a reader stores beside its position to notice later that the log under it changed
        (an older file restored, a different log put in its place).
        """
        ...

    def wait_for_append(self, *, after: int, timeout: float) -> int:
        """Block until the head is beyond ``after`` or ``timeout`` seconds pass; return the head.

        What followers of the log (the executor, a caller waiting for its runs) use instead of
        polling on a timer. An append through this store wakes the call at once; an append by
        another process or connection wakes it soon after it commits (how soon depends on the
        adapter). A returned head ``<= after`` means the timeout passed with nothing new.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class BlobStore(Protocol):
    """Content-addressed storage for everything too big for the log (sha256 hex digests)."""

    def check(self) -> str:
        """Prove the store usable (a blob written and read back); a one-line summary for
        ``quipu doctor``, or the typed error of what failed."""
        ...

    def put_bytes(self, data: bytes) -> str:
        """Store bytes; return their digest. Storing the same bytes twice is a no-op."""
        ...

    def put_file(self, path: Path) -> tuple[str, int]:
        """Store a file's content; return (digest, size)."""
        ...

    def get_bytes(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; ``NotFound`` if absent.

        Raises ``IntegrityFailure(code="blob_corrupt")`` when the stored bytes do not hash to
        ``digest``.
        """
        ...

    def verify(self, digest: str) -> None:
        """Check the stored bytes against ``digest``: ``NotFound`` or ``blob_corrupt`` if not."""
        ...

    def copy_to(self, digest: str, dest: Path) -> None:
        """Write the blob to ``dest`` (parents created, replaced atomically).

        The hash is checked while copying: a damaged blob raises ``blob_corrupt`` and leaves
        ``dest`` untouched.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Whether ``digest`` is stored (its content is not read; one lookup, never a listing)."""
        ...

    def size(self, digest: str) -> int:
        """The stored size of ``digest`` in bytes (content not read); ``NotFound`` if absent."""
        ...

    def link_to(self, digest: str, dest: Path) -> None:
        """Make ``dest`` a read-only view of the blob: a hard link to the one local copy where
        the file system allows it, else a verified copy (``copy_to``).

        The local copy is checked before it is handed out (``blob_corrupt`` if it was changed;
        ``dest`` is then not created). The view shares its bytes with the store: it is made
        read-only (mode 0444), and any later read through the store verifies them again.
        """
        ...

    def adopt_file(self, path: Path) -> tuple[str, int]:
        """Store a file by moving it into the store (no copy where the file system allows it);
        leave a read-only view of the stored copy at ``path``; return (digest, size).

        For files nothing will write again (a finished stage's outputs). Across file systems
        it falls back to ``put_file`` and leaves ``path`` as it was.
        """
        ...


class SlotFiles(Protocol):
    """The slot directories agents edit (plain folders, no git)."""

    def snapshot(self, slot: str) -> tuple[str, bytes]:
        """Store every file of the slot as blobs; return (manifest digest, manifest bytes).

        Raises ``InvalidInput(code="symlink_escapes_slot")`` and
        ``Conflict(code="file_vanished")``.
        """
        ...

    def manifest(self, slot: str) -> bytes:
        """The slot's current manifest bytes, without storing anything."""
        ...

    def read_file(self, slot: str, rel: str) -> bytes:
        """The current bytes of one file in the slot."""
        ...

    def restore(self, slot: str, manifest: bytes) -> int:
        """Make the slot exactly the manifest's tree; return how many paths changed."""
        ...

    def is_dirty(self, slot: str, manifest_digest: str | None) -> bool:
        """Whether the slot's files differ from the given manifest (None = empty tree)."""
        ...

    def is_empty(self, slot: str) -> bool:
        """Whether the slot directory is absent or holds no files."""
        ...

    def clear(self, slot: str) -> None:
        """Remove every file from the slot (the directory itself stays)."""
        ...

    def path(self, slot: str) -> Path:
        """Where the slot lives on disk."""
        ...


class Clock(Protocol):
    """Where time comes from (injected so the domain stays deterministic)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class Executor(Protocol):
    """Runs queued stages: follows the log in the background and answers with run events.

    Built by ``quipu.app.bootstrap`` from ``quipu.yaml`` (the local-process executor by default)
    and started by ``quipu serve`` / ``quipu worker``. It claims queued runs (exactly one
    executor wins a claim), launches them, records heartbeats, metrics, exits and outputs, and
    applies every state's deadline (the supervisor).
    """

    def start(self) -> None:
        """Begin following the log in a background thread."""
        ...

    def stop(self) -> None:
        """Stop following the log and wait for the thread (stage processes keep running)."""
        ...


@dataclass(frozen=True, slots=True)
class Resources:
    """A stage's resolved compute profile: where it runs and with what.

    ``profile`` is the profile's name (``local``, ``cpu-small``, a project profile ...) and
    ``backend`` the ``StageBackend.name`` that runs it. ``image`` names the container image
    (None for the local-process backend); ``cpus`` (fractional), ``memory_mb`` and ``gpus``
    are limits (None = unlimited; 0 GPUs = none); ``timeout`` is the most seconds the stage may
    run before the executor cancels it; ``network`` whether the stage may reach the network.
    What a backend cannot enforce (the local backend enforces no limit) it records unchanged.
    """

    profile: str = "local"
    backend: str = "local"
    image: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    gpus: int = 0
    timeout: float | None = None
    network: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready facts (recorded with the launch)."""
        return {"profile": self.profile, "backend": self.backend, "image": self.image,
                "cpus": self.cpus, "memory_mb": self.memory_mb, "gpus": self.gpus,
                "timeout": self.timeout, "network": self.network}


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to launch: one run of one stage, in a run directory the executor built.

    ``run_dir`` is the run directory on the engine's machine. ``entrypoint`` is the stage
    script's path relative to it (``code/train.py``), started with ``args``; the backend picks
    the interpreter and wraps the script so it leaves ``.quipu/exit.json``
    (``quipu.adapters.executors._wrapper``). ``env`` holds the engine's variables whose values
    do not depend on where the run directory is (``QUIPU_RUN_ID``, ``QUIPU_STAGE``,
    ``PYTHONUNBUFFERED`` ...); ``paths`` the variables whose values are paths inside the run
    directory, relative to it (``QUIPU_INPUTS_DIR: "inputs"``; ``"."`` is the directory
    itself). A backend that mounts the run directory elsewhere (a container) passes that
    location to ``environment``. ``resources`` is the resolved profile.
    """

    run_id: str
    stage: str
    run_dir: Path
    entrypoint: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    paths: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)

    def environment(self, run_dir: str | None = None) -> dict[str, str]:
        """The engine's variables for a stage that sees its run directory at ``run_dir``
        (default: where it is on the engine's machine)."""
        base = str(self.run_dir) if run_dir is None else run_dir
        found = dict(self.env)
        for name, rel in self.paths.items():
            found[name] = base if rel in ("", ".") else f"{base.rstrip('/')}/{rel}"
        return found


@dataclass(frozen=True, slots=True)
class StageHandle:
    """A launched stage, as the backend that launched it knows it.

    Written to ``.quipu/launch.json`` (``to_dict``) so that an engine that restarted finds its
    stages again (``StageBackend.adopt``). ``ref`` is the backend's own reference (a process
    id, a container id); ``identity`` what tells that very stage from another one that reuses
    ``ref`` (a process's creation time, a container's creation timestamp; ``""`` when
    unknown); ``pid`` the stage's main process id on the engine's machine when there is one
    (0 otherwise), which ``RunLaunched`` records.
    """

    backend: str
    run_id: str
    ref: str
    identity: str = ""
    pid: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The handle as JSON-ready facts."""
        return {"backend": self.backend, "run_id": self.run_id, "ref": self.ref,
                "identity": self.identity, "pid": self.pid}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageHandle:
        """The handle ``to_dict`` wrote (``KeyError``/``ValueError`` on anything else)."""
        return cls(backend=str(data["backend"]), run_id=str(data["run_id"]),
                   ref=str(data["ref"]), identity=str(data.get("identity") or ""),
                   pid=int(data.get("pid") or 0))


@dataclass(frozen=True, slots=True)
class StageExit:
    """How a stage ended, as its backend saw it.

    ``known`` False: the stage is gone and nothing says how it ended (then the run is lost).
    ``exit_code`` is None when it died of ``signal``; ``oom`` that the kernel or the container
    runtime killed it for memory; ``error`` a one-line reason (the stage's exception line, or
    the backend's own: "out of memory (limit 512 MiB)", "container vanished").
    """

    known: bool
    exit_code: int | None = None
    signal: int | None = None
    oom: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BackendCapabilities:
    """What a backend can give a stage (a profile asking for more is refused at validation)."""

    gpu: bool = False
    network: bool = True
    preemptible: bool = False


class StageBackend(Protocol):
    """Where a stage process runs: a local process group, a container, a cloud machine.

    The ``Executor`` loop (claims, queue, deadlines, recovery, metrics, checkpoints and
    outputs) is the same for every backend; a backend only starts, watches, signals and finds
    again the stage's processes. Contract (tests/contracts/test_stage_backend.py runs it against
    every backend):

    * the stage sees its run directory (mounted where the backend likes) with ``inputs/`` and
      ``code/`` readable and ``outputs/`` and ``.quipu/`` writable, and ``spec.environment``
      for that location;
    * its combined stdout and stderr are appended to ``<run_dir>/.quipu/stdout.log`` (the
      executor caps that file): written there directly, or copied there by ``collect_logs``;
    * ``signal`` and ``kill`` reach every process the stage started (its whole tree), not only
      the first one;
    * a stage ends with the wrapper's ``.quipu/exit.json`` when it could write one; the
      backend's own status (a return code, a container's state) fills in what that file lacks.

    Every method but ``launch`` and ``prepare`` is safe to call for a stage that is gone.
    """

    name: str
    """The backend's name in configuration and profiles (``local``, ``docker``)."""

    def capabilities(self) -> BackendCapabilities:
        """What this backend can offer stages."""
        ...

    def check(self) -> list[str]:
        """What stops this backend from launching stages now, each saying how to fix it
        (a daemon down, a missing image); empty when it is ready. Cheap: called by
        ``quipu doctor`` and before a launch."""
        ...

    def prepare(self, spec: LaunchSpec) -> None:
        """Make ready what the launch needs besides the run directory (an image, a log file).

        Raises ``RuntimeError`` (or ``OSError``) with a reason when the stage cannot start;
        the executor records that as the run's launch failure.
        """
        ...

    def launch(self, spec: LaunchSpec) -> StageHandle:
        """Start the stage and return at once with its handle (after ``prepare``)."""
        ...

    def alive(self, handle: StageHandle) -> bool:
        """Whether the stage is still running (an exited-but-unreaped process is not)."""
        ...

    def poll(self, handle: StageHandle) -> StageExit | None:
        """None while the stage runs; else how it ended."""
        ...

    def wait(self, handle: StageHandle, timeout: float) -> StageExit | None:
        """Block until the stage ends or ``timeout`` seconds pass (then None)."""
        ...

    def signal(self, handle: StageHandle, signum: int) -> None:
        """Deliver ``signum`` to every process of the stage (``SIGTERM``: please stop)."""
        ...

    def kill(self, handle: StageHandle, *, grace: float = 0.0) -> None:
        """End the stage's whole process tree: ``SIGTERM`` first and, if anything of it is
        still alive after ``grace`` seconds, ``SIGKILL``. With ``grace`` 0 it kills at once
        and does not wait. (The executor's own loop does not block: it signals, and kills
        with no grace when its ``kill_grace`` has passed.)"""
        ...

    def collect_logs(self, handle: StageHandle) -> None:
        """Bring ``.quipu/stdout.log`` up to date with what the stage printed (a no-op for a
        backend whose stage writes there itself)."""
        ...

    def adopt(self, run_id: str, run_dir: Path,
              handle: StageHandle | None) -> StageHandle | None:
        """Find a stage again after the engine restarted.

        ``handle`` is what ``launch`` returned (read back from ``.quipu/launch.json``; None
        when that file holds none). Returns the handle to watch (``poll`` then says whether it
        still runs and how it ended), or None when the backend knows of no such stage. A
        handle's ``ref`` reused by something else (a new process with the same pid) is not
        the stage: ``alive`` and ``poll`` check ``identity``.
        """
        ...

    def release(self, handle: StageHandle) -> None:
        """The run's end is recorded: free what the backend still holds for it (leftover
        processes of its tree, a stopped container)."""
        ...

    def facts(self, spec: LaunchSpec, handle: StageHandle) -> dict[str, Any]:
        """Environment provenance of the launched stage, recorded with ``RunLaunched``
        (interpreter, packages, GPUs; a container's image id and digest)."""
        ...


class ComputeProfiles(Protocol):
    """The compute profiles a project knows (built in and from ``quipu.yaml``)."""

    def names(self) -> list[str]:
        """Every profile's name, sorted."""
        ...

    def resolve(self, name: str | None) -> Resources:
        """The resources of profile ``name`` (None: the project's default profile).

        Raises ``InvalidInput`` with code ``unknown_profile`` (the hint lists the known ones)
        or ``profile_backend_not_configured`` (its backend is not set up here).
        """
class Reviewer(Protocol):
    """Looks at a run before it is queued (the pre-run review; see ``core.reviews.review``).

    Built by ``quipu.app.bootstrap`` from ``svs:`` in ``quipu.yaml`` (``static``, ``llm``,
    ``command``) and called by the review adapter in a worker thread, bounded by a deadline.
    A reviewer that cannot answer (unreachable, too slow, a reply that is not the JSON asked
    for) returns ``core.reviews.review.failed(...)``; it should not raise, and what it raises
    anyway is recorded the same way.
    """

    name: str

    def review(self, context: ReviewContext) -> ReviewVerdict:
        """The reviewer's verdict on the run described by ``context``."""
        ...


class RunIndex(Protocol):
    """Read-side facts run commands need across runs (served by the runs view).

    A command that uses one records what it chose in its event (an input's ``via`` and run id,
    a finalized run's comparison), so replaying the log never depends on a projection.
    """

    def latest_output(self, workspace: str, stage: str, signal: str) -> str | None:
        """The newest succeeded, not-bad run of ``stage`` that produced ``signal``."""
        ...

    def previous_finalized(self, workspace: str, stage: str, metric: str,
                           exclude: str) -> tuple[str, float] | None:
        """(run_id, value) of the newest finalized run of the stage with a value."""
        ...

    def best(self, workspace: str, stage: str, metric: str, exclude: str, *,
             direction: str) -> tuple[str, float] | None:
        """(run_id, value) of the stage's reference result: the newest finalized run tagged
        ``best*``, else the best finalized value so far by ``direction`` (``maximize`` or
        ``minimize``). Values of runs that did not run to their end never count."""
        ...


class PatternIndex(Protocol):
    """The approved failure patterns, asked by the reviewers and the monitor (the views
    implement it). Rows as ``patterns_view.approved`` returns them; build matchers' input with
    ``core.patterns.detection.ApprovedPattern.from_row``."""

    def approved_patterns(self, *, stage: str | None = None) -> list[dict[str, Any]]:
        """Approved patterns that apply to ``stage`` (every approved one when None)."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state as of ``version`` of its stream (a cache, never a record).

    ``last_hash`` is the chain hash of the event at ``version``: the snapshot is valid only while
    the log holds that very event there. ``schema`` is the aggregate's ``SNAPSHOT_SCHEMA``; a
    snapshot of another schema is ignored.
    """

    stream: UUID
    kind: str
    schema: int
    version: int
    last_hash: str
    state: bytes


class SnapshotStore(Protocol):
    """Where aggregate snapshots are cached (per machine; losing them only costs a replay)."""

    def get(self, stream: UUID) -> Snapshot | None:
        """The newest snapshot of ``stream``, or None."""
        ...

    def put(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the stream's newest (replacing an older one)."""
        ...

    def discard(self, stream: UUID) -> None:
        """Forget the stream's snapshot (it no longer matches the log)."""
        ...

    def close(self) -> None:
        """Release files or connections."""
        ...


@dataclass(frozen=True)
class FileFacts:
    """What a source file is, read from its headers without loading its data.

    ``arrays``: each array's name -> (shape, dtype name, dtype str), for npy (one array, named
    ``""``) and npz; ``columns``/``rows``: a csv's header and data row count; ``ragged``: the
    line number and field count of the first csv row whose field count differs from the
    header's; ``unreadable``: why the file is not the format it was said to be (then the format
    facts are None).
    """

    path: str
    size: int
    sha256: str
    arrays: dict[str, tuple[tuple[int, ...], str, str]] | None = None
    columns: list[str] | None = None
    rows: int | None = None
    ragged: tuple[int, int] | None = None
    unreadable: str | None = None


class SourceFiles(Protocol):
    """The local files sources point at: resolved, hashed and described from their headers."""

    def realpath(self, path: str) -> str:
        """``path`` with every symlink resolved (absolute)."""
        ...

    def describe(self, path: str, *, fmt: str, delimiter: str | None = None) -> FileFacts:
        """Size, sha256 and the format's facts of the regular file at ``path``.

        Raises ``NotFound(source_file_missing)`` when nothing is there and
        ``InvalidInput(source_not_a_file)`` when it is not a regular file.
        """
        ...

    def digest(self, path: str) -> tuple[str, int]:
        """(sha256, size) of the file now; ``NotFound(source_file_missing)`` if it is gone."""
        ...

    def describe_blob(self, digest: str, *, fmt: str,
                      delimiter: str | None = None) -> FileFacts:
        """``describe`` of a blob in the blob store, read in place (a promoted artifact);
        ``NotFound(unknown_blob)`` when the store does not hold it."""
        ...


@dataclass(frozen=True)
class RemoteObject:
    """What a remote object's metadata says, read in one request without its content.

    ``generation`` changes whenever the object is written (GCS's object generation);
    ``crc32c`` and ``md5`` are the checksums the store reports (base64, as GCS gives them;
    ``md5`` is absent for composite objects).
    """

    uri: str
    size: int
    generation: str
    crc32c: str | None = None
    md5: str | None = None

    def facts(self) -> dict[str, Any]:
        """The fingerprint as recorded on a source: generation, crc32c, md5, size."""
        return {"generation": self.generation, "crc32c": self.crc32c, "md5": self.md5,
                "size": self.size}


class RemoteSources(Protocol):
    """Remote objects sources point at (``gs://bucket/object``): described without a
    download, and staged once into the content-addressed blob store."""

    def stat(self, uri: str) -> RemoteObject:
        """The object's metadata (one request).

        Raises ``NotFound(source_object_missing)``, ``NotFound(gcs_bucket_not_found)``,
        ``Unavailable`` (``gcs_access_denied``, ``gcs_credentials_missing``,
        ``gcs_unreachable``, ``gcs_error``).
        """
        ...

    def stage(self, expected: RemoteObject) -> tuple[str, int]:
        """Stream exactly that generation of the object into the blob store, hashing it on
        the way; return (sha256, size). Raises ``IntegrityFailure(source_changed)`` when the
        bytes that arrived are not that generation's (it was overwritten meanwhile)."""
        ...

    def has_blob(self, digest: str) -> bool:
        """Whether the blob store holds ``digest`` (one lookup)."""
        ...

    def verify_blob(self, digest: str) -> None:
        """Check the stored blob against its hash (``NotFound``, ``blob_corrupt``)."""
        ...


class Images(Protocol):
    """The project's container images on the daemon the Docker backend uses."""

    def list_images(self) -> list[dict[str, Any]]:
        """The project's images, newest first."""
        ...

    def inspect(self, ref: str) -> dict[str, Any]:
        """One image by tag or id (``NotFound(image_not_found)`` when there is none)."""
        ...

    def build(self, *, base: str | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Build the project image (or reuse the one with the same content hash); each line
        of build output goes to ``progress`` as it arrives."""
        ...
