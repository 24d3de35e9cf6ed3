"""Failure patterns: what failed, blocked and stopped runs have in common, learned and used.

Findings of runs that went wrong become candidate patterns (``candidates``), deduplicated by a
stable key; an agent approves or rejects them (``aggregate``, ``handlers``); an approved pattern
with a machine-checkable detection (``detection``) is matched against new stage code, output
statistics and metrics by pure functions the reviewers and the monitor call.
"""

__all__: list[str] = []
