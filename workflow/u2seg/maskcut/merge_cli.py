"""``u2seg merge-masks``: per-shard MaskCut jsons -> one COCO instances json + summary + gallery (see
:mod:`u2seg.maskcut.merge`). The rule passes ``--shards-dir`` + ``--num-shards``: its command line does not
grow with the dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.errors import UserError
from u2seg.params import record_beside


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", type=Path, nargs="+", help="shard jsons, in shard order")
    src.add_argument("--shards-dir", type=Path,
                     help="folder of shard_{i:05d}.json and shard_{i:05d}_gallery/ (with --num-shards; "
                          "the command line does not grow with the dataset)")
    parser.add_argument("--num-shards", type=int, default=None, help="shards 0..N-1 of --shards-dir")
    parser.add_argument("--galleries", type=Path, nargs="*", default=[], help="shard gallery folders")
    parser.add_argument("--out", type=Path, required=True, help="merged COCO instances json")
    parser.add_argument("--summary", type=Path, required=True, help="summary json")
    parser.add_argument("--gallery-out", type=Path, required=True, help="folder collecting the overlay PNGs")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out)


def run(args: argparse.Namespace) -> int:
    from u2seg.maskcut.merge import merge_masks, shard_paths

    if args.shards_dir is not None:
        if args.num_shards is None:
            raise UserError("--shards-dir needs --num-shards")
        inputs, galleries = shard_paths(args.shards_dir, args.num_shards)
    else:
        inputs, galleries = list(args.inputs), list(args.galleries)
    return merge_masks(inputs, galleries, args.out, args.summary, args.gallery_out)
