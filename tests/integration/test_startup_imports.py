"""What a command imports: `quipu status` must not pay for libraries it never uses.

Each check runs in a fresh interpreter (a subprocess), because this test process has long since
imported everything. No timing is asserted; the modules loaded are the observable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from quipu.app.bootstrap import init_project

HEAVY = ("sklearn", "pyarrow", "pandas", "numpy", "fastmcp", "mcp", "rich",
         "eventsourcing.postgres", "psycopg")

PROBE = textwrap.dedent("""\
    import json, sys
    from quipu.cli import main
    try:
        main(["--project", sys.argv[1], *sys.argv[2:]], standalone_mode=False)
    except SystemExit:
        pass
    print(json.dumps(sorted(m for m in sys.modules)), file=sys.stderr)
    """)


def loaded_by(root: Path, *command: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(root), *command],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_quipu_status_imports_no_dataframe_ml_or_mcp_library(tmp_path: Path) -> None:
    q = init_project(tmp_path / "p", name="p", goal="check what status imports")
    q.create_workspace("ws", "a workspace", "give status something to show")
    q.close()
    loaded = loaded_by(tmp_path / "p", "status")
    assert "quipu.projections" in loaded  # it did the real work
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_quipu_status_json_imports_none_of_them_either(tmp_path: Path) -> None:
    init_project(tmp_path / "p", name="p", goal="check what status imports").close()
    loaded = loaded_by(tmp_path / "p", "status", "--json")
    assert sorted(m for m in HEAVY if m in loaded) == []


SERVE_PROBE = textwrap.dedent("""\
    import json, sys
    from pathlib import Path
    from quipu.app.bootstrap import open_project
    from quipu.mcp.server import build_server
    q = open_project(Path(sys.argv[1]))
    q.start_workers()
    build_server(q)
    q.close()
    print(json.dumps(sorted(m for m in sys.modules)), file=sys.stderr)
    """)


def test_the_mcp_engine_starts_without_pyarrow_or_sklearn(tmp_path: Path) -> None:
    """What `quipu serve` does before its first answer: open, start the workers, build tools."""
    init_project(tmp_path / "p", name="p", goal="check what serve imports").close()
    proc = subprocess.run([sys.executable, "-c", SERVE_PROBE, str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "fastmcp" in loaded
    assert sorted(m for m in ("sklearn", "pyarrow", "pandas") if m in loaded) == []
