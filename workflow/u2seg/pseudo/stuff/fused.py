"""The k-means stuff model without stored features (``pipeline.fused`` with ``features.keep_features: false``).

:func:`u2seg.pseudo.stuff.model.sample_patches` draws one seeded sample over the (shard, image, patch)
order of the whole dataset; the picks depend only on the shards' image counts, the patches per image,
``n_sample`` and the seed. So each shard's share is computable in the fused per-shard pass
(:func:`shard_sample_picks`, :func:`shard_sample_rows`), the fit reads the shares concatenated in shard
order (:func:`load_shard_samples`: the very sample of ``sample_patches``), and the maps are made per shard
from features recomputed in memory (:func:`write_shard_maps`, ``u2seg stuff-shard``), then gathered
(:func:`gather_kmeans_maps`) into the outputs ``u2seg cluster-stuff`` writes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from u2seg.atomic import atomic_path, write_json
from u2seg.crf import CRFParams
from u2seg.errors import UserError

log = logging.getLogger(__name__)


def sample_size(counts: Sequence[int], patches_per_image: int, n_sample: int) -> int:
    """Rows of the whole sample: min(n_sample, all patches)."""
    return min(int(n_sample), int(sum(counts)) * int(patches_per_image))


def shard_sample_picks(counts: Sequence[int], patches_per_image: int, n_sample: int, seed: int,
                       shard: int) -> np.ndarray:
    """Sorted patch indices (image * patches_per_image + patch, within shard ``shard``) that
    :func:`~u2seg.pseudo.stuff.model.sample_patches` picks from that shard (same draw, same order)."""
    total = int(sum(counts)) * int(patches_per_image)
    if total == 0:
        raise ValueError("no patches to sample from")
    if not 0 <= shard < len(counts):
        raise ValueError(f"shard {shard} outside 0..{len(counts) - 1}")
    m = sample_size(counts, patches_per_image, n_sample)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=m, replace=False))
    lo = int(sum(counts[:shard])) * patches_per_image
    hi = lo + int(counts[shard]) * patches_per_image
    a, b = np.searchsorted(picks, [lo, hi])
    return picks[a:b] - lo


def shard_sample_rows(dense: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """The picked patch rows (m, C) float16 of a shard's dense maps (n, C, h, w)."""
    n, c, h, w = dense.shape
    ppi = h * w
    if len(picks) and int(picks[-1]) >= n * ppi:
        raise ValueError(f"a pick ({int(picks[-1])}) beyond the shard's {n * ppi} patches")
    flat = dense.reshape(n, c, ppi)
    return np.asarray(flat[picks // ppi, :, picks % ppi], dtype=np.float32).astype(np.float16)


def save_shard_sample(path: Path, rows: np.ndarray) -> None:
    """Atomically save a shard's sampled rows (``.npy``, float16)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(rows, dtype=np.float16))


def load_shard_samples(paths: Sequence[Path]) -> np.ndarray:
    """The shards' sampled rows concatenated in shard order (= ``sample_patches`` over all shards)."""
    parts = []
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"{p}: missing stuff sample of a shard (rerun shard_pass)")
        parts.append(np.load(p, allow_pickle=False))
    dims = {part.shape[1] for part in parts if part.ndim == 2}
    if len(dims) != 1 or any(part.ndim != 2 for part in parts):
        raise UserError(f"the per-shard stuff samples disagree on their shape: {[part.shape for part in parts]}")
    return np.concatenate(parts).astype(np.float16, copy=False)


def write_shard_maps(model: Any, dense: np.ndarray, images: list[dict[str, Any]], rgb_of: Any,
                     crf: CRFParams | None, folder: Path) -> None:
    """One shard's stuff PNGs (``u2seg cluster-stuff``'s maps) + ``_shard.json`` (pixel counts, grid, crf)
    into ``folder``; ``rgb_of(image)`` gives the RGB array (read only with the CRF)."""
    from u2seg.pseudo.io import png_name, save_png_plain
    from u2seg.pseudo.stuff.model import stuff_map

    t0 = time.perf_counter()
    k = model.num_classes
    pixels = np.zeros(k, dtype=np.int64)
    with atomic_path(folder, directory=True) as tmp:
        for im, d in zip(images, dense):
            rgb = rgb_of(im) if crf is not None else None
            labels = stuff_map(model, np.asarray(d, dtype=np.float32), im["height"], im["width"], rgb, crf)
            pixels += np.bincount(labels.ravel(), minlength=k)[:k]
            save_png_plain(tmp / png_name(im), labels)
        write_json(tmp / "_shard.json", {"images": len(images), "pixels": pixels.tolist(),
                                         "dense_shape": [int(v) for v in dense.shape[1:]], "crf": crf is not None,
                                         "seconds": round(time.perf_counter() - t0, 3)})


def gather_kmeans_maps(*, manifest_path: Path, shard_size: int, maps_dir: Path, model_path: Path, k: int,
                       out_maps: Path, summary_path: Path) -> int:
    """The per-shard k-means maps into ``out_maps`` + the summary ``u2seg cluster-stuff`` writes."""
    from u2seg.pseudo.io import read_manifest
    from u2seg.pseudo.stuff.maps import gather_maps
    from u2seg.pseudo.stuff.registry import load_stuff_model

    manifest = read_manifest(manifest_path)
    model = load_stuff_model(model_path)
    if model.num_classes != k:
        raise UserError(f"the stuff model has {model.num_classes} clusters, stuff.k is {k}")
    t0 = time.perf_counter()
    first = json.loads((Path(maps_dir) / "shard_00000" / "_shard.json").read_text())
    channels, gh, gw = first["dense_shape"]
    pixels, n_images = gather_maps(manifest, shard_size, Path(maps_dir), out_maps)
    summary = {
        "model": model.kind, "k": k, "feature_dim": int(channels), "grid": [int(gh), int(gw)],
        "sampled_patches": int(model.fit_info["rows"]), "fit": model.fit_info, "crf": bool(first["crf"]),
        "images": n_images, "pixel_fraction": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "empty_clusters": int((pixels == 0).sum()), "seconds": {"gather": round(time.perf_counter() - t0, 3)},
    }
    write_json(summary_path, summary, indent=1)
    log.info("stuff: %d maps gathered -> %s (%d clusters unused)", n_images, out_maps, summary["empty_clusters"])
    return 0


def fit_from_shard_samples(*, manifest_path: Path, shard_size: int, sample_dir: Path, k: int, iterations: int,
                           seed: int, chunk_size: int, device: str, threads: int | None, out_model: Path) -> int:
    """Fit the k-means stuff model on the shards' samples (``sample_dir/shard_XXXXX.npy``, written by the
    fused pass) exactly as :func:`~u2seg.pseudo.stuff.maps.kmeans_stuff_maps` fits it; save ``out_model``."""
    from u2seg.device import resolve_device
    from u2seg.pseudo.io import num_shards, read_manifest, set_threads
    from u2seg.pseudo.stuff.model import KMeansStuffModel, fit_stuff_model

    set_threads(threads)
    if not 1 <= k <= 254:
        raise UserError(f"stuff.k must be in 1..254 (the semantic PNG is uint8 with 255 = void), got {k}")
    manifest = read_manifest(manifest_path)
    paths = [Path(sample_dir) / f"shard_{s:05d}.npy" for s in range(num_shards(manifest, shard_size))]
    sample = load_shard_samples(paths)
    if len(sample) < k:
        raise UserError(f"only {len(sample)} patches for stuff.k={k} clusters")
    log.info("stuff: %d sampled patches of dim %d from %d shards", len(sample), sample.shape[1], len(paths))
    model = fit_stuff_model(KMeansStuffModel(k, iterations, seed, resolve_device(device)), sample, chunk_size)
    model.save(out_model)
    return 0
