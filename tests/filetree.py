"""Files on disk as the tests compare them: a tree of paths to (kind, content, mode)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

Tree = dict[str, tuple[str, bytes | str, int]]


def tree(root: Path, *, dirs: bool = True) -> Tree:
    """Everything under ``root``: path -> ("file", bytes, mode), ("link", target, 0) and, with
    ``dirs``, ("dir", "", 0). An absent root holds nothing."""
    out: Tree = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full), 0)
            elif full.is_file():
                out[rel] = ("file", full.read_bytes(), stat.S_IMODE(full.lstat().st_mode))
            elif dirs:
                out[rel] = ("dir", "", 0)
    return out


def write(path: Path, content: str | bytes, mode: int | None = None) -> Path:
    """Write ``content`` at ``path`` (parents made), with ``mode`` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    if mode is not None:
        path.chmod(mode)
    return path
