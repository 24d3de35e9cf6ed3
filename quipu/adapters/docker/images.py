"""The project's container images: list, inspect and build them on the Docker daemon.

A project image is a base image plus the project's ``requirements.txt`` (installed with
``python3 -m pip``, run without a shell), or the project's own
``Dockerfile`` (which may ``COPY requirements.txt``; those two files are the whole build
context). Its tag carries a content hash of what goes in (the base, the Dockerfile, the
requirements), ``quipu-<project>:<hash>``, so building an unchanged project again reuses the
image instead of rebuilding it. Every image built here carries the labels ``quipu.project`` and
``quipu.context_hash``; ``list`` shows the project's images by that label.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tarfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quipu.core.errors import InvalidInput, NotFound

from ._client import connect

if TYPE_CHECKING:
    import docker
    from docker.models.images import Image

__all__ = ["DEFAULT_BASE", "DockerImages"]

DEFAULT_BASE = "python:3.11-slim"
"""The base image when neither the call nor a Dockerfile names one."""
BUILD_TIMEOUT = 3600.0
"""Seconds a build may stay silent before the client gives up on the daemon."""
LOG_TAIL = 20
"""Lines of the build log a failed build's error carries."""
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)


class DockerImages:
    """The images of one project on the Docker daemon at ``$DOCKER_HOST`` (or the socket)."""

    def __init__(self, root: Path, project: str,
                 client: docker.DockerClient | None = None) -> None:
        """The images of the project at ``root`` named ``project`` (connects on first use)."""
        self.root = Path(root)
        self.project = project
        self.repository = "quipu-" + re.sub(r"[^a-z0-9_.-]", "-", project.lower()).strip(".-")
        self._client = client

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            # A build step may print nothing for minutes (a large pip install): the socket's
            # read timeout must outlast it.
            self._client = connect(what="managing images", timeout=BUILD_TIMEOUT)
        return self._client

    def list_images(self) -> list[dict[str, Any]]:
        """The project's images, newest first: tags, id, size, context hash."""
        images = self._docker().images.list(filters={"label": f"quipu.project={self.project}"})
        rows = [_row(image) for image in images]
        return sorted(rows, key=lambda r: str(r["created"]), reverse=True)

    def inspect(self, ref: str) -> dict[str, Any]:
        """One image by tag or id: its id, digests, tags, size, labels, platform."""
        import docker

        try:
            image = self._docker().images.get(ref)
        except docker.errors.ImageNotFound as exc:
            raise NotFound(f"no image {ref!r} on this Docker daemon", code="image_not_found",
                           hint=self._suggest(ref)) from exc
        config = image.attrs.get("Config") or {}
        return {**_row(image), "digests": list(image.attrs.get("RepoDigests") or [])[:5],
                "labels": dict(config.get("Labels") or {}),
                "platform": f"{image.attrs.get('Os')}/{image.attrs.get('Architecture')}",
                "entrypoint": config.get("Entrypoint"), "cmd": config.get("Cmd")}

    def _suggest(self, ref: str) -> str:
        known = [tag for row in self.list_images() for tag in row["tags"]]
        close = difflib.get_close_matches(ref, known, n=1)
        if close:
            return f"did you mean {close[0]!r}? manage_images(action='list') shows them"
        return "manage_images(action='list') shows the project's images; build one first"

    def recipe(self, base: str | None = None) -> tuple[bytes, dict[str, bytes], str]:
        """(Dockerfile, build context files, content hash) for this project."""
        dockerfile_path = self.root / "Dockerfile"
        requirements = self.root / "requirements.txt"
        files: dict[str, bytes] = {}
        if requirements.is_file():
            files["requirements.txt"] = requirements.read_bytes()
        if dockerfile_path.is_file():
            dockerfile = dockerfile_path.read_bytes()
        else:
            lines = [f"FROM {base or DEFAULT_BASE}"]
            if "requirements.txt" in files:
                # The exec form needs no shell in the base (a Python-only image will do), and
                # no version check means pip reaches the network only for what it installs.
                lines += ["COPY requirements.txt /tmp/quipu-requirements.txt",
                          'RUN ["python3", "-m", "pip", "install", "--no-cache-dir", '
                          '"--disable-pip-version-check", "-r", '
                          '"/tmp/quipu-requirements.txt"]']
            dockerfile = ("\n".join(lines) + "\n").encode()
        files["Dockerfile"] = dockerfile
        digest = hashlib.sha256(b"quipu-image-1\0")
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        return dockerfile, files, digest.hexdigest()

    def build(self, *, base: str | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Build the project image, or reuse the one with the same content hash.

        ``progress`` receives each line of the build output as it arrives. Raises
        ``NotFound(base_image_missing)`` when a base image is not on the daemon (nothing can
        be pulled from here) and ``InvalidInput(image_build_failed)`` with the log's tail.
        """
        import docker

        client = self._docker()
        dockerfile, files, content = self.recipe(base)
        tag = f"{self.repository}:{content[:12]}"
        try:
            image = client.images.get(tag)
            if progress is not None:
                progress(f"unchanged: reusing {tag}")
            return {**_row(image), "image": tag, "reused": True}
        except docker.errors.ImageNotFound:
            pass
        for name in _bases(dockerfile.decode("utf-8", "replace")):
            try:
                client.images.get(name)
            except docker.errors.ImageNotFound as exc:
                raise NotFound(f"base image {name!r} is not on this Docker daemon",
                               code="base_image_missing",
                               hint=f"`docker pull {name}` or `docker load` it (builds never "
                               "pull), or pass another base") from exc
        tail: deque[str] = deque(maxlen=LOG_TAIL)
        labels = {"quipu.project": self.project, "quipu.context_hash": content}
        try:
            for chunk in client.api.build(fileobj=_context_tar(files), custom_context=True,
                                          tag=tag, labels=labels, rm=True, forcerm=True,
                                          decode=True):
                text = str(chunk.get("stream") or chunk.get("status") or "")
                if "error" in chunk:
                    text = f"ERROR: {chunk['error']}"
                for line in text.splitlines():
                    if line.strip():
                        tail.append(line.rstrip())
                        if progress is not None:
                            progress(line.rstrip())
                if "error" in chunk:
                    raise _build_failed(tag, tail)
        except docker.errors.APIError as exc:
            tail.append(f"ERROR: {exc.explanation or exc}")
            raise _build_failed(tag, tail) from exc
        image = client.images.get(tag)
        return {**_row(image), "image": tag, "reused": False}


def _bases(dockerfile: str) -> list[str]:
    """The base images a Dockerfile names (not its own stages, not ``scratch``, no ``$ARG``)."""
    stages = {m.lower() for m in re.findall(r"^\s*FROM\s+.*\s+AS\s+(\S+)", dockerfile,
                                            re.IGNORECASE | re.MULTILINE)}
    return [name for name in _FROM.findall(dockerfile)
            if name.lower() not in stages and name != "scratch" and "$" not in name]


def _build_failed(tag: str, tail: deque[str]) -> InvalidInput:
    shown = "\n".join(tail)[-2000:]
    return InvalidInput(f"building {tag} failed; the log ends:\n{shown}",
                        code="image_build_failed",
                        hint="fix the Dockerfile or requirements.txt and build again")


def _context_tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    buffer.seek(0)
    return buffer


def _row(image: Image) -> dict[str, Any]:
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    return {"id": image.id, "tags": list(image.tags)[:5],
            "created": image.attrs.get("Created"),
            "size_mb": round(int(image.attrs.get("Size") or 0) / 1e6, 1),
            "context_hash": labels.get("quipu.context_hash")}
