"""The facade's image operations (``manage_images``, ``quipu image ...``): list, inspect and
build the project's container images. ``quipu.app.facade.Quipu`` inherits them; the adapter
(``core.ports.Images``) is handed over by ``bootstrap``. Nothing here writes to the log: an
image is recorded where it matters, with each launch that runs in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quipu.core.errors import InvalidInput

if TYPE_CHECKING:
    from quipu.core.ports import Images

__all__ = ["IMAGE_ACTIONS", "MAX_IMAGES_LISTED", "ImageCommands"]

IMAGE_ACTIONS = ("list", "inspect", "build")
MAX_IMAGES_LISTED = 50
"""Most images one ``list`` answer holds (``total`` counts all)."""


class ImageCommands:
    """Mixin: the project's images through the ``Images`` port."""

    images: Images

    def manage_images(self, action: str, *, image: str | None = None, base: str | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """list: {images, total}; inspect: one image (``image`` = tag or id); build: the
        project image from ``base`` + requirements.txt or the project's Dockerfile, reused
        when its content hash is unchanged ({image, id, reused, context_hash, ...})."""
        if action == "list":
            rows = self.images.list_images()
            return {"images": rows[:MAX_IMAGES_LISTED], "total": len(rows),
                    "has_more": len(rows) > MAX_IMAGES_LISTED}
        if action == "inspect":
            if not image:
                raise InvalidInput("inspect needs the image (a tag or an id)",
                                   code="missing_image", hint="pass image='quipu-proj:abc123'")
            return self.images.inspect(image)
        if action == "build":
            return self.images.build(base=base, progress=progress)
        raise InvalidInput(f"unknown action {action!r}", code="unknown_action",
                           hint=f"one of: {', '.join(IMAGE_ACTIONS)}")
