"""Command-line entry points: thin click skins over the library."""
