"""Settings of the streaming k-means (:mod:`u2seg.pseudo.kmeans`) shared by ``u2seg cluster-instances`` and
``u2seg cluster-stuff`` (torch-free; their flags are generated from :class:`KMeansParams`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KMeansParams:
    """Streaming Lloyd k-means settings (docs/method.md §4)."""

    iterations: int = 100  # maximum k-means (Lloyd) iterations
    seed: int = 0  # seed of the k-means initialisation
    chunk_size: int = 65536  # rows read from disk per streamed k-means step
