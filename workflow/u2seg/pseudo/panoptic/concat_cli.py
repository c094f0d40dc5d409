"""``u2seg concat-panoptic``: the per-shard panoptic merges -> the dataset's outputs (see
:mod:`u2seg.pseudo.panoptic.concat`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_num_stuff_argument
from u2seg.params import record_beside
from u2seg.pseudo.panoptic.outputs import add_output_arguments, outputs_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards-dir", type=Path, required=True,
                        help="folder of shard_{i:05d}.json + shard_{i:05d}/ (u2seg merge-panoptic-shard)")
    parser.add_argument("--num-shards", type=int, required=True, help="number of shards (shard_00000 .. shard_{n-1})")
    parser.add_argument("--k", type=int, required=True, help="thing clusters K (config clustering.k)")
    add_num_stuff_argument(parser, required=True)
    parser.add_argument("--max-thing-overlap", type=float, required=True, help="drop a stuff cluster's region when more than this fraction of it is covered by things")
    add_output_arguments(parser)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.concat import concat_shards

    return concat_shards(shards_dir=args.shards_dir, num_shards=args.num_shards, k=args.k, num_stuff=args.num_stuff,
                         max_thing_overlap=args.max_thing_overlap, out=outputs_of(args))
