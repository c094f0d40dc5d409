"""``u2seg merge-panoptic``: class-aware instances + stuff maps -> the dataset's COCO panoptic
pseudo-labels in one process (see :mod:`u2seg.pseudo.panoptic.dataset`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.pseudo.panoptic.outputs import add_output_arguments, outputs_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--instances", type=Path, required=True, help="class-aware instance json")
    parser.add_argument("--stuff-dir", type=Path, required=True, help="folder of stuff PNGs (0..S-1)")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    parser.add_argument("--num-stuff", type=int, default=27, help="stuff clusters S (config stuff.k)")
    parser.add_argument("--max-thing-overlap", type=float, default=0.7,
                        help="drop a stuff cluster's region when more than this fraction of it is covered by things")
    parser.add_argument("--gallery-size", type=int, default=8, help="images (fixed hash sample) that get overlay PNGs")
    parser.add_argument("--max-merge-pixels", type=int, default=0,
                        help="merge larger images on a grid of at most this many pixels, pasted back (0 = off)")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.dataset import merge_dataset

    return merge_dataset(manifest_path=args.manifest, instances_path=args.instances, stuff_dir=args.stuff_dir,
                         k=args.k, num_stuff=args.num_stuff, max_thing_overlap=args.max_thing_overlap,
                         gallery_size=args.gallery_size, max_merge_pixels=args.max_merge_pixels,
                         out=outputs_of(args))
