"""``u2seg merge-panoptic-shard``: the panoptic merge of one shard (see :mod:`u2seg.pseudo.panoptic.shard`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_num_stuff_argument, add_shard_arguments
from u2seg.params import add_dataclass_arguments, record_beside
from u2seg.pseudo.panoptic.params import PanopticMergeParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser, shard_help="index of the shard to merge")
    parser.add_argument("--instances-dir", type=Path, required=True,
                        help="per-shard instance jsons + index.json (cluster-instances --out-shards)")
    parser.add_argument("--stuff-dir", type=Path, required=True, help="folder of stuff PNGs (0..S-1)")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    add_num_stuff_argument(parser)
    add_dataclass_arguments(parser, PanopticMergeParams)
    parser.add_argument("--out-json", type=Path, required=True, help="the shard's COCO panoptic json")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder: panoptic/, semantic/, gallery/")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.shard import merge_shard

    return merge_shard(manifest_path=args.manifest, instances_dir=args.instances_dir, shard=args.shard,
                       shard_size=args.shard_size, stuff_dir=args.stuff_dir, k=args.k, num_stuff=args.num_stuff,
                       max_thing_overlap=args.max_thing_overlap, gallery_size=args.gallery_size,
                       max_merge_pixels=args.max_merge_pixels, out_json=args.out_json, out_dir=args.out_dir)
