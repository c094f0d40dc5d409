"""``u2seg merge-panoptic``: class-aware instances + stuff maps -> the dataset's COCO panoptic
pseudo-labels in one process (see :mod:`u2seg.pseudo.panoptic.dataset`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_manifest_argument, add_num_stuff_argument
from u2seg.params import add_dataclass_arguments, record_beside
from u2seg.pseudo.panoptic.outputs import add_output_arguments, outputs_of
from u2seg.pseudo.panoptic.params import PanopticMergeParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_manifest_argument(parser)
    parser.add_argument("--instances", type=Path, required=True, help="class-aware instance json")
    parser.add_argument("--stuff-dir", type=Path, required=True, help="folder of stuff PNGs (0..S-1)")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    add_num_stuff_argument(parser)
    add_dataclass_arguments(parser, PanopticMergeParams)
    add_output_arguments(parser)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.dataset import merge_dataset

    return merge_dataset(manifest_path=args.manifest, instances_path=args.instances, stuff_dir=args.stuff_dir,
                         k=args.k, num_stuff=args.num_stuff, max_thing_overlap=args.max_thing_overlap,
                         gallery_size=args.gallery_size, max_merge_pixels=args.max_merge_pixels,
                         out=outputs_of(args))
