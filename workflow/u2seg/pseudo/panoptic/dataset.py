"""Panoptic pseudo-labels of a dataset (``u2seg merge-panoptic``; the per-image merge of a shard for
``u2seg merge-panoptic-shard``): class-aware instances + stuff maps -> COCO panoptic json + PNGs, the
semantic-branch PNGs, a gallery and the pseudo-label summary.

Images without any pseudo-instance are kept (stuff-only) and counted in the summary (the reference
skips them, docs/method.md §6 step 5). Segment ids are global running integers (unique within and across
images), starting at 1.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import decode_mask, id2rgb
from u2seg.errors import UserError
from u2seg.gallery import gallery_indices, pseudo_label_tile
from u2seg.images import load_rgb
from u2seg.manifest import image_path
from u2seg.pseudo.io import load_json, png_name, read_manifest, read_png, save_png_plain
from u2seg.pseudo.panoptic.merge import merge_panoptic, panoptic_categories
from u2seg.pseudo.panoptic.outputs import PanopticOutputs

log = logging.getLogger(__name__)


def _stats_from_histogram(hist: list[int]) -> dict[str, Any]:
    """:func:`_stats` of the values whose histogram (bincount) is ``hist``."""
    h = np.asarray(hist, dtype=np.int64)
    n = int(h.sum())
    if n == 0:
        return {"mean": 0.0, "max": 0, "histogram": []}
    nz = np.flatnonzero(h)
    return {"mean": round(float((np.arange(len(h)) * h).sum() / n), 4), "max": int(nz[-1]),
            "histogram": h[:nz[-1] + 1].tolist()}


def _add_histograms(a: list[int], b: list[int]) -> list[int]:
    out = [0] * max(len(a), len(b))
    for h in (a, b):
        for i, v in enumerate(h):
            out[i] += int(v)
    return out


def bounded_grid(h: int, w: int, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and columns of a nearest-neighbour grid of at most ``max_pixels`` pixels (all rows
    and columns when the image is not larger; 0 = no limit). Both are non-decreasing."""
    if max_pixels <= 0 or h * w <= max_pixels:
        return np.arange(h), np.arange(w)
    scale = (max_pixels / (h * w)) ** 0.5
    gh, gw = max(1, int(h * scale)), max(1, int(w * scale))
    return ((np.arange(gh) + 0.5) * h / gh).astype(np.int64), ((np.arange(gw) + 0.5) * w / gw).astype(np.int64)


def _owners(n_full: int, n_grid: int) -> np.ndarray:
    """Grid index of every full-size row (or column): nearest grid centre (non-decreasing)."""
    return np.minimum((np.arange(n_full) * n_grid) // n_full, n_grid - 1)


def grid_weights(h: int, w: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Full-size pixels each grid pixel stands for in the PNG that :func:`write_upsampled` writes (int32)."""
    row_n = np.bincount(_owners(h, len(rows)), minlength=len(rows)).astype(np.int32)
    col_n = np.bincount(_owners(w, len(cols)), minlength=len(cols)).astype(np.int32)
    return row_n[:, None] * col_n[None, :]


def full_size_segments(res: Any, h: int, w: int, rows: np.ndarray, cols: np.ndarray,
                       weight: np.ndarray) -> list[dict[str, Any]]:
    """``res.segments`` with area and box of the full-size PNG that :func:`write_upsampled` writes."""
    row_of, col_of = _owners(h, len(rows)), _owners(w, len(cols))
    row_n = np.bincount(row_of, minlength=len(rows))
    col_n = np.bincount(col_of, minlength=len(cols))
    row_start = np.searchsorted(row_of, np.arange(len(rows)))
    col_start = np.searchsorted(col_of, np.arange(len(cols)))
    out = []
    for seg in res.segments:
        sel = res.pan == seg["id"]
        ys, xs = np.flatnonzero(sel.any(1)), np.flatnonzero(sel.any(0))
        y0, x0 = int(row_start[ys[0]]), int(col_start[xs[0]])
        y1, x1 = int(row_start[ys[-1]] + row_n[ys[-1]]), int(col_start[xs[-1]] + col_n[xs[-1]])
        out.append(dict(seg, area=int(weight[sel].sum(dtype=np.int64)), bbox=[x0, y0, x1 - x0, y1 - y0]))
    return out


def write_upsampled(path: Path, grid: np.ndarray, h: int, w: int, rows: np.ndarray, cols: np.ndarray) -> None:
    """Save ``grid`` (on the grid of :func:`bounded_grid`) as a full-size h x w PNG (nearest)."""
    full = grid[_owners(h, len(rows))][:, _owners(w, len(cols))]
    save_png_plain(path, full)


# Counters of merged images that add up over shards (see :func:`merge_images`, :func:`summary_of`).
COUNTS = ("images", "images_without_instances", "instances", "visible_instances", "hidden_instances_dropped",
          "stuff_segments", "stuff_segments_dropped_by_overlap", "void_pixels", "thing_pixels", "total_pixels")


def add_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum of two per-shard statistics dicts (as returned by :func:`merge_images`)."""
    out = {key: int(a.get(key, 0)) + int(b.get(key, 0)) for key in COUNTS}
    for key in ("instances_histogram", "visible_instances_histogram"):
        out[key] = _add_histograms(a.get(key, []), b.get(key, []))
    return out


def group_by_image(instances: dict[str, Any], source: Path, k: int,
                   known: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Annotations of an instance json by image id (categories 1..k and image ids checked)."""
    cat_ids = sorted(c["id"] for c in instances.get("categories", []))
    if cat_ids != list(range(1, k + 1)):
        raise UserError(f"{source} has categories {cat_ids[:3]}...{cat_ids[-1:]} but clustering.k="
                        f"{k}: rerun cluster_instances")
    by_image: dict[int, list[dict]] = {}
    for ann in instances.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    unknown = set(by_image) - known
    if unknown:
        raise UserError(f"{source} has annotations of {len(unknown)} images not in the manifest "
                        f"(e.g. {sorted(unknown)[0]}): rerun cluster_instances")
    return by_image


def merge_images(manifest: dict[str, Any], images: list[dict[str, Any]], by_image: dict[int, list[dict]],
                 source: Path, stuff_dir: Path, k: int, num_stuff: int, max_thing_overlap: float,
                 first_id: int, pano_dir: Path, sem_dir: Path, sample: set[int],
                 max_pixels: int = 0) -> tuple[list[dict], list[dict], list[tuple[str, np.ndarray]],
                                                       dict[str, Any], int]:
    """Merge ``images`` one at a time, writing their panoptic / semantic PNGs into the folders.

    ``sample``: positions (in ``images``) that get a gallery tile. Images of more than ``max_pixels``
    pixels (0 = no limit) are merged on a nearest-neighbour grid of at most ``max_pixels`` and pasted
    back at full size (:func:`bounded_grid`), so memory per image is bounded. Returns (COCO panoptic images,
    annotations, tiles, statistics for :func:`summary_of`, the next free segment id).
    """
    images_out, annotations_out = [], []
    next_id = first_id
    n_inst = np.zeros(len(images), dtype=np.int64)
    n_visible = np.zeros_like(n_inst)
    hidden = stuff_segments = stuff_dropped = 0
    void_pixels = total_pixels = 0
    thing_pixels = 0
    tiles: list[tuple[str, np.ndarray]] = []
    for idx, im in enumerate(tqdm(images, desc="panoptic merge", unit="img")):
        h, w = im["height"], im["width"]
        anns = by_image.get(im["id"], [])
        for ann in anns:
            if list(ann["segmentation"].get("size", [])) != [h, w]:
                raise UserError(f"{source}: annotation {ann['id']} mask size "
                                f"{ann['segmentation'].get('size')} != [height, width] {[h, w]} of "
                                f"{im['file_name']}")
        stuff = read_png(stuff_dir / png_name(im))
        if stuff.shape != (h, w):
            raise UserError(f"stuff map {png_name(im)} is {stuff.shape[::-1]} (w, h), image is {w}x{h}: "
                            "rerun stuff_maps")
        rows, cols = bounded_grid(h, w, max_pixels)  # identity below max_pixels
        masks = [decode_mask(a["segmentation"], h, w)[np.ix_(rows, cols)] if len(rows) < h or len(cols) < w
                 else decode_mask(a["segmentation"], h, w) for a in anns]
        if len(rows) < h or len(cols) < w:
            stuff = stuff[np.ix_(rows, cols)]
        cats = [int(a["category_id"]) for a in anns]
        try:
            res = merge_panoptic(masks, cats, stuff, k, num_stuff, max_thing_overlap, next_id)
        except ValueError as exc:
            raise UserError(f"{im['file_name']}: {exc}") from exc
        next_id += len(res.segments)
        weight = None
        if len(rows) < h or len(cols) < w:  # paste back at full size; areas and boxes of the full-size PNG
            weight = grid_weights(h, w, rows, cols)
            res.segments = full_size_segments(res, h, w, rows, cols, weight)
            write_upsampled(pano_dir / png_name(im), id2rgb(res.pan), h, w, rows, cols)
            write_upsampled(sem_dir / png_name(im), res.semantic, h, w, rows, cols)
            log.info("%s (%dx%d) merged at %dx%d (panoptic.max_merge_pixels), pasted back at full size",
                     im["file_name"], w, h, len(cols), len(rows))
        else:
            save_png_plain(pano_dir / png_name(im), id2rgb(res.pan))
            save_png_plain(sem_dir / png_name(im), res.semantic)
        images_out.append({"id": im["id"], "file_name": im["file_name"], "width": w, "height": h})
        annotations_out.append({"image_id": im["id"], "file_name": png_name(im), "segments_info": res.segments})
        n_inst[idx] = len(anns)
        n_visible[idx] = len(res.thing_source)
        hidden += res.hidden
        stuff_dropped += res.stuff_dropped
        stuff_segments += len(res.segments) - len(res.thing_source)
        if weight is None:
            void_pixels += int((res.pan == 0).sum())
            thing_pixels += int((res.semantic == 0).sum())
        else:
            void_pixels += int(weight[res.pan == 0].sum(dtype=np.int64))
            thing_pixels += int(weight[res.semantic == 0].sum(dtype=np.int64))
        total_pixels += h * w
        if idx in sample:  # the tile is drawn at the merge resolution
            cat_of = {s["id"]: s["category_id"] for s in res.segments}
            lut_keys = np.array(list(cat_of), dtype=np.int64)
            pan_cat = np.zeros(res.pan.shape, dtype=np.int64)
            for sid in lut_keys:
                pan_cat[res.pan == sid] = cat_of[int(sid)]
            rgb = load_rgb(image_path(manifest, im))
            if rgb.shape[:2] != (h, w):
                raise UserError(f"{im['file_name']}: size changed since ingestion; rerun the pipeline")
            rgb = rgb[np.ix_(rows, cols)] if len(rows) < h or len(cols) < w else rgb
            tiles.append((png_name(im), pseudo_label_tile(rgb, stuff, masks, [c - 1 for c in cats],
                                                          pan_cat, k, num_stuff)))
    stats = {"images": len(images), "images_without_instances": int((n_inst == 0).sum()),
             "instances": int(n_inst.sum()), "visible_instances": int(n_visible.sum()),
             "hidden_instances_dropped": hidden, "stuff_segments": stuff_segments,
             "stuff_segments_dropped_by_overlap": stuff_dropped, "void_pixels": void_pixels,
             "thing_pixels": thing_pixels, "total_pixels": total_pixels,
             "instances_histogram": np.bincount(n_inst).tolist() if len(n_inst) else [],
             "visible_instances_histogram": np.bincount(n_visible).tolist() if len(n_visible) else []}
    return images_out, annotations_out, tiles, stats, next_id


def summary_of(stats: dict[str, Any], k: int, num_stuff: int, max_thing_overlap: float,
               gallery: list[str], seconds: float) -> dict[str, Any]:
    """The pseudo-label summary from (summed) :func:`merge_images` statistics."""
    total = max(stats["total_pixels"], 1)
    thing, void = stats["thing_pixels"], stats["void_pixels"]
    return {
        "k": k, "num_stuff": num_stuff, "max_thing_overlap": max_thing_overlap,
        "images": stats["images"],
        "images_without_instances": stats["images_without_instances"],
        "instances": stats["instances"], "visible_instances": stats["visible_instances"],
        "hidden_instances_dropped": stats["hidden_instances_dropped"],
        "instances_per_image": _stats_from_histogram(stats["instances_histogram"]),
        "visible_instances_per_image": _stats_from_histogram(stats["visible_instances_histogram"]),
        "stuff_segments": stats["stuff_segments"],
        "stuff_segments_dropped_by_overlap": stats["stuff_segments_dropped_by_overlap"],
        "pixel_fraction": {"thing": round(thing / total, 6),
                           "stuff": round((stats["total_pixels"] - thing - void) / total, 6),
                           "void": round(void / total, 6)},
        "gallery": gallery,
        "seconds": {"merge": round(seconds, 3)},
    }


def add_source_summaries(summary: dict[str, Any], cluster_summary: Path | None,
                         stuff_summary: Path | None) -> None:
    """Attach the clustering and stuff summaries (when given) to the pseudo-label summary."""
    for key, path in (("clustering", cluster_summary), ("stuff", stuff_summary)):
        if path is not None:
            summary[key] = load_json(path)


def merge_dataset(*, manifest_path: Path, instances_path: Path, stuff_dir: Path, k: int, num_stuff: int,
                  max_thing_overlap: float, gallery_size: int, max_merge_pixels: int, out: PanopticOutputs) -> int:
    """``u2seg merge-panoptic``: the whole dataset's panoptic pseudo-labels in one process."""
    t_start = time.perf_counter()
    if not 0.0 <= max_thing_overlap <= 1.0:
        raise UserError(f"panoptic.max_thing_overlap must be in [0, 1], got {max_thing_overlap}")
    manifest = read_manifest(manifest_path)
    instances = load_json(instances_path)
    by_image = group_by_image(instances, instances_path, k, {im["id"] for im in manifest["images"]})
    sample = set(gallery_indices(len(manifest["images"]), gallery_size))
    with atomic_path(out.panoptic, directory=True) as pano_tmp, \
            atomic_path(out.semantic, directory=True) as sem_tmp:
        images_out, annotations_out, tiles, stats, _ = merge_images(
            manifest, manifest["images"], by_image, instances_path, stuff_dir, k, num_stuff,
            max_thing_overlap, 1, pano_tmp, sem_tmp, sample, max_merge_pixels)
        data = {"info": {"description": "u2seg panoptic pseudo-labels", "k": k, "num_stuff": num_stuff},
                "images": images_out, "annotations": annotations_out,
                "categories": panoptic_categories(k, num_stuff)}
    write_json(out.json, data)  # the index last: it only exists once the PNG folders do
    with atomic_path(out.gallery, directory=True) as gal_tmp:
        for name, tile in tiles:
            save_png_plain(gal_tmp / name, tile)
    summary = summary_of(stats, k, num_stuff, max_thing_overlap, [name for name, _ in tiles],
                         time.perf_counter() - t_start)
    add_source_summaries(summary, out.cluster_summary, out.stuff_summary)
    write_json(out.summary, summary, indent=1)
    log.info("panoptic: %d images (%d without instances), %d/%d instances visible, %d stuff segments",
             summary["images"], summary["images_without_instances"], summary["visible_instances"],
             summary["instances"], summary["stuff_segments"])
    return 0
