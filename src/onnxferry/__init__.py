"""onnxferry (API assembled once all modules land)."""

from ._version import __version__

__all__ = ["__version__"]
