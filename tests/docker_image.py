"""A local test image with Python and numpy, made from this host's own interpreter.

No image registry is reachable from the test machines, so nothing can be pulled. The image is a
minimal root filesystem imported with ``docker import``: the host's ``python3.11``, its standard
library, the shared libraries that it and its extension modules link against (found with
``ldd``), and numpy from the test virtualenv (the SDK needs it). Quipu itself is not in the
image: the Docker backend mounts the engine's own ``quipu`` package into every container.

The tag carries a content hash of everything that goes in (paths, sizes, modification times),
so a second test session reuses the image, and a changed interpreter or numpy builds a new one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["IMAGE_REPOSITORY", "PYTHON_IN_IMAGE", "build_derived_image", "build_python_image",
           "image_files"]

IMAGE_REPOSITORY = "quipu-test-python"
PYTHON_IN_IMAGE = "/usr/bin/python3"
_RECIPE = "5"  # bump when the layout below changes
_SKIPPED_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                   "site-packages", "dist-packages"}
_SITE = "usr/lib/python3.11/site-packages"  # where this interpreter looks
_LDD_PATH = re.compile(r"(/\S+) \(0x")


def _stdlib() -> Path:
    return Path(os.__file__).resolve().parent


def _interpreter() -> Path:
    return Path(sys.executable).resolve()


def _site_packages() -> Path:
    import numpy

    return Path(numpy.__file__).resolve().parent.parent


def _walk(root: Path, skip: set[str] = frozenset()) -> Iterator[Path]:  # type: ignore[assignment]
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            yield Path(dirpath) / name


def _shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every library ``ldd`` names for the binaries, at its canonical path under /usr."""
    found: set[Path] = set()
    for chunk in range(0, len(binaries), 200):
        out = subprocess.run(["ldd", *map(str, binaries[chunk:chunk + 200])],
                             capture_output=True, text=True, check=False).stdout
        for match in _LDD_PATH.finditer(out):
            path = Path(match.group(1))
            found.add(path.parent.resolve() / path.name)
    return found


def image_files() -> dict[str, Path]:
    """What goes into the image: path inside the image -> file on this host."""
    files: dict[str, Path] = {"usr/bin/python3.11": _interpreter()}
    stdlib = _stdlib()
    for path in _walk(stdlib, _SKIPPED_STDLIB):
        files[f"usr/lib/python3.11/{path.relative_to(stdlib)}"] = path
    site = _site_packages()
    for package in ("numpy", "numpy.libs"):
        for path in _walk(site / package):
            files[f"{_SITE}/{path.relative_to(site)}"] = path
    binaries = [p for p in files.values() if p.suffix == ".so" or ".so." in p.name]
    for lib in _shared_libraries([_interpreter(), *binaries]):
        if str(lib).startswith(str(site)):
            continue  # numpy's own bundled libraries, already in
        files[str(lib).lstrip("/")] = lib
    return files


def _content_hash(files: dict[str, Path]) -> str:
    digest = hashlib.sha256(_RECIPE.encode())
    for name in sorted(files):
        st = files[name].stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _tar(files: dict[str, Path], out: Path) -> None:
    with tarfile.open(out, "w", dereference=True) as tar:
        for name, mode in (("usr", 0o755), ("usr/bin", 0o755), ("usr/lib", 0o755),
                           ("usr/lib64", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                             ("usr/bin/python3", "python3.11")):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        tar.addfile(info, io.BytesIO(passwd))
        for name in sorted(files):
            tar.add(files[name], arcname=name, recursive=False)


def build_python_image(client: object) -> str:
    """The tag of the test image, imported now unless an image with this content exists.

    ``client`` is a ``docker.DockerClient``.
    """
    import docker

    assert isinstance(client, docker.DockerClient)
    files = image_files()
    tag = f"{IMAGE_REPOSITORY}:{_content_hash(files)}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="quipu-test-image-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        _tar(files, tarball)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_file(str(tarball), repository=repository, tag=version,
                                          changes=['ENV PATH=/usr/local/bin:/usr/bin:/bin',
                                                   'CMD ["/usr/bin/python3"]'])
    client.images.get(tag)  # raises if the import did not produce it
    return tag


def build_derived_image(client: object, base: str, tag: str, *,
                        distributions: dict[str, str] | None = None,
                        env: dict[str, str] | None = None) -> str:
    """Build ``tag`` FROM ``base`` (a local image: nothing is pulled, no shell is needed) with
    the ``name: version`` distributions installed as bare ``.dist-info`` metadata in its
    site-packages and ``env`` set by ``ENV``; returns ``tag``."""
    import docker

    assert isinstance(client, docker.DockerClient)
    lines = [f"FROM {base}"]
    with tempfile.TemporaryDirectory(prefix="quipu-test-derived-") as tmp:
        for name, version in (distributions or {}).items():
            info = Path(tmp) / f"{name}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
            lines.append(f"COPY {info.name} /{_SITE}/{info.name}")
        lines += [f"ENV {name}={value}" for name, value in (env or {}).items()]
        (Path(tmp) / "Dockerfile").write_text("\n".join(lines) + "\n")
        client.images.build(path=tmp, tag=tag, rm=True, pull=False)
    return tag
