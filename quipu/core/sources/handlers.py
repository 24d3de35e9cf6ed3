"""Source commands: register, update, retire, delete, and the content check a use makes.

Registering a local file checks everything before anything is written: the metadata
(``metadata.check_metadata``), the path (``files.SourcePaths``: inside the roots, no symlink
out), then the file's facts against the metadata (``files.file_problems``). The file is
referenced by its sha256, not copied (docs/sources.md says why): ``check_content`` re-hashes it
whenever the source is used and refuses a file that changed, naming both hashes.

A ``gs://`` object is described from its metadata at registration (``RemoteSources.stat``: one
request, no download): it must exist and have the declared size; its fingerprint (generation,
crc32c, md5, size) is recorded. The first run that reads it stages it once into the blob store
(``stage``: streamed, hashed on the way); the blob's sha256 is recorded (``SourceStaged``) so a
later use of the same object only asks for its metadata again. An object whose content changed
since registration is refused naming both fingerprints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quipu.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound
from quipu.core.ports import FileFacts, RemoteObject, RemoteSources, SourceFiles
from quipu.core.runs.aggregate import Run
from quipu.core.sources.aggregate import Source
from quipu.core.sources.files import SourcePaths, file_problems, is_remote
from quipu.core.sources.metadata import Problem, check_metadata, problems_error, shown
from quipu.core.unit_of_work import UnitOfWork
from quipu.core.validation import check_name

__all__ = ["SourceService", "split_ref"]


class SourceService:
    """Handles every source command through the unit of work."""

    def __init__(self, uow: UnitOfWork, files: SourceFiles | None = None,
                 paths: SourcePaths | None = None,
                 remote: RemoteSources | None = None) -> None:
        self.uow = uow
        self.files = files
        self.paths = paths or SourcePaths()
        self.remote = remote
        self._staged_here: dict[tuple[str, str], tuple[str, int]] = {}
        """(uri, generation) -> (sha256, size) of objects this engine staged: a second input
        reading the same object in one run() (or a retried run()) does not download it again
        before its ``SourceStaged`` is recorded."""

    def load(self, name: str) -> Source:
        """The source, or ``NotFound(unknown_source)``."""
        source = self.uow.load(Source, check_name(name, what="source"))
        source.check_exists()
        return source

    # --- register ------------------------------------------------------------------------------

    def register(self, name: str, path_or_uri: str, description: str, reason: str,
                 metadata: Any, *, actor: str, format: str | None = None,
                 size_bytes: int | None = None) -> dict[str, Any]:
        """Register a dataset under ``name``: a local file (checked and hashed, never loaded)
        or a ``gs://`` object (its metadata read and checked, its fingerprint recorded)."""
        check_name(name, what="source")
        meta = self.uow.meta(actor, reason)
        doc = check_metadata(_plain(metadata), description=description, fmt=format,
                             size_bytes=size_bytes)
        uri = (path_or_uri or "").strip()
        path: str | None = None
        sha256: str | None = None
        remote: dict[str, Any] | None = None
        if is_remote(uri):
            _check_remote(uri)
            remote = self._check_object(uri, doc)
        elif "://" in uri:
            raise InvalidInput(f"{uri!r} is not a local path or a gs:// URI",
                               code="unsupported_uri",
                               hint="give a path inside the project or its data roots, or a "
                               "gs://bucket/object URI")
        elif not uri:
            raise InvalidInput("path_or_uri is empty", code="path_missing",
                               hint="give the data file's path, e.g. data/train.npz")
        else:
            path, sha256 = self._check_file(uri, doc)

        def command() -> dict[str, Any]:
            source = self.uow.load(Source, name)
            source.register(meta, uri=uri, path=path, sha256=sha256,
                            size_bytes=doc["source"]["size_bytes"], fmt=doc["source"]["format"],
                            metadata=doc, remote=remote)
            position = self.uow.commit(source)[-1]
            out = {"source": name, "uri": uri, "path": path, "sha256": sha256,
                   "size_bytes": doc["source"]["size_bytes"],
                   "format": doc["source"]["format"], "verified": True, "position": position}
            if remote is not None:
                out["object"] = remote
            return out

        return self.uow.attempt(command)

    def _check_file(self, uri: str, doc: Mapping[str, Any]) -> tuple[str, str]:
        """Resolve, describe and compare a local file: (real path, sha256), or a typed error."""
        if self.files is None:
            raise InvalidInput("this engine was built without access to local files",
                               code="no_source_files",
                               hint="open the project with quipu.app.bootstrap.open_project()")
        real = self.paths.check(uri)
        params = doc["source"].get("format_params") or {}
        facts = self.files.describe(real, fmt=doc["source"]["format"],
                                    delimiter=params.get("delimiter"))
        problems = file_problems(doc, facts)
        if problems:
            raise problems_error(
                problems, what=f"the metadata of {uri!r} disagrees with the file: it",
                code="metadata_mismatch",
                hint="describe the file as it is (each problem says what the file holds); "
                "nothing was recorded")
        return facts.path, facts.sha256

    def _remote(self) -> RemoteSources:
        if self.remote is None:
            raise InvalidInput("this engine was built without access to remote objects",
                               code="no_source_files",
                               hint="open the project with quipu.app.bootstrap.open_project()")
        return self.remote

    def _check_object(self, uri: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Read a ``gs://`` object's metadata (no download) and compare its size with the
        metadata's; its fingerprint, or a typed error."""
        found = self._remote().stat(uri)
        if found.size != doc["source"]["size_bytes"]:
            raise problems_error(
                [Problem("source.size_bytes", f"{found.size} (the object's size)",
                         shown(doc["source"]["size_bytes"]))],
                what=f"the metadata of {uri!r} disagrees with the object: it",
                code="metadata_mismatch",
                hint="describe the object as it is; nothing was recorded")
        return found.facts()

    # --- promote -------------------------------------------------------------------------------

    def promote(self, run_id: str, output_name: str, source_name: str, reason: str,
                metadata: Any, *, actor: str, description: str | None = None,
                format: str | None = None, size_bytes: int | None = None) -> dict[str, Any]:
        """Make a succeeded run's output the source ``source_name``, by reference (its blob is
        the content, nothing is copied), recording the run, its version and its inputs."""
        check_name(source_name, what="source")
        meta = self.uow.meta(actor, reason)
        doc = check_metadata(_plain(metadata), description=description, fmt=format,
                             size_bytes=size_bytes)

        def command() -> dict[str, Any]:
            run = self.uow.load(Run, run_id)
            request = run.check_exists()
            output = _succeeded_output(run, output_name)
            facts = self._blob_facts(output["sha256"], doc)
            problems = file_problems(doc, facts)
            if problems:
                raise problems_error(
                    problems, what=f"the metadata of {run_id}.{output_name} disagrees with "
                    "the output: it", code="metadata_mismatch",
                    hint="describe the output as it is; nothing was recorded")
            lineage = {"run_id": run.name, "output": output_name,
                       "workspace": request.workspace, "stage": request.stage,
                       "version": request.version, "manifest": request.manifest,
                       "inputs": _given_inputs(run)}
            source = self.uow.load(Source, source_name)
            source.promote(meta, lineage, sha256=output["sha256"],
                           size_bytes=int(output["size"]), metadata=doc)
            position = self.uow.commit(source)[-1]
            return {"source": source_name, "uri": source.uri, "sha256": output["sha256"],
                    "size_bytes": int(output["size"]), "format": doc["source"]["format"],
                    "promoted_from": {"run_id": run.name, "output": output_name,
                                      "workspace": request.workspace,
                                      "version": f"v{request.version}"},
                    "position": position}

        return self.uow.attempt(command)

    def _blob_facts(self, digest: str, doc: Mapping[str, Any]) -> FileFacts:
        if self.files is None:
            raise InvalidInput("this engine was built without access to local files",
                               code="no_source_files",
                               hint="open the project with quipu.app.bootstrap.open_project()")
        params = doc["source"].get("format_params") or {}
        facts = self.files.describe_blob(digest, fmt=doc["source"]["format"],
                                         delimiter=params.get("delimiter"))
        if facts.sha256 != digest:
            raise IntegrityFailure(f"the stored output {digest[:12]} does not match its hash "
                                   f"(it hashes to {facts.sha256[:12]})", code="blob_corrupt",
                                   hint="restore .quipu/blobs from a backup; nothing was "
                                   "recorded")
        return facts

    # --- update, retire, delete ----------------------------------------------------------------

    def update(self, name: str, metadata: Any, reason: str, *, actor: str) -> dict[str, Any]:
        """Replace a source's metadata; checked against the file again, format unchanged."""
        meta = self.uow.meta(actor, reason)
        doc = check_metadata(_plain(metadata))

        def command() -> dict[str, Any]:
            source = self.load(name)
            source.update(meta, doc)  # guards first: retired, format changed
            if source.path is not None:
                self.check_content(source)
                self._check_file_again(source, doc)
            elif source.run_id is not None and source.sha256 is not None:
                problems = file_problems(doc, self._blob_facts(source.sha256, doc))
                if problems:
                    raise problems_error(
                        problems, what=f"the new metadata of source {name!r} disagrees with "
                        "its content: it", code="metadata_mismatch",
                        hint="describe the content as it is; nothing was recorded")
            position = self.uow.commit(source)[-1]
            return {"source": name, "updated": True, "position": position}

        return self.uow.attempt(command)

    def _check_file_again(self, source: Source, doc: Mapping[str, Any]) -> None:
        assert self.files is not None and source.path is not None
        params = doc["source"].get("format_params") or {}
        facts = self.files.describe(source.path, fmt=source.format,
                                    delimiter=params.get("delimiter"))
        problems = file_problems(doc, facts)
        if problems:
            raise problems_error(
                problems, what=f"the new metadata of source {source.name!r} disagrees with "
                "its file: it", code="metadata_mismatch",
                hint="describe the file as it is; nothing was recorded")

    def retire(self, name: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Retire a source: no new run may consume it; its record and name stay."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            source = self.load(name)
            source.retire(meta)
            positions = self.uow.commit(source)
            return {"source": name, "retired": True,
                    "position": positions[-1] if positions else None}

        return self.uow.attempt(command)

    def delete(self, name: str, reason: str, *, actor: str) -> dict[str, Any]:
        """Delete a source no run consumed (``source_in_use`` lists the runs otherwise)."""
        meta = self.uow.meta(actor, reason)

        def command() -> dict[str, Any]:
            source = self.load(name)
            source.delete(meta)
            position = self.uow.commit(source)[-1]
            return {"source": name, "deleted": True, "position": position}

        return self.uow.attempt(command)

    # --- using a source ------------------------------------------------------------------------

    def check_content(self, source: Source) -> str | None:
        """The sha256 of a local source's file now, refused if it differs from the registered
        one (``IntegrityFailure(source_changed)`` naming both); None for a remote source. A
        promoted artifact's blob is checked by the blob store whenever it is read."""
        if source.path is None or source.sha256 is None:
            return source.sha256 if source.run_id is not None else None
        if self.files is None:
            raise InvalidInput("this engine was built without access to local files",
                               code="no_source_files",
                               hint="open the project with quipu.app.bootstrap.open_project()")
        digest, size = self.files.digest(source.path)
        if digest != source.sha256:
            raise IntegrityFailure(
                f"the file of source {source.name!r} ({source.path}) changed since it was "
                f"registered: registered sha256 {source.sha256}, now sha256 {digest} "
                f"({size} bytes, registered {source.size_bytes})", code="source_changed",
                hint="put the registered content back, or register the new content under a "
                "new name (a source never silently changes)")
        return digest

    def resolve(self, ref: str) -> Source:
        """The source a run input names (``NAME`` or ``NAME@sha256:HEX``), checked for use:
        active, the pin (if any) equal to its registered hash, and its file unchanged. A
        ``gs://`` source is checked and staged by :meth:`stage` (its hash may not be known
        yet)."""
        name, pin = split_ref(ref)
        source = self.load(name)
        source.check_active()
        if source.is_remote:
            return source
        if pin is not None and pin != source.sha256:
            raise Conflict(
                f"input pins {name}@sha256:{pin}, but source {name!r} is "
                f"sha256:{source.sha256}", code="source_pin_mismatch",
                hint=f"pin the registered content ({name}@sha256:{source.sha256}), or drop the "
                "pin to use whatever the source holds")
        self.check_content(source)
        return source

    def stage(self, source: Source, *, pin: str | None = None,
              download: bool = True) -> dict[str, Any]:
        """Make a ``gs://`` source's object readable by a run: its metadata read again and
        compared with the recorded fingerprint (``source_changed`` naming both), then its blob:
        the one staged before when the object is still that generation and the store still
        holds it, else (``download``) streamed into the blob store now (a rewrite with the same
        checksums must hash to the blob staged before). Returns what the run input
        records: ``{sha256, size, generation, crc32c, md5}`` (``sha256`` None on a preview of an
        object not staged yet). The caller records ``SourceStaged`` with the run."""
        remote = self._remote()
        found = remote.stat(source.uri)
        self._check_unchanged(source, found)
        staged = source.staged
        sha256: str | None = None
        size = found.size
        here = self._staged_here.get((source.uri, found.generation))
        if staged is not None and str(staged["generation"]) == found.generation and \
                remote.has_blob(staged["sha256"]):
            sha256, size = staged["sha256"], int(staged["size"])
        elif here is not None and remote.has_blob(here[0]):
            sha256, size = here
        elif download:
            sha256, size = remote.stage(found)
            if len(self._staged_here) >= 1024:
                self._staged_here.clear()  # a bound, not a policy: it only spares downloads
            self._staged_here[(source.uri, found.generation)] = (sha256, size)
            if staged is not None and _same_content(staged, found) and sha256 != staged["sha256"]:
                raise IntegrityFailure(
                    f"the object of source {source.name!r} ({source.uri}) changed since it was "
                    f"staged: staged sha256 {staged['sha256']}, now sha256 {sha256}",
                    code="source_changed",
                    hint="put the registered content back, or register the new object under a "
                    "new name (a source never silently changes)")
        if pin is not None and sha256 is not None and pin != sha256:
            raise Conflict(
                f"input pins {source.name}@sha256:{pin}, but source {source.name!r} is "
                f"sha256:{sha256}", code="source_pin_mismatch",
                hint=f"pin the registered content ({source.name}@sha256:{sha256}), or drop the "
                "pin to use whatever the source holds")
        return {"sha256": sha256, "size": size, **{k: v for k, v in found.facts().items()
                                                    if k != "size"}}

    def _check_unchanged(self, source: Source, found: RemoteObject) -> None:
        """Refuse an object whose content is not the registered one, naming both
        fingerprints. The same generation is the same bytes; a rewrite with the same size,
        crc32c and md5 (the content put back) is accepted and staged again."""
        known = source.remote
        if known is None:  # registered before objects could be read: only its size is known
            if found.size == source.size_bytes:
                return
            was = f"registered size {source.size_bytes} bytes"
        elif str(known["generation"]) == found.generation or _same_content(known, found):
            return
        else:
            was = f"registered {_fingerprint(known)}"
        raise IntegrityFailure(
            f"the object of source {source.name!r} ({source.uri}) changed since it was "
            f"registered: {was}, now {_fingerprint(found.facts())}", code="source_changed",
            hint="put the registered content back, or register the new object under a new name "
            "(a source never silently changes)")

    def schema_of(self, ref: str) -> dict[str, Any] | None:
        """What the pipeline checks compare an input's declared schema with: the primary
        array's shape and dtype of a tensor source, a table's columns; ``{}`` for a plain file,
        None when no such source exists."""
        name, _pin = split_ref(ref)
        try:
            source = self.uow.load(Source, check_name(name, what="source"))
        except InvalidInput:
            return None
        if not source.exists:
            return None
        schema = source.metadata.get("schema") or {}
        if schema.get("kind") == "tensor":
            array = schema["arrays"][schema["primary_array"]]
            return {"shape": list(array["shape"]), "dtype": array["dtype"]}
        if schema.get("kind") == "tabular":
            return {"columns": list(schema["columns"])}
        return {}

    def verify(self, name: str) -> dict[str, Any]:
        """Whether the source's content is still what was registered (a read: records nothing).

        A ``gs://`` source: its object's metadata read again (size and fingerprint compared),
        and its staged blob checked against its sha256 when it was staged."""
        source = self.load(name)
        if source.is_remote:
            return self._verify_remote(source)
        digest = self.check_content(source)
        return {"source": name, "sha256": source.sha256, "verified": digest is not None,
                "unchanged": digest is not None,
                "note": None}

    def _verify_remote(self, source: Source) -> dict[str, Any]:
        remote = self._remote()
        found = remote.stat(source.uri)
        self._check_unchanged(source, found)
        staged = source.staged
        checked = staged is not None and _same_content(staged, found)
        if checked:
            assert staged is not None
            remote.verify_blob(staged["sha256"])
        return {"source": source.name, "uri": source.uri,
                "sha256": staged["sha256"] if checked and staged else None,
                "verified": True, "unchanged": True, "object": found.facts(),
                "note": None if checked else
                "the object is unchanged (size and fingerprint); its sha256 is computed when "
                "a run first reads it"}


def _same_content(known: Mapping[str, Any], found: RemoteObject) -> bool:
    """Whether a recorded fingerprint and an object hold the same bytes: the same generation,
    or (a rewrite) the same size and checksums."""
    if str(known["generation"]) == found.generation:
        return True
    return (int(known.get("size", -1)) == found.size and known.get("crc32c") is not None
            and known.get("crc32c") == found.crc32c and known.get("md5") == found.md5)


def _fingerprint(facts: Mapping[str, Any]) -> str:
    return (f"generation {facts.get('generation')} (crc32c {facts.get('crc32c')}, md5 "
            f"{facts.get('md5')}, {facts.get('size')} bytes)")


def _succeeded_output(run: Run, output_name: str) -> dict[str, Any]:
    """The recorded output of a run that succeeded, or a typed refusal."""
    if run.exit is None or run.exit.state != "succeeded":
        state = run.current.value
        raise Conflict(f"run {run.name} has not succeeded (it is {state}); only a succeeded "
                       "run's outputs can be promoted", code="run_not_succeeded",
                       hint="promote an output of a run that succeeded; list_history() shows "
                       "them")
    output = run.exit.outputs.get(output_name)
    if output is None or not output.get("sha256"):
        known = ", ".join(sorted(run.exit.outputs)) or "none"
        raise NotFound(f"run {run.name} has no output {output_name!r} (it has: {known})",
                       code="unknown_output", hint="name one of the run's recorded outputs")
    if output.get("kind") == "directory":
        raise InvalidInput(f"output {output_name!r} of {run.name} is a directory",
                           code="artifact_is_a_directory",
                           hint="a source is one file: save the output as npy, npz, csv or "
                           "a single file")
    return output


def _given_inputs(run: Run) -> dict[str, dict[str, Any]]:
    """What the run read, compactly: each input's hash and where it came from."""
    out: dict[str, dict[str, Any]] = {}
    requested = run.request.inputs if run.request is not None else {}
    for name, how in sorted(requested.items()):
        given = run.launched_inputs.get(name, {})
        entry: dict[str, Any] = {"sha256": given.get("sha256") or how.get("sha256")}
        for key in ("source", "run_id", "producer", "signal"):
            if how.get(key) is not None or given.get(key) is not None:
                entry[key] = how.get(key) if how.get(key) is not None else given.get(key)
        out[name] = entry
    return out


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@sha256:HEX`` -> (name, pinned hash or None)."""
    name, at, pin = (ref or "").partition("@")
    if not at:
        return name, None
    digest = pin.removeprefix("sha256:")
    if not pin.startswith("sha256:") or len(digest) != 64 or any(
            c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"{ref!r} is not NAME or NAME@sha256:<64 hex digits>",
                           code="invalid_source_ref",
                           hint="pin a source as name@sha256:<its sha256>; "
                           "manage_sources(action='get') shows it")
    return name, digest


def _check_remote(uri: str) -> None:
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    if not bucket or not key or any(ch.isspace() for ch in uri):
        raise InvalidInput(f"{uri!r} is not a gs://bucket/object URI", code="unsupported_uri",
                           hint="write gs://<bucket>/<path to the object>")


def _plain(metadata: Any) -> Any:
    """Metadata as given (a mapping), or parsed when a JSON string was passed."""
    if isinstance(metadata, str):
        import json

        try:
            return json.loads(metadata)
        except ValueError as exc:
            raise InvalidInput(f"metadata is not JSON: {exc}", code="invalid_metadata",
                               hint="pass the metadata as an object (or JSON text)") from exc
    return metadata
