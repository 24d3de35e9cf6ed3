"""A plain ``quipu status`` without opening the project, when STATE.md provably shows the log.

Opening a project imports the event models, the views and the command handlers: about 0.3 s
before anything is read. A plain ``quipu status`` only prints STATE.md, and STATE.md is a
function of three things: the log (up to some position), each mounted slot's dirty flag, and
``quipu.yaml``. So every time the facade has STATE.md in hand it also writes
``.quipu/STATE.md.key``, recording exactly those inputs:

* the log position the text was rendered at and the log's chain hash there (the chain hash
  commits to every event up to that position, so an equal hash at an equal head means the
  same history: a restored older copy, a rewritten row or a new event all change it);
* each shown slot with the manifest of its workspace and the dirty flag the text shows;
* the sha256 of the ``quipu.yaml`` bytes the project was opened with, and of the text itself.

``read_state_md`` checks all of them with the standard library and a read-only ``sqlite3``
connection, and returns STATE.md's text only when every one still holds; anything missing,
unreadable, different or unexpected returns ``None`` and the caller opens the project as usual
(which catches the views up and rewrites STATE.md and its key). It never writes the log, the
views or STATE.md, and never raises. Only the embedded SQLite log has a key: with PostgreSQL
every ``quipu status`` opens the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from quipu.core.chain import split_state, stored_state

if TYPE_CHECKING:
    from quipu.core.ports import BlobStore

__all__ = ["KEY_FILE", "LocalStatusKey", "read_state_md"]

KEY_FILE = "STATE.md.key"
"""The key's name, in the project's ``.quipu/`` directory."""

FORMAT = 1
_CONFIG_FILE = "quipu.yaml"
_DATA_DIR = ".quipu"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LocalStatusKey:
    """Writes ``.quipu/STATE.md.key`` for a project whose log is an SQLite file.

    Built by the composition root, which knows where the log, the slots and the slot cache
    are, and which bytes of ``quipu.yaml`` it parsed (``config_sha256``).
    """

    root: Path
    log_file: Path
    table: str
    slots_root: Path
    slot_cache: Path
    ignore: tuple[str, ...]
    config_sha256: str
    eventstore_env: str | None
    """``$QUIPU_EVENTSTORE_URL`` when the project was opened: a reader with another value
    reads another log, so it must not trust this key."""

    def write(self, *, position: int, chain_hash: str, text: str,
              slots: Sequence[tuple[str, str | None, str | None, bool | None]]) -> None:
        """Record that ``text`` is STATE.md for the log up to ``position`` (whose chain hash is
        ``chain_hash``) and for ``slots`` as (slot, workspace, manifest, dirty).

        Atomic (a unique temporary, then a rename); a failure leaves the old key or none, and
        is swallowed: the key is only a shortcut, and a stale one never verifies.
        """
        key = {
            "format": FORMAT, "log_file": str(self.log_file), "table": self.table,
            "eventstore_env": self.eventstore_env, "config_sha256": self.config_sha256,
            "position": position, "chain_hash": chain_hash,
            "state_md_sha256": _sha256(text.encode("utf-8")),
            "slots_root": str(self.slots_root), "slot_cache": str(self.slot_cache),
            "ignore": list(self.ignore),
            "slots": [[slot, workspace, manifest, dirty]
                      for slot, workspace, manifest, dirty in slots],
        }
        path = self.root / _DATA_DIR / KEY_FILE
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
        try:
            with open(tmp, "x", encoding="utf-8") as f:
                json.dump(key, f)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _find_root(project: Path | None) -> Path | None:
    env = os.environ.get("QUIPU_PROJECT")
    here = (Path(env) if env and project is None else (project or Path.cwd())).resolve()
    for candidate in (here, *here.parents):
        if (candidate / _CONFIG_FILE).is_file():
            return candidate
    return None


def _log_head(log_file: str, table: str) -> tuple[int, str] | None:
    """(position, chain hash) of the newest event, read without writing anything."""
    if not table.isidentifier():
        return None
    uri = f"{Path(log_file).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    try:
        row = conn.execute(
            f"SELECT rowid, state FROM {table} ORDER BY rowid DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    position = int(row[0])
    return position, split_state(stored_state(position, row[1])).hash


def _slots_match(key: dict[str, Any]) -> bool:
    """Whether every mounted slot is still as dirty (or clean) as STATE.md says."""
    mounted = [s for s in key["slots"] if s[1] is not None]
    if not mounted:
        return True
    from quipu.adapters.slots.local import LocalSlotFiles

    files = LocalSlotFiles(Path(key["slots_root"]), cast("BlobStore", None),
                           Path(key["slot_cache"]), ignore=tuple(key["ignore"]))
    return all(files.is_dirty(slot, manifest) is bool(dirty)
               for slot, _workspace, manifest, dirty in mounted)


def read_state_md(project: Path | None = None) -> str | None:
    """STATE.md's text if it provably shows the project's log and slots as they are now, else
    ``None`` (the caller then opens the project). ``project`` is found as ``quipu status``
    finds it: the given directory or ``$QUIPU_PROJECT`` or the current one, then upwards."""
    try:
        root = _find_root(project)
        if root is None:
            return None
        key = json.loads((root / _DATA_DIR / KEY_FILE).read_bytes())
        if not isinstance(key, dict) or key.get("format") != FORMAT:
            return None
        if key["eventstore_env"] != os.environ.get("QUIPU_EVENTSTORE_URL"):
            return None
        if key["config_sha256"] != _sha256((root / _CONFIG_FILE).read_bytes()):
            return None
        if _log_head(key["log_file"], key["table"]) != (key["position"], key["chain_hash"]):
            return None
        data = (root / "STATE.md").read_bytes()
        if _sha256(data) != key["state_md_sha256"]:
            return None
        if not _slots_match(key):
            return None
        return data.decode("utf-8")
    except Exception:  # any doubt at all: open the project instead
        return None
