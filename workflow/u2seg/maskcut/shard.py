"""``u2seg maskcut``: MaskCut masks of one feature shard -> a COCO instances json + overlay PNGs.

The json holds the shard's images (id, file_name and the original width/height from the manifest),
one category ``fg`` and one annotation per accepted mask (compressed RLE with ascii counts,
``size`` = [h, w]; area and bbox computed from the RLE). Annotation ids are 1..M within the shard;
``u2seg merge-masks`` renumbers them. A top-level ``stats`` entry (timings, eigensolver
diagnostics, parameters) is moved to ``summary.json`` by the merge.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from u2seg.atomic import atomic_path, save_png, write_json
from u2seg.device import resolve_device
from u2seg.cliargs import add_device_arguments
from u2seg.coco_format import instance_annotation, instances_json
from u2seg.errors import UserError
from u2seg.images import load_rgb, resize_square
from u2seg.manifest import image_path, image_stem, load_manifest
from u2seg.maskcut.algorithm import MaskCutParams, Timer, maskcut_batch
from u2seg.maskcut.bipartition import FOREGROUND_RULES
from u2seg.crf import CRFParams
from u2seg.maskcut.eigen import SOLVERS, EigenInfo
from u2seg.maskcut.gallery import gallery_ids, overlay
from u2seg.maskcut.merge import CATEGORIES

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = MaskCutParams()
    c = CRFParams()
    io = parser.add_argument_group("inputs / outputs")
    io.add_argument("--manifest", type=Path, required=True, help="manifest.json of the dataset")
    io.add_argument("--features", type=Path, required=True, help="feature shard (zarr v3 store)")
    io.add_argument("--out", type=Path, required=True, help="output COCO instances json of the shard")
    io.add_argument("--gallery", type=Path, required=True, help="output folder of overlay PNGs")
    io.add_argument("--gallery-size", type=int, default=8,
                    help="images of the whole dataset (fixed hash sample) that get an overlay PNG")
    alg = parser.add_argument_group("MaskCut (spec section 3)")
    alg.add_argument("--tau", type=float, default=d.tau, help="affinity threshold on the cosine similarity")
    alg.add_argument("--eps", type=float, default=d.eps, help="weight of the edges below tau")
    alg.add_argument("--n-masks", type=int, default=d.n_masks, help="masks per image (N)")
    alg.add_argument("--solver", choices=SOLVERS, default=d.solver,
                     help="eigenvector solver: fast (block-Krylov, torch) or dense (scipy eigh, as CutLER)")
    alg.add_argument("--eigen-tol", type=float, default=d.eigen_tol,
                     help="fast solver: residual tolerance ||M y - mu y||")
    alg.add_argument("--foreground-rule", choices=FOREGROUND_RULES, default=d.foreground_rule,
                     help="which side of the cut is foreground: faithful (CutLER's corner rule) or sign_invariant")
    alg.add_argument("--max-iou-previous", type=float, default=d.max_iou_previous,
                     help="reject a new patch mask whose IoU with the previous one exceeds this")
    alg.add_argument("--min-area-fraction", type=float, default=d.min_area_fraction,
                     help="reject a patch mask covering at most this fraction of the patches")
    alg.add_argument("--min-crf-iou", type=float, default=d.min_crf_iou,
                     help="discard a mask whose IoU with its pre-CRF mask is below this")
    crf = parser.add_argument_group("dense CRF")
    crf.add_argument("--crf", action=argparse.BooleanOptionalAction, default=c.enabled,
                     help="dense CRF refinement of each mask (--no-crf: skip it; hole filling still applies)")
    crf.add_argument("--crf-gaussian-sxy", type=float, default=c.gaussian_sxy,
                     help="CRF Gaussian (smoothness) kernel: spatial std in pixels")
    crf.add_argument("--crf-gaussian-compat", type=float, default=c.gaussian_compat,
                     help="CRF Gaussian kernel: Potts weight")
    crf.add_argument("--crf-bilateral-sxy", type=float, default=c.bilateral_sxy,
                     help="CRF bilateral (appearance) kernel: spatial std in pixels")
    crf.add_argument("--crf-bilateral-srgb", type=float, default=c.bilateral_srgb,
                     help="CRF bilateral kernel: colour std")
    crf.add_argument("--crf-bilateral-compat", type=float, default=c.bilateral_compat,
                     help="CRF bilateral kernel: Potts weight")
    crf.add_argument("--crf-iterations", type=int, default=c.iterations, help="CRF mean-field iterations")
    run_ = parser.add_argument_group("execution")
    run_.add_argument("--batch-size", type=int, default=4, help="images per batched eigen solve")
    add_device_arguments(run_, default="auto")
    run_.add_argument("--seed", type=int, default=d.seed, help="seed of the eigensolver start and the gallery sample")


def params_from_args(args: argparse.Namespace) -> MaskCutParams:
    """MaskCutParams from the parsed CLI flags (validated)."""
    crf = CRFParams(enabled=args.crf, gaussian_sxy=args.crf_gaussian_sxy, gaussian_compat=args.crf_gaussian_compat,
                    bilateral_sxy=args.crf_bilateral_sxy, bilateral_srgb=args.crf_bilateral_srgb,
                    bilateral_compat=args.crf_bilateral_compat, iterations=args.crf_iterations)
    return MaskCutParams(tau=args.tau, eps=args.eps, n_masks=args.n_masks, solver=args.solver,
                         foreground_rule=args.foreground_rule, max_iou_previous=args.max_iou_previous,
                         min_area_fraction=args.min_area_fraction, min_crf_iou=args.min_crf_iou, crf=crf,
                         eigen_tol=args.eigen_tol, seed=args.seed)


def _shard_images(manifest: dict[str, Any], image_ids: np.ndarray, orig_sizes: np.ndarray,
                  features: Path) -> list[dict[str, Any]]:
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


def run(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    params = params_from_args(args)
    device = resolve_device(args.device)
    from u2seg.features import open_shard

    shard = open_shard(args.features)
    attrs = dict(shard.attrs)
    input_size = int(attrs["input_size"])
    image_ids = np.asarray(shard["image_id"][:])
    orig_sizes = np.asarray(shard["orig_size"][:])
    dense = shard["dense"]
    manifest = load_manifest(args.manifest)
    metas = _shard_images(manifest, image_ids, orig_sizes, args.features)
    sample = gallery_ids((im["id"] for im in manifest["images"]), args.gallery_size, args.seed)

    timer, eigen_log = Timer(), []
    images, annotations, counts = [], [], {}
    t0 = time.perf_counter()
    shard_name = args.features.name
    with atomic_path(args.gallery, directory=True) as gallery_tmp:
        bar = tqdm(total=len(metas), desc=f"maskcut {shard_name}", unit="img")
        for start in range(0, len(metas), args.batch_size):
            batch = metas[start:start + args.batch_size]
            feats = np.asarray(dense[start:start + len(batch)])
            originals: list[np.ndarray | None] = []
            resized: list[np.ndarray | None] = []
            with timer.time("read_images"):
                for im in batch:
                    need = params.crf.enabled or int(im["id"]) in sample
                    rgb = load_rgb(image_path(manifest, im)) if need else None
                    if rgb is not None and rgb.shape[:2] != (im["height"], im["width"]):
                        raise UserError(f"{im['file_name']}: size changed since ingestion "
                                        f"({rgb.shape[1]}x{rgb.shape[0]} vs {im['width']}x{im['height']})")
                    originals.append(rgb)
                    resized.append(resize_square(rgb, input_size) if rgb is not None and params.crf.enabled else None)
            masks = maskcut_batch(feats, resized, [(im["height"], im["width"]) for im in batch], params,
                                  input_size=input_size, device=device, timer=timer, eigen_log=eigen_log)
            for im, rgb, image_masks in zip(batch, originals, masks):
                image_id = int(im["id"])
                images.append({"id": image_id, "file_name": im["file_name"],
                               "width": int(im["width"]), "height": int(im["height"])})
                for m in image_masks:
                    annotations.append(instance_annotation(m, len(annotations) + 1, image_id, 1))
                counts[image_id] = len(image_masks)
                if image_id in sample and rgb is not None:
                    with timer.time("gallery"):
                        save_png(gallery_tmp / f"{image_stem(im)}.png", overlay(rgb, image_masks))
            bar.update(len(batch))
        bar.close()
        stats = _stats(attrs, dense.shape, params, timer, eigen_log, counts, time.perf_counter() - t0, device)
        data = instances_json(images, annotations, CATEGORIES,
                              info={"description": "u2seg MaskCut class-agnostic pseudo-masks"})
        data["stats"] = stats
        write_json(args.out, data)
    log.info("%s: %d images, %d masks (%d images without a mask) in %.1f s -> %s", shard_name, len(images),
             len(annotations), sum(1 for c in counts.values() if c == 0), stats["seconds_total"], args.out)
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
