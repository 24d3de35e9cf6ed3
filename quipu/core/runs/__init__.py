"""Runs: the lifecycle table, the Run aggregate, its events, results and command handlers."""

__all__: list[str] = []
