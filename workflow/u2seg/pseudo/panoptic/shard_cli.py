"""``u2seg merge-panoptic-shard``: the panoptic merge of one shard (see :mod:`u2seg.pseudo.panoptic.shard`)."""
from __future__ import annotations

import argparse
from pathlib import Path


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
    from u2seg.pseudo.panoptic.shard import merge_shard

    return merge_shard(manifest_path=args.manifest, instances_dir=args.instances_dir, shard=args.shard,
                       shard_size=args.shard_size, stuff_dir=args.stuff_dir, k=args.k, num_stuff=args.num_stuff,
                       max_thing_overlap=args.max_thing_overlap, gallery_size=args.gallery_size,
                       max_merge_pixels=args.max_merge_pixels, out_json=args.out_json, out_dir=args.out_dir)
