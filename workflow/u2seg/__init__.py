"""u2seg: unsupervised universal image segmentation (U2Seg) as a resumable pipeline.

``u2seg.load_model(name_or_path)`` (:func:`u2seg.segment.api.load_model`) segments your own images; it is
imported on first use, so that ``import u2seg`` loads no torch.
"""
from __future__ import annotations

from typing import Any

from u2seg.version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from u2seg.segment.api import load_model

        return load_model
    raise AttributeError(f"module 'u2seg' has no attribute {name!r}")
