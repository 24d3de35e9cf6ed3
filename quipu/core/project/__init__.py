"""The project itself, thoughts and readers' cursors."""

__all__: list[str] = []
