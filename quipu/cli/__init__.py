"""The ``quipu`` command line: a module per command group, all hung on one ``main`` group.

``_root`` holds the group and what every command shares (the error edge, opening the project,
JSON output); ``project`` the project-wide commands; ``audit`` the tamper-evidence commands;
``workspace``, ``runs`` and ``sources`` their groups; ``lineage`` the provenance graph;
``compare`` what changed between two runs or versions; ``export`` PROV and OpenLineage;
``images`` the container images of the Docker backend.
``patterns`` the failure patterns.
Importing this package registers them all.
"""

from __future__ import annotations

from quipu.cli import (
    audit,
    compare,
    export,
    images,
    lineage,
    patterns,
    project,
    runs,
    sources,
    workspace,
)
from quipu.cli._root import main

__all__ = ["audit", "compare", "export", "images", "lineage", "main", "patterns", "project", "runs",
           "sources", "workspace"]
