#!/usr/bin/env bash
# The one test command (README and CI): lint, types, architecture rules, then the test suite.
# Extra arguments go to pytest, e.g. `./test.sh tests/unit -k upcast`.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  python=$(command -v python3.11 || command -v python3)
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"

ruff check quipu tests bench
mypy
lint-imports
pytest -q "$@"
