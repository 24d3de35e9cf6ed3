"""The SVS adapters that follow runs as they go and after they end.

``RunMonitor`` watches running runs' metrics and heartbeats and records ``during_run``
findings (and, with ``auto_stop``, ``StopRequested``); ``PostRunReviewer`` suggests an ML
outcome for every run that ends (``OutcomeSuggested``). Both follow the log from their own
position and wake on appends (``quipu.adapters._follow.LogFollower``);
``quipu.app.bootstrap`` starts them with the executor.
"""

from __future__ import annotations

from .monitor import RunMonitor, WindowReview
from .post_run import PostRunReviewer

__all__ = ["PostRunReviewer", "RunMonitor", "WindowReview"]
