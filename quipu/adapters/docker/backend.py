"""The Docker stage backend: each stage runs in a container from its profile's image.

What a container gets (``launch``):

* the run directory mounted at ``/quipu/run``: ``inputs/`` and ``code/`` read-only, the rest
  (``outputs/``, ``.quipu/``) writable; the engine's own ``quipu`` package read-only at
  ``/opt/quipu/quipu`` (so the image needs Python and the SDK's numpy, never Quipu itself, and
  the stage wrapper always matches the engine); a read-only root file system with ``/tmp``;
* a non-root user: the engine's uid, or when the engine runs as root the run directory's
  owner, or ``nobody`` (65534) when that is root too (the run directory is then handed to it);
* no network unless the profile allows it; the profile's memory (no swap beyond it), CPUs and
  GPUs (an error naming the profile when the daemon has no GPU runtime), and a pids limit;
* labels ``quipu.run_id`` / ``quipu.stage`` / ``quipu.project``, so an engine that restarted
  finds its containers (``adopt``) even without ``launch.json``;
* ``docker-init`` as PID 1 with ``TINI_KILL_PROCESS_GROUP``, so a signal reaches the stage's
  whole process group; the stage's stdout and stderr go straight to ``.quipu/stdout.log``
  (the executor caps that file as it does for a local process).

What a launch records (``facts``): the image (id, digest, tags, the build's content hash) and
the profile, and the environment as the stage sees it INSIDE the container. The engine cannot
probe an image's interpreter from outside, so the stage wrapper does it before the stage starts
(``QUIPU_PROBE_ENVIRONMENT=1``) and writes ``.quipu/environment.json``; ``facts`` waits for that
file (bounded, and no longer than the container lives), stores the ``name==version`` list as a
blob and records ``{python, implementation, executable, os, machine, cpu_count, gpu,
env_names, packages: {count, sha256}}``, the same facts a local run records.

How it ends (``poll``): the wrapper's ``.quipu/exit.json`` first, then the container's state.
``State.OOMKilled`` makes it ``oom`` with "out of memory (limit N MiB)"; a container that
vanished is an unknown exit (the run is lost); one that could not start says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal as signals
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu.core.ports import BackendCapabilities, BlobStore, LaunchSpec, StageExit, StageHandle
from quipu.rundir import ENV_PROBE_ENVIRONMENT, ENVIRONMENT, SIDE_DIR

from ._client import DAEMON_HINT, DockerUnavailable, connect, daemon_address

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

__all__ = ["MOUNT_POINT", "DockerBackend"]

MOUNT_POINT = "/quipu/run"
"""Where a stage sees its run directory inside the container."""
PACKAGE_POINT = "/opt/quipu"
"""The directory on the container's PYTHONPATH that holds the engine's ``quipu`` package."""
WRAPPER = "quipu.adapters.executors._wrapper"
NOBODY = 65534
PROBE_TIMEOUT = 30.0
"""How long ``facts`` waits for the in-container probe's file at most."""
_PACKAGE = Path(__file__).resolve().parents[2]  # the engine's quipu package directory
_READ_ONLY = ("inputs", "code")
# Runs inside the container before the stage: send stdout and stderr to the run's log file (no
# shell in the image is needed), then become the stage wrapper.
_LAUNCHER = ("import os,sys;f=os.open(sys.argv[1],os.O_WRONLY|os.O_APPEND|os.O_CREAT,0o644);"
             "os.dup2(f,1);os.dup2(f,2);os.execv(sys.executable,[sys.executable,'-m',"
             "sys.argv[2],*sys.argv[3:]])")


class DockerBackend:
    """Runs stages in containers on one Docker daemon (``$DOCKER_HOST`` or the socket)."""

    name = "docker"

    def __init__(self, *, project: str = "", python: str = "python3", pids_limit: int = 4096,
                 client: docker.DockerClient | None = None, blobs: BlobStore | None = None,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        """``python`` is the interpreter the image runs the stage with; ``client`` an SDK
        client to use instead of connecting to ``$DOCKER_HOST`` on first use; ``blobs`` where
        the package list seen in the container is stored (without it only its count is
        recorded)."""
        self.project = project
        self.python = python
        self.pids_limit = pids_limit
        self.blobs = blobs
        self.probe_timeout = probe_timeout
        self._client = client
        self._lock = threading.Lock()
        self._logged: set[str] = set()  # containers whose own log was appended already
        self._gpu: bool | None = None

    # --- the daemon ------------------------------------------------------------------------------

    def client(self, what: str = "") -> docker.DockerClient:
        """The daemon's client (connected once; ``DockerUnavailable`` when it is down)."""
        with self._lock:
            if self._client is None:
                self._client = connect(what=what)
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    def capabilities(self) -> BackendCapabilities:
        """GPUs when the daemon has the NVIDIA runtime; network when a profile allows it."""
        return BackendCapabilities(gpu=self._has_gpu_runtime(), network=True, preemptible=False)

    def _has_gpu_runtime(self) -> bool:
        if self._gpu is None:
            try:
                info = self.client().info()
            except DockerUnavailable:
                return False
            self._gpu = "nvidia" in (info.get("Runtimes") or {})
        return self._gpu

    def check(self) -> list[str]:
        """The daemon must answer; empty when it does."""
        try:
            self.client().ping()
        except Exception as exc:
            self._drop_client()
            return [f"the Docker daemon does not answer at {daemon_address()} ({exc}): "
                    f"{DAEMON_HINT}"]
        return []

    def has_image(self, ref: str) -> bool:
        """Whether image ``ref`` is on the daemon (``DockerUnavailable`` when it is down)."""
        import docker

        try:
            self.client().images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    # --- launching -------------------------------------------------------------------------------

    def prepare(self, spec: LaunchSpec) -> None:
        """Check the daemon, the image and the GPUs; hand the writable parts to the stage's
        user. Raises ``RuntimeError`` naming the profile and what to do."""
        import docker

        res = spec.resources
        profile = f"profile {res.profile!r}"
        if not (spec.run_dir / spec.entrypoint).is_file():
            raise FileNotFoundError(f"entrypoint {spec.entrypoint} is not in the run directory")
        try:
            client = self.client(what=profile)
            client.ping()
        except DockerUnavailable as exc:
            raise RuntimeError(f"{exc.message}; {exc.hint}") from exc
        except docker.errors.DockerException as exc:
            self._drop_client()
            raise RuntimeError(f"{profile} needs the Docker daemon, but it does not answer at "
                               f"{daemon_address()}: {exc}; {DAEMON_HINT}") from exc
        if not res.image:
            raise RuntimeError(f"{profile} runs on the docker backend but names no image: "
                               "set profiles.<name>.image in quipu.yaml (`quipu image build` "
                               "makes one from the project's requirements.txt)")
        try:
            client.images.get(res.image)
        except docker.errors.ImageNotFound as exc:
            raise RuntimeError(f"image {res.image!r} of {profile} is not on this Docker daemon: "
                               "build it (`quipu image build`) or `docker pull` it") from exc
        if res.gpus and not self._has_gpu_runtime():
            raise RuntimeError(f"{profile} asks for {res.gpus} GPU(s), but this Docker daemon "
                               "has no GPU runtime: install the NVIDIA Container Toolkit, or "
                               "pick a CPU profile")
        (spec.run_dir / ".quipu" / "stdout.log").touch()
        uid, gid = self._user(spec.run_dir)
        if os.geteuid() == 0 and uid != 0:
            # An engine running as root built the directory: the stage's user must be able to
            # read its code and inputs and write its outputs (the mounts keep inputs/ and code/
            # read-only whoever owns them).
            _chown_tree(spec.run_dir, uid, gid)

    def _user(self, run_dir: Path) -> tuple[int, int]:
        """The uid and gid the stage runs as: never root."""
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        st = run_dir.stat()
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
        return NOBODY, NOBODY

    def launch(self, spec: LaunchSpec) -> StageHandle:
        """Create and start the stage's container (detached); its handle names it."""
        import docker
        from docker.types import DeviceRequest, Mount

        res = spec.resources
        client = self.client(what=f"profile {res.profile!r}")
        run_dir = spec.run_dir.absolute()
        mounts = [Mount(MOUNT_POINT, str(run_dir), type="bind"),
                  Mount(f"{PACKAGE_POINT}/quipu", str(_PACKAGE), type="bind", read_only=True)]
        mounts += [Mount(f"{MOUNT_POINT}/{name}", str(run_dir / name), type="bind",
                         read_only=True) for name in _READ_ONLY if (run_dir / name).is_dir()]
        env = spec.environment(MOUNT_POINT)
        env.update({"PYTHONPATH": f"{MOUNT_POINT}/code:{PACKAGE_POINT}", "HOME": "/tmp",
                    "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                    "TINI_KILL_PROCESS_GROUP": "1", ENV_PROBE_ENVIRONMENT: "1"})
        uid, gid = self._user(run_dir)
        kwargs: dict[str, Any] = {}
        if res.memory_mb is not None:
            kwargs["mem_limit"] = f"{res.memory_mb}m"
            kwargs["memswap_limit"] = f"{res.memory_mb}m"  # no swap beyond the limit
        if res.cpus is not None:
            kwargs["nano_cpus"] = int(res.cpus * 1e9)
        if res.gpus:
            kwargs["device_requests"] = [DeviceRequest(count=res.gpus, capabilities=[["gpu"]])]
        labels = {"quipu.run_id": spec.run_id, "quipu.stage": spec.stage,
                  "quipu.profile": res.profile}
        if self.project:
            labels["quipu.project"] = self.project
        command = [self.python, "-c", _LAUNCHER, f"{MOUNT_POINT}/.quipu/stdout.log", WRAPPER,
                   f"{MOUNT_POINT}/{spec.entrypoint}", *spec.args]
        try:
            container = client.containers.create(
                res.image or "", command, detach=True,
                user=f"{uid}:{gid}", working_dir=MOUNT_POINT, environment=env, mounts=mounts,
                network_mode="bridge" if res.network else "none", labels=labels,
                pids_limit=self.pids_limit, read_only=True, tmpfs={"/tmp": "rw,size=1g"},
                init=True, stdin_open=False, **kwargs)
        except docker.errors.DockerException as exc:
            raise RuntimeError(f"the container of profile {res.profile!r} could not be "
                               f"created: {_api_message(exc)}") from exc
        try:
            container.start()
        except docker.errors.DockerException as exc:
            message = _api_message(exc)
            container.remove(force=True)
            raise RuntimeError(f"the container of profile {res.profile!r} could not start: "
                               f"{message}") from exc
        container.reload()
        state = container.attrs.get("State") or {}
        return StageHandle(backend=self.name, run_id=spec.run_id, ref=str(container.id),
                           identity=str(container.attrs.get("Created") or ""),
                           pid=int(state.get("Pid") or 0))

    # --- watching --------------------------------------------------------------------------------

    def _container(self, handle: StageHandle) -> Container | None:
        """The handle's container, None when it is gone (or another one took its name)."""
        import docker

        try:
            container = self.client().containers.get(handle.ref)
        except docker.errors.NotFound:
            return None
        if handle.identity and str(container.attrs.get("Created") or "") != handle.identity:
            return None
        return container

    def alive(self, handle: StageHandle) -> bool:
        """Whether the container still runs."""
        container = self._container(handle)
        return container is not None and container.status in ("running", "created",
                                                               "restarting", "paused")

    def poll(self, handle: StageHandle) -> StageExit | None:
        """None while it runs; else how it ended (exit.json, then the container's state)."""
        container = self._container(handle)
        if container is None:
            return StageExit(known=False, error="container vanished")
        state = container.attrs.get("State") or {}
        if state.get("Running") or state.get("Status") in ("created", "restarting", "paused"):
            if state.get("Status") == "created" and state.get("Error"):
                return StageExit(known=True, exit_code=127,
                                 error=f"the container could not start: {state['Error']}")
            return None
        return self._ended(handle, container, state)

    def _ended(self, handle: StageHandle, container: Container,
               state: dict[str, Any]) -> StageExit:
        if state.get("OOMKilled"):
            limit = (container.attrs.get("HostConfig") or {}).get("Memory") or 0
            shown = f"limit {limit // (1024 * 1024)} MiB" if limit else "no limit set"
            return StageExit(known=True, exit_code=None, signal=int(signals.SIGKILL), oom=True,
                             error=f"out of memory ({shown})")
        status = _read_exit(handle, container)
        if status is not None:
            return status
        if state.get("Error"):
            return StageExit(known=True, exit_code=int(state.get("ExitCode") or 127),
                             error=f"the container could not start: {state['Error']}")
        code = int(state.get("ExitCode") or 0)
        if code > 128:  # docker-init reports a stage killed by a signal as 128 + signal
            return StageExit(known=True, exit_code=None, signal=code - 128)
        # The wrapper never ran (no exit.json): what the container printed before the stage's
        # log took over says why, e.g. an interpreter that is not in the image.
        return StageExit(known=True, exit_code=code, error=_early_error(container) or None)

    def wait(self, handle: StageHandle, timeout: float) -> StageExit | None:
        """Block until the container stops or ``timeout`` seconds pass."""
        import requests

        container = self._container(handle)
        if container is None:
            return StageExit(known=False, error="container vanished")
        try:
            container.wait(timeout=max(timeout, 0.001))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
        except Exception:
            pass  # gone meanwhile: poll says so
        return self.poll(handle)

    def signal(self, handle: StageHandle, signum: int) -> None:
        """Deliver ``signum`` to the container's init, which passes it to the stage's group."""
        import docker

        container = self._container(handle)
        if container is None:
            return
        try:
            container.kill(signal=int(signum))
        except docker.errors.APIError:
            pass  # not running any more

    def kill(self, handle: StageHandle, *, grace: float = 0.0) -> None:
        """Stop the container: SIGTERM, then SIGKILL after ``grace`` seconds (at once when 0)."""
        import docker

        container = self._container(handle)
        if container is None:
            return
        try:
            if grace > 0:
                container.stop(timeout=max(1, round(grace)))
            else:
                container.kill(signal="SIGKILL")
        except docker.errors.APIError:
            pass  # ended meanwhile

    def collect_logs(self, handle: StageHandle) -> None:
        """The stage writes ``stdout.log`` itself; what the container printed before that
        (an interpreter that is not in the image ...) is appended once, after it ended."""
        import docker

        if handle.ref in self._logged:
            return
        container = self._container(handle)
        if container is None or container.status == "running":
            return
        try:
            early = container.logs(stdout=True, stderr=True, tail=200)
        except docker.errors.APIError:
            return
        self._logged.add(handle.ref)
        if early:
            log_file = _run_dir_of(container) / ".quipu" / "stdout.log"
            if log_file.parent.is_dir():
                with log_file.open("ab") as out:
                    out.write(early)

    def adopt(self, run_id: str, run_dir: Path,
              handle: StageHandle | None) -> StageHandle | None:
        """The run's container, by its handle or else by its ``quipu.run_id`` label and the
        run directory it mounts (a launch.json lost with the engine that wrote it)."""
        if handle is not None:
            if handle.backend != self.name or self._container(handle) is None:
                return None
            return handle
        found = [c for c in self.client().containers.list(
            all=True, filters={"label": f"quipu.run_id={run_id}"})
            if _run_dir_of(c) == Path(run_dir).absolute()]
        if not found:
            return None
        container = found[0]
        state = container.attrs.get("State") or {}
        return StageHandle(backend=self.name, run_id=run_id, ref=str(container.id),
                           identity=str(container.attrs.get("Created") or ""),
                           pid=int(state.get("Pid") or 0))

    def release(self, handle: StageHandle) -> None:
        """Remove the container (its outputs live in the run directory)."""
        import docker

        self.collect_logs(handle)
        container = self._container(handle)
        if container is None:
            return
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
        self._logged.discard(handle.ref)

    def facts(self, spec: LaunchSpec, handle: StageHandle) -> dict[str, Any]:
        """The image the stage runs (id, digests, tags), the container's limits, and the
        environment the stage sees inside it (see the module's docstring)."""
        import docker

        res = spec.resources
        found: dict[str, Any] = {"backend": self.name, "image": res.image,
                                 "container": handle.ref[:12], "profile": res.to_dict()}
        found.update(self._inside(spec.run_dir, handle))
        try:
            image = self.client().images.get(res.image or "")
        except docker.errors.DockerException:
            return found
        digests = image.attrs.get("RepoDigests") or []
        found.update(image_id=image.id, image_digest=digests[0] if digests else None,
                     image_tags=list(image.tags)[:5])
        config = image.attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        if "quipu.context_hash" in labels:
            found["image_context_hash"] = labels["quipu.context_hash"]
        return found


    def _inside(self, run_dir: Path, handle: StageHandle) -> dict[str, Any]:
        """The in-container probe's facts, its package list stored as a blob; ``{error}`` when
        the container ended (or ``probe_timeout`` passed) without writing them."""
        path = Path(run_dir) / SIDE_DIR / ENVIRONMENT
        deadline = time.monotonic() + self.probe_timeout
        checked = time.monotonic()
        while not path.exists():
            now = time.monotonic()
            if now >= deadline:
                return {"error": f"the stage's environment was not written within "
                                 f"{self.probe_timeout:g} s"}
            if now - checked >= 0.5:  # a container that ended writes nothing more
                checked = now
                if not self.alive(handle):
                    if path.exists():
                        break
                    return {"error": "the container ended before its environment was written"}
            time.sleep(0.02)
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return {"error": f"the stage's environment could not be read: {exc}"[:300]}
        if not isinstance(facts, dict):
            return {"error": "the stage's environment is not a JSON object"}
        packages = facts.get("packages")
        if isinstance(packages, list):
            listing = "".join(f"{line}\n" for line in packages).encode()
            recorded: dict[str, Any] = {"count": len(packages)}
            if self.blobs is not None:
                digest = self.blobs.put_bytes(listing)
                if digest != hashlib.sha256(listing).hexdigest():
                    raise RuntimeError("the blob store named the package list by another hash")
                recorded["sha256"] = digest
            facts["packages"] = recorded
        return {k: v for k, v in facts.items()
                if k in ("python", "implementation", "executable", "os", "machine",
                         "cpu_count", "gpu", "env_names", "packages", "error")}


def _run_dir_of(container: Container) -> Path:
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Destination") == MOUNT_POINT:
            return Path(mount["Source"])
    return Path("/nonexistent")


def _early_error(container: Container) -> str:
    """The last line the container itself printed (before stdout went to the run's log)."""
    import docker

    try:
        text = container.logs(stdout=True, stderr=True, tail=5).decode("utf-8", "replace")
    except docker.errors.APIError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _read_exit(handle: StageHandle, container: Container) -> StageExit | None:
    """The wrapper's own record of how the stage ended, when it wrote one."""
    path = _run_dir_of(container) / ".quipu" / "exit.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    code, sig, error = data.get("exit_code"), data.get("signal"), data.get("error")
    return StageExit(known=True, exit_code=code if isinstance(code, int) else None,
                     signal=sig if isinstance(sig, int) else None,
                     error=error if isinstance(error, str) and error else None)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    if not path.exists():
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _api_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = " ".join(str(explanation or exc).split())
    return text if len(text) <= 400 else text[:399] + "…"
