"""Reading the audit key: the secret behind the keyed chain, kept in a file outside the log."""

from __future__ import annotations

from pathlib import Path

from quipu.core.errors import InvalidInput

__all__ = ["MIN_KEY_BYTES", "read_key_file"]

MIN_KEY_BYTES = 16


def read_key_file(path: Path) -> bytes:
    """The key held in ``path`` (trailing whitespace dropped, so ``openssl rand -hex 32 > f``
    works). Raises ``InvalidInput`` when the file cannot be read or holds too short a key."""
    try:
        key = path.read_bytes().rstrip()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the audit key file {path}: {exc}",
            code="audit_key_unreadable",
            hint="check audit.key_file in quipu.yaml or $QUIPU_AUDIT_KEY_FILE and the file's "
            "permissions",
        ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(
            f"the audit key in {path} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed",
            code="audit_key_too_short",
            hint="write a random key, e.g. `openssl rand -hex 32 > KEYFILE`, and keep it away "
            "from the database",
        )
    return key
