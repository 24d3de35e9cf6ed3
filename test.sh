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
# tests/ too, not strictly (tests/mypy.ini). tests/unit and tests/e2e each have a conftest.py, which
# mypy would see as one module twice, so tests/unit gets its own pass (its shared helpers are in
# tests/unit_support.py).
mypy --config-file tests/mypy.ini tests --exclude tests/unit
MYPYPATH=tests:tests/unit mypy --config-file tests/mypy.ini tests/unit
lint-imports
pytest -q "$@"
