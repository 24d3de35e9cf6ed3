"""``python -m quipu.mcp``: serve the project at ``$QUIPU_PROJECT`` (or the cwd) over stdio."""

import sys

from quipu.core.errors import QuipuError

from .server import serve


def main() -> int:
    """Serve until the client disconnects; a project that cannot be opened exits with 2."""
    try:
        serve(None)
    except QuipuError as exc:
        print(f"quipu: [{exc.code}] {exc.message}"
              + (f" Hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
