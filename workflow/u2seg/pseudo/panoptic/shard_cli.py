"""``u2seg merge-panoptic-shard``: the panoptic merge of one feature shard (a parallel job per shard).

Reads the shard's class-aware instances (``instances_shards/shard_{i:05d}.json`` written by
``u2seg cluster-instances --out-shards``) and the stuff PNGs of its images; writes the shard's COCO
panoptic json (plus its ``stats`` and gallery names, for ``u2seg concat-panoptic``) and a folder with
``panoptic/``, ``semantic/`` and ``gallery/`` PNGs. Memory and time depend on the shard, not on the
dataset (beyond reading the manifest).

Segment ids: shard i starts at 1 + sum over earlier shards of (annotations + images * S), an upper
bound of their segment count, so ids are unique in the whole dataset (as in ``u2seg merge-panoptic``,
with gaps between shards). When that bound exceeds the 24-bit RGB range (e.g. ImageNet with S = 27),
every shard starts at 1: ids are then unique within each shard (and image), as COCO panoptic requires;
the summary's ``segment_ids`` says which.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from u2seg.atomic import atomic_path, write_json
from u2seg.errors import UserError
from u2seg.jsonio import load_json
from u2seg.manifest import shard_images
from u2seg.pseudo.gallery import gallery_indices
from u2seg.pseudo.io import read_manifest, save_png_plain
from u2seg.pseudo.panoptic.merge import MAX_SEGMENT_ID, panoptic_categories
from u2seg.pseudo.panoptic.merge_cli import group_by_image, merge_images

log = logging.getLogger(__name__)


def first_segment_id(index: dict[str, Any], shard: int, num_stuff: int) -> tuple[int, str]:
    """(first segment id of ``shard``, "dataset" or "shard": where ids are unique) from ``index.json``."""
    bounds = [int(s["annotations"]) + int(s["images"]) * num_stuff for s in index["shards"]]
    if sum(bounds) <= MAX_SEGMENT_ID:
        return 1 + sum(bounds[:shard]), "dataset"
    return 1, "shard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--instances-dir", type=Path, required=True,
                        help="per-shard instance jsons + index.json (cluster-instances --out-shards)")
    parser.add_argument("--shard", type=int, required=True, help="index of the shard to merge")
    parser.add_argument("--shard-size", type=int, required=True, help="images per feature shard (config features.shard_size)")
    parser.add_argument("--stuff-dir", type=Path, required=True, help="folder of stuff PNGs (0..S-1)")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    parser.add_argument("--num-stuff", type=int, default=27, help="stuff clusters S (config stuff.k)")
    parser.add_argument("--max-thing-overlap", type=float, default=0.7, help="drop a stuff cluster's region when more than this fraction of it is covered by things")
    parser.add_argument("--gallery-size", type=int, default=8, help="gallery images of the whole dataset")
    parser.add_argument("--max-merge-pixels", type=int, default=0,
                        help="merge larger images on a grid of at most this many pixels, pasted back (0 = off)")
    parser.add_argument("--out-json", type=Path, required=True, help="the shard's COCO panoptic json")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder: panoptic/, semantic/, gallery/")


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    if not 0.0 <= args.max_thing_overlap <= 1.0:
        raise UserError(f"panoptic.max_thing_overlap must be in [0, 1], got {args.max_thing_overlap}")
    manifest = read_manifest(args.manifest)
    index = load_json(args.instances_dir / "index.json")
    if index.get("shard_size") != args.shard_size or not 0 <= args.shard < len(index.get("shards", [])):
        raise UserError(f"{args.instances_dir}/index.json was written for shard_size {index.get('shard_size')} "
                        f"and {len(index.get('shards', []))} shards; shard {args.shard} of size {args.shard_size} "
                        "asked: rerun cluster_instances")
    images = shard_images(manifest, args.shard, args.shard_size)
    source = args.instances_dir / f"shard_{args.shard:05d}.json"
    instances = load_json(source)
    if [im["id"] for im in instances.get("images", [])] != [im["id"] for im in images]:
        raise UserError(f"{source}: its images are not those of shard {args.shard} of the manifest: "
                        "rerun cluster_instances")
    by_image = group_by_image(instances, source, args.k, {im["id"] for im in images})
    del instances
    lo = args.shard * args.shard_size
    sample = {i - lo for i in gallery_indices(len(manifest["images"]), args.gallery_size)
              if lo <= i < lo + len(images)}
    first_id, scope = first_segment_id(index, args.shard, args.num_stuff)
    with atomic_path(args.out_dir, directory=True) as tmp:
        for sub in ("panoptic", "semantic", "gallery"):
            (tmp / sub).mkdir()
        images_out, annotations_out, tiles, stats, _ = merge_images(
            manifest, images, by_image, source, args.stuff_dir, args.k, args.num_stuff, args.max_thing_overlap,
            first_id, tmp / "panoptic", tmp / "semantic", sample, args.max_merge_pixels)
        for name, tile in tiles:
            save_png_plain(tmp / "gallery" / name, tile)
    stats.update(segment_ids=scope, gallery=[name for name, _ in tiles],
                 seconds=round(time.perf_counter() - t_start, 3))
    write_json(args.out_json, {
        "info": {"description": "u2seg panoptic pseudo-labels", "k": args.k, "num_stuff": args.num_stuff},
        "images": images_out, "annotations": annotations_out,
        "categories": panoptic_categories(args.k, args.num_stuff), "stats": stats})
    log.info("panoptic shard %d: %d images, %d/%d instances visible", args.shard, len(images_out),
             stats["visible_instances"], stats["instances"])
    return 0
