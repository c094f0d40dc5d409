"""MaskCut benchmark: dense (CutLER's scipy.linalg.eigh(D - A, D)) vs fast (batched block-Krylov on the
normalized Laplacian) eigensolver, per image, on CPU by default.

What it measures, per image and solver (features already extracted; images already loaded):
  eigen   the eigen step only (N solves per image)
  total   the whole MaskCut of the image: affinity, N x (graph + eigen + bipartition), pixel masks,
          dense CRF (unless --no-crf), hole filling, IoU filter, resize to the original size
and whether the two solvers give the same final masks (count and per-mask IoU). Solvers alternate per
image so that machine-load drift hits both alike; BLAS/OpenMP threads are limited to --threads for
both (scipy's OpenBLAS included).

Inputs:
  synthetic  --grid 60 --dim 768 --images 3: 60 x 60 = 3600-node graphs like DINO ViT-B/8 at 480 px
             (stride 8): seeded objects + background regions with spatially smooth and white noise,
             and a matching 480 x 480 image for the CRF
  shards     --shard results/coco-val/features/shard_00000.zarr [--shard ...] --manifest
             results/coco-val/manifest.json [--max-images 8]: real feature shards and their images

  python benchmarks/maskcut.py                                   # synthetic 3600-node graphs
  python benchmarks/maskcut.py --shard S.zarr --manifest M.json  # plus real shards
  python benchmarks/maskcut.py --grid 30 --dim 64 --images 2     # quick smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from threadpoolctl import threadpool_limits

from u2seg.maskcut.algorithm import MaskCutParams, Timer, maskcut_batch
from u2seg.maskcut.bipartition import mask_iou
from u2seg.crf import CRFParams


def synthetic_scene(grid: int, dim: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(dim, grid, grid) float16 features and a matching (size, size, 3) uint8 image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:grid, :grid] / grid
    labels = (yy > rng.uniform(0.3, 0.6)).astype(int)  # two background regions (e.g. wall / floor)
    for k in range(2, 2 + rng.integers(2, 5)):  # 2-4 elliptical objects
        cy, cx = rng.uniform(0.2, 0.8, 2)
        ry, rx = rng.uniform(0.06, 0.2, 2)
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = k
    n_lab = labels.max() + 1
    shared = rng.normal(size=dim)
    protos = rng.normal(size=(n_lab, dim)) + 0.3 * shared  # ~40 % of the pairs above tau, 2-3 masks
    smooth = ndimage.gaussian_filter(rng.normal(size=(dim, grid, grid)), sigma=(0, 3, 3)) * 2.0
    feats = protos[labels].transpose(2, 0, 1) + smooth + rng.normal(size=(dim, grid, grid))
    colors = rng.integers(0, 256, size=(n_lab, 3))
    cell = labels.repeat(size // grid, 0).repeat(size // grid, 1)
    shading = ndimage.gaussian_filter(rng.normal(size=(size, size, 1)), sigma=(8, 8, 0)) * 150  # soft texture
    image = np.clip(colors[cell] + shading + rng.normal(0, 2, size=(size, size, 3)), 0, 255).astype(np.uint8)
    return feats.astype(np.float16), image


def shard_scenes(shards: list[Path], manifest_path: Path, max_images: int):
    """(features, resized image, original (h, w), name) of the images of real feature shards."""
    from u2seg.features import open_shard
    from u2seg.images import load_rgb, resize_square
    from u2seg.manifest import image_path, load_manifest

    manifest = load_manifest(manifest_path)
    by_id = {im["id"]: im for im in manifest["images"]}
    count = 0
    for path in shards:
        g = open_shard(path)
        size = int(g.attrs["input_size"])
        for i, image_id in enumerate(g["image_id"][:].tolist()):
            if count >= max_images:
                return
            im = by_id[image_id]
            rgb = load_rgb(image_path(manifest, im))
            yield np.asarray(g["dense"][i]), resize_square(rgb, size), (im["height"], im["width"]), im["file_name"]
            count += 1


def run_one(feats: np.ndarray, image: np.ndarray, orig: tuple[int, int], params: MaskCutParams) -> tuple[dict, list]:
    timer = Timer()
    t0 = time.perf_counter()
    masks = maskcut_batch(feats[None], [image], [orig], params, input_size=image.shape[0], timer=timer)[0]
    total = time.perf_counter() - t0
    return {"eigen": timer.seconds["eigen"], "total": total, "crf": timer.seconds.get("crf", 0.0)}, masks


def compare(name: str, scenes, params: MaskCutParams) -> dict:
    times = {s: {"eigen": [], "total": [], "crf": []} for s in ("dense", "fast")}
    n_masks = {"dense": 0, "fast": 0}
    ious, same_count, nodes = [], 0, None
    for k, (feats, image, orig, label) in enumerate(scenes):
        nodes = feats.shape[1] * feats.shape[2]
        out = {}
        for solver in (("dense", "fast") if k % 2 == 0 else ("fast", "dense")):
            t, out[solver] = run_one(feats, image, orig, params.with_(solver=solver))
            for key in t:
                times[solver][key].append(t[key])
            n_masks[solver] += len(out[solver])
        same_count += len(out["dense"]) == len(out["fast"])
        ious += [mask_iou(a, b) for a, b in zip(out["dense"], out["fast"])]
        print(f"  {label}: dense {times['dense']['total'][-1]:.2f} s, fast {times['fast']['total'][-1]:.2f} s, "
              f"masks {len(out['dense'])}/{len(out['fast'])}", flush=True)
    mean = {s: {k: statistics.fmean(v) for k, v in d.items()} for s, d in times.items()}
    n_img = len(times["dense"]["total"])
    return {
        "input": name, "nodes": nodes, "images": n_img,
        "dense_eigen_s": mean["dense"]["eigen"], "fast_eigen_s": mean["fast"]["eigen"],
        "eigen_ratio": mean["dense"]["eigen"] / mean["fast"]["eigen"],
        "dense_total_s": mean["dense"]["total"], "fast_total_s": mean["fast"]["total"],
        "total_ratio": mean["dense"]["total"] / mean["fast"]["total"],
        "crf_s": mean["fast"]["crf"],
        "same_mask_count": f"{same_count}/{n_img}", "masks": n_masks["fast"],
        "min_iou": min(ious) if ious else None,
    }


def print_table(rows: list[dict]) -> None:
    head = ("input", "nodes", "imgs", "eigen dense s/img", "eigen fast s/img", "ratio",
            "MaskCut dense s/img", "MaskCut fast s/img", "ratio", "(CRF s/img)", "same #masks", "min IoU")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        iou = "-" if r["min_iou"] is None else f"{r['min_iou']:.4f}"
        print(f"| {r['input']} | {r['nodes']} | {r['images']} | {r['dense_eigen_s']:.3f} | {r['fast_eigen_s']:.4f} | "
              f"{r['eigen_ratio']:.1f}x | {r['dense_total_s']:.2f} | {r['fast_total_s']:.3f} | {r['total_ratio']:.1f}x | "
              f"{r['crf_s']:.2f} | {r['same_mask_count']} | {iou} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=60, help="synthetic patch grid side (60 = 480 px / stride 8)")
    ap.add_argument("--dim", type=int, default=768, help="synthetic feature dimension (768 = ViT-B)")
    ap.add_argument("--images", type=int, default=3, help="synthetic images (0 = none)")
    ap.add_argument("--input-size", type=int, default=480, help="synthetic image size for the CRF")
    ap.add_argument("--shard", type=Path, action="append", default=[], help="real feature shard (repeatable)")
    ap.add_argument("--manifest", type=Path, help="manifest of the shards' dataset")
    ap.add_argument("--max-images", type=int, default=8, help="images taken from the shards")
    ap.add_argument("--no-crf", action="store_true", help="skip the dense CRF")
    ap.add_argument("--n-masks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch / BLAS threads for both solvers")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = MaskCutParams(n_masks=args.n_masks, crf=CRFParams(enabled=not args.no_crf))
    rows = []
    with threadpool_limits(limits=args.threads):
        if args.images > 0:
            print(f"synthetic: {args.images} images, {args.grid}x{args.grid} grid, dim {args.dim}", flush=True)
            scenes = ((*synthetic_scene(args.grid, args.dim, args.input_size, seed),
                       (args.input_size * 3 // 4, args.input_size), f"synthetic {seed}") for seed in range(args.images))
            rows.append(compare(f"synthetic {args.grid}x{args.grid}x{args.dim}", scenes, params))
        if args.shard:
            if args.manifest is None:
                ap.error("--shard needs --manifest")
            print(f"shards: {', '.join(str(s) for s in args.shard)}", flush=True)
            rows.append(compare(f"shards ({args.shard[0].parent.parent.name})",
                                shard_scenes(args.shard, args.manifest, args.max_images), params))
    print(f"\nCPU, {args.threads} thread(s); seconds per image (mean); N = {args.n_masks}; "
          f"CRF {'off' if args.no_crf else 'on'}")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
