"""Pre-run reviewers (``core.ports.Reviewer``) and the adapter that runs them from the log.

``StaticReviewer`` (deterministic, always first), ``LlmReviewer`` (an OpenAI-compatible or
Anthropic HTTP API), ``CommandReviewer`` (an external program speaking JSON on stdin/stdout),
and ``ReviewWorker``, which follows the log and records ``ReviewStarted``/``ReviewCompleted``.
"""

from quipu.adapters.reviewers.static import StaticReviewer
from quipu.adapters.reviewers.worker import ReviewWorker, no_patterns

__all__ = ["ReviewWorker", "StaticReviewer", "no_patterns"]
