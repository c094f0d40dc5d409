"""Settings of the panoptic merge shared by ``u2seg merge-panoptic`` and ``u2seg merge-panoptic-shard``
(torch-free; their flags are generated from :class:`PanopticMergeParams`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PanopticMergeParams:
    """How instances and stuff maps are merged into panoptic pseudo-labels (docs/method.md)."""

    max_thing_overlap: float = 0.7  # drop a stuff cluster's region when more than this fraction of it is covered by things
    gallery_size: int = 8  # images of the whole dataset (fixed hash sample) that get overlay PNGs
    max_merge_pixels: int = 0  # merge larger images on a grid of at most this many pixels, pasted back (0 = off)
