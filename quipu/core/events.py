"""The catalog of every event type: importing this module registers all of them.

Events live with their domain; a reader of the whole log (decoding, projections, audits) imports
this catalog so that any stored type can be decoded. Adding a domain with events means adding its
``events`` module here.
"""

from __future__ import annotations

from quipu.core.patterns import events as patterns
from quipu.core.project import events as project
from quipu.core.reviews import events as reviews
from quipu.core.runs import events as runs
from quipu.core.sources import events as sources
from quipu.core.workspaces import events as workspaces

__all__ = ["patterns", "project", "reviews", "runs", "sources", "workspaces"]
