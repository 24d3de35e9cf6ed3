"""The SVS adapters that follow runs as they go and after they end.

``RunMonitor`` watches running runs' metrics and heartbeats and records ``during_run``
findings (and, with ``auto_stop``, ``StopRequested``); ``PostRunReviewer`` suggests an ML
outcome for every run that ends (``OutcomeSuggested``). Both follow the log from their own
position and wake on appends, like the executor; ``quipu.app.bootstrap`` starts them with it.
"""

from __future__ import annotations

from ._follow import LogFollower
from .monitor import RunMonitor, WindowReview
from .post_run import PostRunReviewer

__all__ = ["LogFollower", "PostRunReviewer", "RunMonitor", "WindowReview"]
