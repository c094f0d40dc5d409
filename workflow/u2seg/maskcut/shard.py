"""MaskCut masks of one feature shard (``u2seg maskcut``) -> a COCO instances json + overlay PNGs.

The json holds the shard's images (id, file_name and the original width/height from the manifest),
one category ``fg`` and one annotation per accepted mask (compressed RLE with ascii counts,
``size`` = [h, w]; area and bbox computed from the RLE). Annotation ids are 1..M within the shard;
``u2seg merge-masks`` renumbers them. A top-level ``stats`` entry (timings, eigensolver
diagnostics, parameters) is moved to ``summary.json`` by the merge.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import instances_json
from u2seg.device import resolve_device
from u2seg.errors import UserError
from u2seg.gallery import gallery_ids
from u2seg.manifest import image_path, image_stem, load_manifest
from u2seg.maskcut.algorithm import Timer, patch_masks_batch
from u2seg.maskcut.eigen import EigenInfo
from u2seg.maskcut.image_job import ImageJob, finish_shard_image
from u2seg.maskcut.merge import CATEGORIES
from u2seg.maskcut.params import MaskCutParams
from u2seg.overlap import OrderedPool

if TYPE_CHECKING:
    from u2seg.features import ShardArrays

log = logging.getLogger(__name__)


def _shard_images(manifest: dict[str, Any], image_ids: np.ndarray, orig_sizes: np.ndarray,
                  features: "Path | ShardArrays") -> list[dict[str, Any]]:
    """Manifest entries of the shard's images, checked against the shard's stored sizes."""
    by_id = {int(im["id"]): im for im in manifest["images"]}
    out = []
    for image_id, (height, width) in zip(image_ids.tolist(), orig_sizes.tolist()):
        im = by_id.get(int(image_id))
        if im is None:
            raise UserError(f"{features}: image id {image_id} is not in the manifest; re-extract the features")
        if (int(im["height"]), int(im["width"])) != (int(height), int(width)):
            raise UserError(f"{features}: image {im['file_name']} is {height}x{width} (h x w) in the shard but "
                            f"{im['height']}x{im['width']} in the manifest; re-extract the features")
        out.append(im)
    return out


def maskcut_shard(*, manifest_path: Path, features_path: "Path | ShardArrays", out_path: Path, gallery_dir: Path, gallery_size: int,
                  params: MaskCutParams, batch_size: int, device: str, threads: int, cpu_workers: int = 0) -> int:
    """``u2seg maskcut``: the MaskCut masks of one feature shard -> its COCO json + overlay PNGs.

    ``cpu_workers`` > 0 runs each image's CPU half (image reading, CRF, RLE encoding, gallery PNG) in that
    many worker processes while this process runs the N-cut of the next batches; the json and PNGs are
    the same as with 0 (everything in this process, one image after the other).
    """
    if threads > 0:
        torch.set_num_threads(threads)
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if cpu_workers < 0:
        raise UserError("--cpu-workers must be >= 0")
    device = resolve_device(device)
    from u2seg.features import open_shard

    shard = open_shard(features_path)
    attrs = dict(shard.attrs)
    input_size = int(attrs["input_size"])
    image_ids = np.asarray(shard["image_id"][:])
    orig_sizes = np.asarray(shard["orig_size"][:])
    dense = shard["dense"]
    manifest = load_manifest(manifest_path)
    metas = _shard_images(manifest, image_ids, orig_sizes, features_path)
    sample = gallery_ids((im["id"] for im in manifest["images"]), gallery_size, params.seed)

    timer, eigen_log = Timer(), []
    images, annotations, counts = [], [], {}
    t0 = time.perf_counter()
    shard_name = features_path.name
    with atomic_path(gallery_dir, directory=True) as gallery_tmp:

        def jobs() -> Iterator[tuple[str, tuple[ImageJob, list[np.ndarray], MaskCutParams]]]:
            """The accelerator half, batch by batch, in this thread: one CPU job per image."""
            for start in range(0, len(metas), batch_size):
                batch = metas[start:start + batch_size]
                with timer.time("read_features"):
                    feats = np.asarray(dense[start:start + len(batch)])
                patch = patch_masks_batch(feats, params, device, timer, eigen_log)
                for im, image_patch in zip(batch, patch):
                    png = str(gallery_tmp / f"{image_stem(im)}.png") if int(im["id"]) in sample else None
                    job = ImageJob(int(im["id"]), im["file_name"], str(image_path(manifest, im)), int(im["width"]),
                                   int(im["height"]), input_size, png)
                    yield im["file_name"], (job, image_patch, params)

        bar = tqdm(total=len(metas), desc=f"maskcut {shard_name}", unit="img")
        # the CPU half of image i runs in the workers while later batches are on the device; at most
        # one batch beyond the workers' share waits (bounded memory), results come back in order
        pending = max(2 * cpu_workers, cpu_workers + batch_size)
        with OrderedPool(finish_shard_image, min(cpu_workers, len(metas)), processes=True, max_pending=pending) as pool:
            for (_, (image_anns, seconds)), im in zip(pool.map(jobs()), metas):
                image_id = int(im["id"])
                images.append({"id": image_id, "file_name": im["file_name"],
                               "width": int(im["width"]), "height": int(im["height"])})
                for ann in image_anns:
                    ann["id"] = len(annotations) + 1
                    annotations.append(ann)
                counts[image_id] = len(image_anns)
                for step, value in seconds.items():
                    timer.add(step, value)
                bar.update(1)
        bar.close()
        stats = _stats(attrs, dense.shape, params, timer, eigen_log, counts, time.perf_counter() - t0, device)
        stats["cpu_workers"] = cpu_workers
        stats["seconds_waiting_for_cpu"] = round(pool.wait_seconds, 3)  # main process idle: CPU half not done
        data = instances_json(images, annotations, CATEGORIES,
                              info={"description": "u2seg MaskCut class-agnostic pseudo-masks"})
        data["stats"] = stats
        write_json(out_path, data)
    log.info("%s: %d images, %d masks (%d images without a mask) in %.1f s -> %s", shard_name, len(images),
             len(annotations), sum(1 for c in counts.values() if c == 0), stats["seconds_total"], out_path)
    return 0


def _stats(attrs: dict[str, Any], shape: tuple[int, ...], params: MaskCutParams, timer: Timer,
           eigen_log: list[EigenInfo], counts: dict[int, int], total: float, device: torch.device) -> dict[str, Any]:
    """Per-shard statistics merged into summary.json."""
    return {
        "shard_index": attrs.get("shard_index"),
        "backbone": attrs.get("backbone"),
        "input_size": attrs.get("input_size"),
        "stride": attrs.get("stride"),
        "grid": [int(shape[2]), int(shape[3])],
        "device": device.type,
        "params": dataclasses.asdict(params),
        "seconds_total": round(total, 3),
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "eigen": {
            "solves": sum(len(i.fallback) for i in eigen_log),
            "block_products": sum(i.matvecs for i in eigen_log),
            "fallbacks": sum(sum(i.fallback) for i in eigen_log),
        },
        "masks_per_image": {str(k): v for k, v in counts.items()},
    }
