"""The source registry: datasets registered by content hash, with strictly validated metadata."""

__all__: list[str] = []
