"""The package version (one place; ``u2seg.__version__`` re-exports it)."""

__version__ = "0.1.0"
