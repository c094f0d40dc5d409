"""``u2seg report predictions``: a model's predictions on a seeded sample of images -> side-by-side
PNGs ``image | predicted instances | predicted panoptic | ground truth`` + a summary page."""
from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from u2seg.atomic import atomic_path, write_text
from u2seg.jsonio import load_json
from u2seg.report.images import GALLERY_SUFFIX, MAX_SIDE, bounded, cluster_legend, save_jpeg, thumbnails, with_legend
from u2seg.report.pages import bar_chart, kv_table, page, records_table, render_json

log = logging.getLogger(__name__)


def seeded_sample(image_ids: Iterable[int], size: int, seed: int = 0) -> list[int]:
    """``size`` image ids with the smallest seeded hash (same rule as the MaskCut gallery sample)."""
    ranked = sorted({int(i) for i in image_ids},
                    key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[:max(size, 0)])


def _categories_split(panoptic: dict[str, Any], k_default: int, s_default: int) -> tuple[int, int]:
    cats = panoptic.get("categories") or []
    things = [c for c in cats if c.get("isthing", 1)]
    stuff = [c for c in cats if not c.get("isthing", 1)]
    return (len(things) or k_default), (len(stuff) or s_default)


def prediction_tile(image: np.ndarray, dets: list[dict[str, Any]], pan_ids: np.ndarray | None,
                    segments: list[dict[str, Any]], num_things: int, num_stuff: int, score_thresh: float,
                    gt: list[dict[str, Any]] | None, gt_categories: dict[int, str], height: int = 320) -> np.ndarray:
    """``image | predicted instances | predicted panoptic | ground truth`` (GT panel only with GT),
    bounded in size (``images.bounded``), with a legend of the clusters shown (ids and colours)."""
    from u2seg.coco_format import decode_mask
    from u2seg.gallery import blend, overlay_instances, palette, panel

    h, w = image.shape[:2]
    ranked = sorted(dets, key=lambda d: -float(d.get("score", 0)))
    kept = [d for d in ranked if float(d.get("score", 0)) >= score_thresh]
    if kept:
        title = f"{len(kept)} instances >= {score_thresh:g}"
    else:  # an undertrained model: show its best guesses, saying so
        kept = ranked[:3]
        title = f"top {len(kept)}, all < {score_thresh:g}"
    masks = [decode_mask(d["segmentation"], h, w) for d in kept]
    thing_colors = palette(max(num_things, 1))
    inst = overlay_instances(image, masks, [int(d["category_id"]) - 1 for d in kept], thing_colors)
    tiles = [image, inst]
    titles = ["image", title]
    if pan_ids is not None:
        stuff_colors = palette(max(num_stuff, 1), offset=0.31)
        colored = np.zeros(image.shape, dtype=np.uint8)
        painted = np.zeros((h, w), dtype=bool)
        for seg in segments:
            m = pan_ids == int(seg["id"])
            c = int(seg["category_id"])
            colored[m] = thing_colors[(c - 1) % len(thing_colors)] if c <= num_things else \
                stuff_colors[(c - num_things - 1) % len(stuff_colors)]
            painted |= m
        pan = blend(image, colored, painted, 0.7)
        pan[~painted] = 0
        tiles.append(pan)
        titles.append(f"panoptic ({len(segments)} segments)")
    if gt is not None:
        # colour and number = COCO category id (the cluster -> class mapping is the evaluation's job)
        colors = palette(max([*gt_categories, *(int(a["category_id"]) for a in gt), 1]), offset=0.13)
        gt_masks, gt_cls = [], []
        for a in gt:
            seg = a.get("segmentation")
            if not seg:
                continue
            gt_masks.append(decode_mask(seg, h, w))
            gt_cls.append(int(a["category_id"]) - 1)
        gt_img = overlay_instances(image, gt_masks, gt_cls, colors)
        tiles.append(gt_img)
        titles.append(f"ground truth ({len(gt_masks)})")
    shown = [{"category_id": int(d["category_id"])} for d in kept] + list(segments)
    out = bounded(panel(tiles, titles, height), MAX_SIDE)
    return bounded(with_legend(out, cluster_legend(shown, num_things, num_stuff)), MAX_SIDE)


def cmd_predictions(args: argparse.Namespace) -> int:
    """Side-by-side PNGs of predictions (and GT where the manifest has annotations) + a page."""
    from u2seg.coco_format import rgb2id
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path, image_stem

    t0 = time.perf_counter()
    manifest = load_json(args.manifest)
    pred_dir = Path(args.predictions)
    results = load_json(pred_dir / "instances_results.json")
    pan_json_path = pred_dir / "panoptic.json"
    panoptic = load_json(pan_json_path) if pan_json_path.is_file() else {}
    summary = load_json(pred_dir / "summary.json") if (pred_dir / "summary.json").is_file() else {}
    num_things, num_stuff = _categories_split(panoptic, args.k, args.num_stuff)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for d in results:
        by_image.setdefault(int(d["image_id"]), []).append(d)
    pan_anns = {int(a["image_id"]): a for a in panoptic.get("annotations", [])}
    gt_by_image: dict[int, list[dict[str, Any]]] | None = None
    gt_categories: dict[int, str] = {}
    if manifest.get("annotations"):
        gt_data = load_json(manifest["annotations"])
        gt_categories = {int(c["id"]): c.get("name", str(c["id"])) for c in gt_data.get("categories", [])}
        gt_by_image = {}
        for a in gt_data.get("annotations", []):
            gt_by_image.setdefault(int(a["image_id"]), []).append(a)
    images = {int(im["id"]): im for im in manifest["images"]}
    sample = seeded_sample(images, args.gallery_size, args.seed)
    rows = []
    with atomic_path(args.out_gallery, directory=True) as tmp:
        for image_id in sample:
            im = images[image_id]
            rgb = load_rgb(image_path(manifest, im))
            stem = image_stem(im)
            ann = pan_anns.get(image_id)
            pan_ids = None
            segments: list[dict[str, Any]] = []
            if ann is not None and (pred_dir / "panoptic" / ann["file_name"]).is_file():
                from PIL import Image

                with Image.open(pred_dir / "panoptic" / ann["file_name"]) as pim:
                    pan_ids = rgb2id(np.asarray(pim.convert("RGB")))
                segments = ann.get("segments_info", [])
            gt = gt_by_image.get(image_id, []) if gt_by_image is not None else None
            dets = by_image.get(image_id, [])
            tile = prediction_tile(rgb, dets, pan_ids, segments, num_things, num_stuff, args.score_thresh,
                                   gt, gt_categories)
            save_jpeg(tmp / f"{stem}{GALLERY_SUFFIX}", tile)
            rows.append({"image": im["file_name"], "id": image_id, "detections": len(dets),
                         f"score >= {args.score_thresh:g}": sum(float(d.get("score", 0)) >= args.score_thresh
                                                                for d in dets),
                         "panoptic segments": len(segments),
                         "ground-truth instances": len(gt) if gt is not None else None})
    pngs = sorted(Path(args.out_gallery).glob(f"*{GALLERY_SUFFIX}"))
    scores = [float(d.get("score", 0)) for d in results]
    body = ["<h2>At a glance</h2>", kv_table([
        ("images predicted", len(manifest["images"])), ("detections", len(results)),
        ("detections per image (mean)", len(results) / max(len(manifest["images"]), 1)),
        (f"detections with score >= {args.score_thresh:g}", sum(s >= args.score_thresh for s in scores)),
        ("ground truth", manifest.get("annotations") or "none (the panels show predictions only)"),
    ])]
    if scores:
        hist, edges = np.histogram(scores, bins=10, range=(0.0, 1.0))
        body.append(bar_chart(hist.tolist(), [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])],
                              title="detections per score bin"))
    body += [f"<h2>Sample ({len(pngs)} images, seeded; full size under “gallery”)</h2>",
             "<p class='sub'>image | predicted instances (colour = cluster, as in the pseudo-label gallery) | "
             "predicted panoptic | ground truth (COCO categories), where it exists</p>",
             records_table(rows), thumbnails(pngs, 720)]
    if summary:
        body += ["<h2>predict summary.json</h2>", render_json(summary)]
    write_text(args.out_html, page(args.title, str(pred_dir), body))
    log.info("prediction gallery: %d images in %.1f s -> %s", len(pngs), time.perf_counter() - t0, args.out_gallery)
    return 0
