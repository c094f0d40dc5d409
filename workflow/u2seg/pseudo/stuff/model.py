"""Unsupervised stuff (semantic) pseudo-labels (docs/method.md §5, without STEGO's supervised linear probe).

``StuffModel`` is the interface: ``fit(patches)`` over a stream of patch features, ``scores(dense)``
per class for one image's dense map (C, h, w), ``predict(dense)`` the label map (h, w). The first
implementation, :class:`KMeansStuffModel`, is cosine k-means over L2-normalised patch features (like
STEGO's cluster probe, which compares normalised features with normalised centroids), fitted on a
seeded sample of patches drawn from every shard. Label maps are upsampled to the image size with
nearest neighbour; an optional dense CRF refines them with the image (STEGO's CRF recipe).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from u2seg.atomic import atomic_path
from u2seg.crf import CRFParams, refine_scores
from u2seg.params import STUFF_CLUSTERS
from u2seg.pseudo.kmeans import ArraySource, RowSource, kmeans


class StuffModel(ABC):
    """A stuff model: fitted on patch features, predicts a class per patch of one image."""

    kind: str = ""
    num_classes: int = 0

    @abstractmethod
    def fit(self, patches: RowSource) -> "StuffModel":
        """Fit on a stream of (m, C) patch-feature chunks."""

    @abstractmethod
    def scores(self, dense: np.ndarray) -> np.ndarray:
        """Per-class scores (S, h, w) float32 of a dense map (C, h, w); higher = more likely."""

    def predict(self, dense: np.ndarray) -> np.ndarray:
        """Label map (h, w) int64 in 0..S-1 of a dense map (C, h, w)."""
        return self.scores(dense).argmax(axis=0).astype(np.int64)

    def upsampled_scores(self, dense: np.ndarray, height: int, width: int) -> np.ndarray | None:
        """Scores (S, height, width) at image size when the model upsamples before scoring (STEGO
        upsamples its code); None = score the grid, then upsample the labels (k-means)."""
        return None

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "StuffModel":
        """The model saved as (meta, arrays) by :meth:`save`."""
        raise NotImplementedError(f"{cls.__name__} cannot be loaded from a file")

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(json-able meta, arrays) that ``u2seg.pseudo.stuff.registry.load_stuff_model`` rebuilds the model from."""

    def save(self, path: str | Path) -> None:
        """Atomically save as ``.npz`` (arrays + ``meta`` json)."""
        meta, arrays = self.state()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(dict(meta, kind=self.kind))), **arrays)


class KMeansStuffModel(StuffModel):
    """Cosine k-means over L2-normalised patch features; predict = argmax cosine similarity."""

    kind = "kmeans"

    def __init__(self, k: int = STUFF_CLUSTERS, iterations: int = 100, seed: int = 0, device: str = "cpu",
                 centroids: np.ndarray | None = None):
        self.num_classes = int(k)
        self.iterations = int(iterations)
        self.seed = int(seed)
        self.device = device
        self.centroids = None if centroids is None else np.asarray(centroids, dtype=np.float32)
        self.fit_info: dict[str, Any] = {}

    def fit(self, patches: RowSource) -> "KMeansStuffModel":
        result = kmeans(patches, self.num_classes, self.iterations, self.seed, spherical=True,
                        device=self.device)
        self.centroids = result.centroids
        self.fit_info = {"iterations": result.iterations, "converged": result.converged,
                         "reseeded": result.reseeded,
                         "unresolved_empty": result.unresolved_empty, "rows": patches.n_rows}
        return self

    def scores(self, dense: np.ndarray) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("the stuff model is not fitted")
        c, h, w = dense.shape
        if c != self.centroids.shape[1]:
            raise ValueError(f"dense features have {c} channels, the stuff model {self.centroids.shape[1]}")
        x = dense.reshape(c, h * w).T.astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return (x @ self.centroids.T).T.reshape(self.num_classes, h, w).astype(np.float32)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.centroids is None:
            raise RuntimeError("the stuff model is not fitted")
        meta = {"k": self.num_classes, "iterations": self.iterations, "seed": self.seed,
                "fit": self.fit_info}
        return meta, {"centroids": self.centroids}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "KMeansStuffModel":
        model = cls(meta["k"], meta["iterations"], meta["seed"], centroids=arrays["centroids"])
        model.fit_info = meta.get("fit", {})
        return model


# ------------------------------------------------------------------------------- patch sampling
def sample_patches(dense_maps: Sequence[Callable[[], Iterable[np.ndarray]]], counts: Sequence[int],
                   patches_per_image: int, n_sample: int, seed: int) -> np.ndarray:
    """Seeded uniform sample (without replacement) of patch feature rows from every shard.

    ``dense_maps[s]()`` returns shard s's dense maps (C, h, w) (``counts[s]`` images,
    ``patches_per_image`` patches each): an array indexed by image (e.g. the shard's zarr ``dense``
    array: only the images holding sampled patches are read), or an iterator over the images. Returns (m, C) float16 rows, m = min(n_sample, total),
    in shard/image/patch order; only the sample and one image are in memory.
    """
    total = int(sum(counts)) * patches_per_image
    if total == 0:
        raise ValueError("no patches to sample from")
    m = min(int(n_sample), total)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=m, replace=False))
    out: np.ndarray | None = None
    filled = 0
    offset = 0
    for shard_maps, n in zip(dense_maps, counts):
        lo_s, hi_s = np.searchsorted(picks, [offset, offset + n * patches_per_image])
        if hi_s == lo_s:  # nothing sampled from this shard: do not read it
            offset += n * patches_per_image
            continue
        maps = shard_maps()
        if hasattr(maps, "shape") and hasattr(maps, "__getitem__"):  # an array (zarr): read picked images only
            if maps.shape[0] != n:
                raise ValueError(f"a shard has {maps.shape[0]} dense maps, expected {n}")
            firsts = np.searchsorted(picks, offset + patches_per_image * np.arange(n + 1))
            picked = np.flatnonzero(firsts[1:] > firsts[:-1]).tolist()
            images = (maps[j] for j in picked)
            offsets = iter([offset + patches_per_image * j for j in picked])
            offset += n * patches_per_image
        else:
            images, offsets = maps, None
        for dense in images:
            dense = np.asarray(dense, dtype=np.float32)
            at = next(offsets) if offsets is not None else offset
            c = dense.shape[0]
            if dense.shape[1] * dense.shape[2] != patches_per_image:
                raise ValueError("every dense map must have the same number of patches")
            lo, hi = np.searchsorted(picks, [at, at + patches_per_image])
            if hi > lo:
                if out is None:
                    out = np.empty((m, c), dtype=np.float16)
                rows = dense.reshape(c, -1).T
                out[filled:filled + hi - lo] = rows[picks[lo:hi] - at]
                filled += hi - lo
            if offsets is None:
                offset += patches_per_image
    if out is None or filled != m:
        raise ValueError(f"sampled {filled} patches, expected {m} (image counts do not match the shards)")
    return out


def fit_stuff_model(model: StuffModel, sample: np.ndarray, chunk_size: int) -> StuffModel:
    """Fit ``model`` on an in-memory sample streamed in ``chunk_size`` rows (float32 per chunk)."""
    return model.fit(ArraySource(sample, chunk_size))


# --------------------------------------------------------------------------- upsampling and CRF
def nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output pixel for nearest resampling with pixel centres aligned."""
    idx = np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def upsample_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest resize of a (h, w) label map to (height, width) (the dense grid covers the whole image)."""
    return labels[nearest_indices(height, labels.shape[0])][:, nearest_indices(width, labels.shape[1])]


def stuff_map(model: StuffModel, dense: np.ndarray, height: int, width: int,
              image: np.ndarray | None = None, crf: CRFParams | None = None) -> np.ndarray:
    """Stuff label map (height, width) uint8 in 0..S-1 of one image (CRF needs ``image``)."""
    full = model.upsampled_scores(dense, height, width)
    if crf is not None:
        if image is None or image.shape[:2] != (height, width):
            raise ValueError("the CRF needs the RGB image at (height, width)")
        return refine_scores(image, model.scores(dense) if full is None else full, crf).astype(np.uint8)
    if full is not None:
        return full.argmax(axis=0).astype(np.uint8)
    return upsample_nearest(model.predict(dense), height, width).astype(np.uint8)
