"""Workspaces, slots and versions: the aggregates, their events and their command handlers."""

__all__: list[str] = []
