"""The application: the facade every entry point calls, and the one composition root."""

__all__: list[str] = []
