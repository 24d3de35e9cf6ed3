"""Docker: the stage backend that runs each stage in a container, and the project's images.

The package imports lazily, so opening a project that runs stages as local processes never
imports the ``docker`` SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import DockerBackend
    from .images import DockerImages

__all__ = ["DockerBackend", "DockerImages"]


def __getattr__(name: str) -> Any:
    if name == "DockerBackend":
        from .backend import DockerBackend

        return DockerBackend
    if name == "DockerImages":
        from .images import DockerImages

        return DockerImages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
