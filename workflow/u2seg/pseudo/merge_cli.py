"""``u2seg merge-panoptic``: class-aware instances + stuff maps -> COCO panoptic json + PNGs, the
semantic-branch PNGs, a gallery and the pseudo-label summary.

Images without any pseudo-instance are kept (stuff-only) and counted in the summary (the reference
skips them, spec 6 step 5). Segment ids are global running integers (unique within and across
images), starting at 1.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import decode_mask, id2rgb
from u2seg.errors import UserError
from u2seg.images import load_rgb
from u2seg.manifest import image_path
from u2seg.pseudo.gallery import gallery_indices, pseudo_label_tile
from u2seg.pseudo.io import load_json, png_name, read_manifest, read_png, save_png_plain
from u2seg.pseudo.merge import merge_panoptic, panoptic_categories

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--instances", type=Path, required=True, help="class-aware instance json")
    parser.add_argument("--stuff-dir", type=Path, required=True, help="folder of stuff PNGs (0..S-1)")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    parser.add_argument("--num-stuff", type=int, default=27, help="stuff clusters S (config stuff.k)")
    parser.add_argument("--max-thing-overlap", type=float, default=0.7,
                        help="drop a stuff cluster's region when more than this fraction of it is covered by things")
    parser.add_argument("--gallery-size", type=int, default=8, help="images (fixed hash sample) that get overlay PNGs")
    parser.add_argument("--cluster-summary", type=Path, default=None,
                        help="summary json of `u2seg cluster-instances` (copied into the summary)")
    parser.add_argument("--stuff-summary", type=Path, default=None,
                        help="summary json of `u2seg cluster-stuff` (copied into the summary)")
    parser.add_argument("--out-json", type=Path, required=True, help="COCO panoptic json")
    parser.add_argument("--out-panoptic", type=Path, required=True, help="folder of panoptic PNGs")
    parser.add_argument("--out-semantic", type=Path, required=True, help="folder of semantic PNGs")
    parser.add_argument("--gallery", type=Path, required=True, help="folder of overlay PNGs")
    parser.add_argument("--summary", type=Path, required=True, help="output summary json")


def _stats(values: np.ndarray) -> dict[str, Any]:
    if len(values) == 0:
        return {"mean": 0.0, "max": 0, "histogram": []}
    return {"mean": round(float(values.mean()), 4), "max": int(values.max()),
            "histogram": np.bincount(values).tolist()}


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    if not 0.0 <= args.max_thing_overlap <= 1.0:
        raise UserError(f"panoptic.max_thing_overlap must be in [0, 1], got {args.max_thing_overlap}")
    manifest = read_manifest(args.manifest)
    instances = load_json(args.instances)
    cat_ids = sorted(c["id"] for c in instances.get("categories", []))
    if cat_ids != list(range(1, args.k + 1)):
        raise UserError(f"{args.instances} has categories {cat_ids[:3]}...{cat_ids[-1:]} but clustering.k="
                        f"{args.k}: rerun cluster_instances")
    by_image: dict[int, list[dict]] = {}
    for ann in instances.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    known = {im["id"] for im in manifest["images"]}
    unknown = set(by_image) - known
    if unknown:
        raise UserError(f"{args.instances} has annotations of {len(unknown)} images not in the manifest "
                        f"(e.g. {sorted(unknown)[0]}): rerun cluster_instances")

    images_out, annotations_out = [], []
    next_id = 1
    n_inst = np.zeros(len(manifest["images"]), dtype=np.int64)
    n_visible = np.zeros_like(n_inst)
    hidden = stuff_segments = stuff_dropped = 0
    void_pixels = total_pixels = 0
    thing_pixels = 0
    sample = set(gallery_indices(len(manifest["images"]), args.gallery_size))
    tiles: list[tuple[str, np.ndarray]] = []
    pano_tmp_cm = atomic_path(args.out_panoptic, directory=True)
    sem_tmp_cm = atomic_path(args.out_semantic, directory=True)
    with pano_tmp_cm as pano_tmp, sem_tmp_cm as sem_tmp:
        for idx, im in enumerate(tqdm(manifest["images"], desc="panoptic merge", unit="img")):
            h, w = im["height"], im["width"]
            anns = by_image.get(im["id"], [])
            for ann in anns:
                if list(ann["segmentation"].get("size", [])) != [h, w]:
                    raise UserError(f"{args.instances}: annotation {ann['id']} mask size "
                                    f"{ann['segmentation'].get('size')} != [height, width] {[h, w]} of "
                                    f"{im['file_name']}")
            masks = [decode_mask(a["segmentation"], h, w) for a in anns]
            cats = [int(a["category_id"]) for a in anns]
            stuff = read_png(args.stuff_dir / png_name(im))
            if stuff.shape != (h, w):
                raise UserError(f"stuff map {png_name(im)} is {stuff.shape[::-1]} (w, h), image is {w}x{h}: "
                                "rerun cluster_stuff")
            try:
                res = merge_panoptic(masks, cats, stuff, args.k, args.num_stuff, args.max_thing_overlap, next_id)
            except ValueError as exc:
                raise UserError(f"{im['file_name']}: {exc}") from exc
            next_id += len(res.segments)
            save_png_plain(pano_tmp / png_name(im), id2rgb(res.pan))
            save_png_plain(sem_tmp / png_name(im), res.semantic)
            images_out.append({"id": im["id"], "file_name": im["file_name"], "width": w, "height": h})
            annotations_out.append({"image_id": im["id"], "file_name": png_name(im), "segments_info": res.segments})
            n_inst[idx] = len(anns)
            n_visible[idx] = len(res.thing_source)
            hidden += res.hidden
            stuff_dropped += res.stuff_dropped
            stuff_segments += len(res.segments) - len(res.thing_source)
            void_pixels += int((res.pan == 0).sum())
            thing_pixels += int((res.semantic == 0).sum())
            total_pixels += h * w
            if idx in sample:
                cat_of = {s["id"]: s["category_id"] for s in res.segments}
                lut_keys = np.array(list(cat_of), dtype=np.int64)
                pan_cat = np.zeros((h, w), dtype=np.int64)
                for sid in lut_keys:
                    pan_cat[res.pan == sid] = cat_of[int(sid)]
                rgb = load_rgb(image_path(manifest, im))
                if rgb.shape[:2] != (h, w):
                    raise UserError(f"{im['file_name']}: size changed since ingestion; rerun the pipeline")
                tiles.append((png_name(im), pseudo_label_tile(rgb, stuff, masks, [c - 1 for c in cats],
                                                              pan_cat, args.k, args.num_stuff)))
        data = {"info": {"description": "u2seg panoptic pseudo-labels", "k": args.k, "num_stuff": args.num_stuff},
                "images": images_out, "annotations": annotations_out,
                "categories": panoptic_categories(args.k, args.num_stuff)}
    write_json(args.out_json, data)  # the index last: it only exists once the PNG folders do
    with atomic_path(args.gallery, directory=True) as gal_tmp:
        for name, tile in tiles:
            save_png_plain(gal_tmp / name, tile)

    summary: dict[str, Any] = {
        "k": args.k, "num_stuff": args.num_stuff, "max_thing_overlap": args.max_thing_overlap,
        "images": len(images_out),
        "images_without_instances": int((n_inst == 0).sum()),
        "instances": int(n_inst.sum()), "visible_instances": int(n_visible.sum()),
        "hidden_instances_dropped": hidden,
        "instances_per_image": _stats(n_inst), "visible_instances_per_image": _stats(n_visible),
        "stuff_segments": stuff_segments, "stuff_segments_dropped_by_overlap": stuff_dropped,
        "pixel_fraction": {"thing": round(thing_pixels / max(total_pixels, 1), 6),
                           "stuff": round((total_pixels - thing_pixels - void_pixels) / max(total_pixels, 1), 6),
                           "void": round(void_pixels / max(total_pixels, 1), 6)},
        "gallery": [name for name, _ in tiles],
        "seconds": {"merge": round(time.perf_counter() - t_start, 3)},
    }
    for key, path in (("clustering", args.cluster_summary), ("stuff", args.stuff_summary)):
        if path is not None:
            summary[key] = load_json(path)
    write_json(args.summary, summary, indent=1)
    log.info("panoptic: %d images (%d without instances), %d/%d instances visible, %d stuff segments",
             len(images_out), summary["images_without_instances"], summary["visible_instances"],
             summary["instances"], stuff_segments)
    return 0
