"""Exports of the log in formats other tools read: W3C PROV-JSON and OpenLineage run events.

Each export is a pure function of the log up to a position: it folds the events itself (never
the views), so ``until`` gives the graph exactly as it stood then. This package imports only
``quipu.core`` and the lineage facts of ``quipu.projections`` (an import-linter contract).
"""

from quipu.exports._history import History, read_history
from quipu.exports.openlineage import openlineage_events
from quipu.exports.prov import prov_document

__all__ = ["History", "openlineage_events", "prov_document", "read_history"]
