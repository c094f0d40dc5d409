"""``u2seg features``: backbone features of one shard of the manifest, stored as a zarr v3 group.

Each shard is an independent job: an interrupted run recomputes only the shards that are missing.
The store is written into a temporary folder and renamed into place when complete.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from u2seg.version import __version__
from u2seg.atomic import atomic_path
from u2seg.cliargs import add_device_arguments, add_shard_arguments
from u2seg.errors import UserError
from u2seg.images import load_rgb, resize_square
from u2seg.manifest import image_path, load_manifest, num_shards, shard_images
from u2seg.params import add_dataclass_arguments, record_beside

if TYPE_CHECKING:  # torch, zarr and the backbones load where features are computed or read, not for --help
    import torch
    import zarr

    from u2seg.backbones import Backbone

log = logging.getLogger(__name__)


@dataclass
class FeatureParams:
    """Feature-extraction settings (defaults: the MaskCut / U2Seg ViT input size)."""

    input_size: int = 480  # images are resized to this square size (pixels) before the backbone
    batch_size: int = 4  # images per forward pass
    loader_workers: int = 1  # threads decoding and resizing the next images during the forward (0: in the main thread)


@dataclass
class ShardArrays:
    """A feature shard held in memory, read as the zarr group is (``shard["dense"]``, ``shard.attrs``).

    The fused pass (``u2seg shard-pass``) hands it to the stages instead of writing and re-reading a
    zarr store; :func:`write_shard` stores exactly these arrays and attributes.
    """

    name: str  # the zarr store's folder name (log lines and error messages)
    arrays: dict[str, np.ndarray]  # dense (n, C, h, w) float16, global (n, D) float32, image_id, orig_size
    attrs: dict[str, Any]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __str__(self) -> str:
        return f"{self.name} (in memory)"


def shard_arrays(name: str, dense: np.ndarray, global_: np.ndarray, image_ids: np.ndarray, orig_sizes: np.ndarray,
                 attrs: dict[str, Any]) -> ShardArrays:
    """The arrays and attributes of a feature shard, with the stored dtypes (layout in docs/architecture.md)."""
    n = len(image_ids)
    if not (dense.shape[0] == global_.shape[0] == orig_sizes.shape[0] == n):
        raise ValueError("dense, global_, image_ids and orig_sizes must have the same length")
    arrays = {"dense": np.asarray(dense, dtype=np.float16), "global": np.asarray(global_, dtype=np.float32),
              "image_id": np.asarray(image_ids, dtype=np.int64),
              "orig_size": np.asarray(orig_sizes, dtype=np.int32).reshape(n, 2)}
    return ShardArrays(name, arrays, dict(attrs, n_images=n, feature_dim=int(dense.shape[1]),
                                          global_dim=int(global_.shape[1]), u2seg_version=__version__))


def write_shard(path: str | Path, dense: np.ndarray, global_: np.ndarray, image_ids: np.ndarray,
                orig_sizes: np.ndarray, attrs: dict[str, Any]) -> None:
    """Atomically write a feature shard (zarr v3 group; layout in docs/architecture.md)."""
    store_shard(path, shard_arrays(Path(path).name, dense, global_, image_ids, orig_sizes, attrs))


def store_shard(path: str | Path, shard: ShardArrays) -> None:
    """Atomically write an in-memory feature shard as its zarr v3 group."""
    import zarr

    dense = shard["dense"]
    with atomic_path(path, directory=True) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        chunk_n = max(1, min(len(dense), 4))
        group.create_array("dense", data=dense, chunks=(chunk_n,) + tuple(dense.shape[1:]))
        for key in ("global", "image_id", "orig_size"):
            group.create_array(key, data=shard[key])
        group.attrs.update(shard.attrs)


def shard_attrs(backbone: Backbone, input_size: int, shard: int, shard_size: int, seconds: float) -> dict[str, Any]:
    """The attributes a feature shard records about how it was computed (besides :func:`shard_arrays`')."""
    return {"backbone": backbone.name, "weights_sha256": backbone.weights_id, "input_size": input_size,
            "stride": backbone.stride, "shard_index": shard, "shard_size": shard_size, "seconds": round(seconds, 3)}


def open_shard(source: str | Path | ShardArrays) -> zarr.Group | ShardArrays:
    """Open a finished feature shard read-only (an in-memory :class:`ShardArrays` is returned as it is)."""
    if isinstance(source, ShardArrays):
        return source
    import zarr

    path = Path(source)
    if not path.is_dir():
        raise UserError(f"feature shard not found: {path}")
    return zarr.open_group(str(path), mode="r")


def forward_batch(backbone: Backbone, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Dense (B, C, h, w) float16 and global (B, D) float32 features of a preprocessed batch."""
    import torch

    device = next(backbone.parameters()).device
    with torch.inference_mode():
        dense, glob = backbone(x.to(device))
    return dense.float().cpu().numpy().astype(np.float16), glob.float().cpu().numpy().astype(np.float32)


def load_resized(manifest: dict[str, Any], im: dict[str, Any], size: int) -> np.ndarray:
    """One manifest image decoded, checked against its ingested size and resized to ``size`` x ``size``
    (LANCZOS, as ``Backbone.preprocess``); runs in the loader threads."""
    arr = load_rgb(image_path(manifest, im))
    if arr.shape[:2] != (im["height"], im["width"]):
        raise UserError(f"{im['file_name']}: size changed since ingestion "
                        f"({arr.shape[1]}x{arr.shape[0]} vs {im['width']}x{im['height']}); rerun ingest")
    return resize_square(arr, size)


def _load_batch(manifest: dict[str, Any], batch_meta: list[dict[str, Any]], backbone: Backbone,
                size: int) -> torch.Tensor:
    """Decode and preprocess one batch of manifest images in this thread (kept for callers of the former
    prefetch helper; :func:`preprocessed_batches` overlaps this with the forward)."""
    return backbone.preprocess([load_resized(manifest, im, size) for im in batch_meta], size)


def preprocessed_batches(manifest: dict[str, Any], images_meta: list[dict[str, Any]], backbone: Backbone,
                         size: int, batch_size: int, loader_workers: int = 1
                         ) -> Iterator[tuple[list[dict[str, Any]], torch.Tensor]]:
    """``(batch metadata, preprocessed (B, 3, size, size) tensor)`` per batch, in order.

    ``loader_workers`` threads (PIL decodes and resizes outside the GIL) work up to one batch ahead of
    the consumer, so decoding overlaps the forward of the previous batch; 0 decodes in this thread.
    """
    from u2seg.overlap import OrderedPool

    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if size % backbone.stride:  # fail before decoding anything (preprocess checks it too)
        raise UserError(f"input size {size} is not a multiple of the backbone stride {backbone.stride}")
    items = ((im["file_name"], (manifest, im, size)) for im in images_meta)
    with OrderedPool(load_resized, loader_workers, max_pending=batch_size + loader_workers) as pool:
        batch_meta: list[dict[str, Any]] = []
        batch_rgb: list[np.ndarray] = []
        for k, (im, (_, rgb)) in enumerate(zip(images_meta, pool.map(items))):
            batch_meta.append(im)
            batch_rgb.append(rgb)
            if len(batch_meta) == batch_size or k == len(images_meta) - 1:
                yield batch_meta, backbone.preprocess(batch_rgb, size)
                batch_meta, batch_rgb = [], []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser)
    parser.add_argument("--backbone", required=True,
                        help="backbone name (config backbone), e.g. efficientnet_lite2 or dino_vitb8")
    parser.add_argument("--weights", default=None, help="weights path or URL (DINO backbones); empty = default")
    add_dataclass_arguments(parser, FeatureParams)
    add_device_arguments(parser, default="auto")
    parser.add_argument("--out", type=Path, required=True, help="output zarr store")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from u2seg.backbones import build_backbone

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    manifest = load_manifest(args.manifest)
    total = num_shards(manifest, args.shard_size)
    images_meta = shard_images(manifest, args.shard, args.shard_size)
    backbone = build_backbone(args.backbone, args.weights or None, args.device)
    t0 = time.perf_counter()
    if args.loader_workers < 0:
        raise UserError("--loader-workers must be >= 0")
    dense_parts, glob_parts = [], []
    bar = tqdm(total=len(images_meta), desc=f"features shard {args.shard + 1}/{total}", unit="img")
    # decoding + resizing of the next images overlaps the forward of this batch (PIL and torch release the GIL)
    for batch_meta, x in preprocessed_batches(manifest, images_meta, backbone, args.input_size, args.batch_size,
                                              args.loader_workers):
        dense, glob = forward_batch(backbone, x)
        dense_parts.append(dense)
        glob_parts.append(glob)
        bar.update(len(batch_meta))
    bar.close()
    attrs = shard_attrs(backbone, args.input_size, args.shard, args.shard_size, time.perf_counter() - t0)
    write_shard(args.out, np.concatenate(dense_parts), np.concatenate(glob_parts),
                np.array([im["id"] for im in images_meta]),
                np.array([[im["height"], im["width"]] for im in images_meta]), attrs)
    log.info("shard %d: %d images in %.1f s -> %s", args.shard, len(images_meta), attrs["seconds"], args.out)
    return 0
