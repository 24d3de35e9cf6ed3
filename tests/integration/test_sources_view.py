"""The sources view folds incrementally to exactly what a rebuild (in tiny pages too) gives,
for random sequences of source commands, refused ones included, over a real SQLite log and
real npy files."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quipu.adapters.eventstore import open_sqlite_store
from quipu.adapters.sources import LocalSourceFiles
from quipu.core.errors import QuipuError
from quipu.core.sources.aggregate import Source
from quipu.core.sources.files import SourcePaths
from quipu.core.sources.handlers import SourceService
from quipu.core.unit_of_work import UnitOfWork
from quipu.projections import Views

ACTOR = "agent:machine"
REASON = "a reason long enough for the service"
NAMES = ("alpha", "beta", "gamma")


class StepClock:
    def __init__(self) -> None:
        self.at = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        self.at += timedelta(seconds=37)
        return self.at


def metadata(path: Path, rows: int, text: str) -> dict[str, Any]:
    return {"schema_version": 1, "description": f"{rows} rows of two features, {text}",
            "source": {"format": "npy", "size_bytes": path.stat().st_size,
                       "created_at": "2024-05-01T12:00:00Z"},
            "schema": {"kind": "tensor", "primary_array": "x",
                       "arrays": {"x": {"role": "features", "shape": [rows, 2],
                                        "dtype": "float32",
                                        "feature_names": {"kind": "sequence"}}}}}


def rows(views: Views) -> list[tuple[Any, ...]]:
    return sorted(views.conn.execute("SELECT * FROM sources").fetchall(), key=repr)


steps = st.lists(st.tuples(st.sampled_from(["register", "update", "retire", "delete",
                                            "consume"]),
                           st.sampled_from(NAMES), st.integers(1, 3)), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_incremental_equals_rebuilt(plan: list[tuple[str, str, int]]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="quipu-sources-view-"))
    store = open_sqlite_store(tmp / "events.db", synchronous="OFF")
    try:
        files = {}
        for n in (1, 2, 3):
            files[n] = tmp / f"x{n}.npy"
            np.save(files[n], np.zeros((n, 2), dtype="float32"))
        uow = UnitOfWork(store, StepClock(), min_reason_length=5)
        service = SourceService(uow, LocalSourceFiles(),
                                SourcePaths(base=str(tmp), roots=(str(tmp),)))
        views = Views(tmp / "views.db", store)
        for i, (kind, name, n) in enumerate(plan):
            try:
                if kind == "register":
                    md = metadata(files[n], n, "as registered")
                    service.register(name, files[n].name, md["description"], REASON, md,
                                     actor=ACTOR)
                elif kind == "update":
                    source = uow.load(Source, name)
                    rows_now = source.metadata["schema"]["arrays"]["x"]["shape"][0] \
                        if source.exists else n
                    service.update(name, metadata(files[rows_now], rows_now, f"edit {i}"),
                                   REASON, actor=ACTOR)
                elif kind == "retire":
                    service.retire(name, REASON, actor=ACTOR)
                elif kind == "delete":
                    service.delete(name, REASON, actor=ACTOR)
                else:
                    source = uow.load(Source, name)
                    source.consume(uow.meta(ACTOR, REASON), run_id=f"stage-{i}",
                                   workspace="ws")
                    uow.commit(source)
            except QuipuError:
                pass  # refused: must leave no trace in the view either
            views.catch_up()
        live = rows(views)
        with Views(tmp / "paged.db", store, page_size=2) as paged:
            paged.rebuild()
            assert rows(paged) == live
        views.rebuild()
        assert rows(views) == live
        views.close()
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
