"""``u2seg embed``: per-instance embeddings of the MaskCut masks of one shard (see
:mod:`u2seg.pseudo.instances.embeddings`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_device_arguments, add_shard_arguments
from u2seg.params import record_beside


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser)
    parser.add_argument("--masks", type=Path, required=True, help="the shard's MaskCut json")
    parser.add_argument("--features", type=Path, required=True, help="the shard's feature store (.zarr)")
    parser.add_argument("--method", choices=["pooled", "crop_cls"], default="pooled",
                        help="pooled: mask-weighted mean of the shard's dense features; crop_cls: masked crop through the backbone")
    parser.add_argument("--backbone", default=None, help="crop_cls: backbone name")
    parser.add_argument("--weights", default="", help="crop_cls: weights path or URL ('' = default)")
    parser.add_argument("--background", type=int, nargs=3, default=[0, 0, 0], metavar=("R", "G", "B"),
                        help="crop_cls: colour painted outside the mask")
    parser.add_argument("--margin", type=float, default=0.0, help="crop margin, fraction of the box size")
    parser.add_argument("--crop-size", type=int, default=480,
                        help="crop_cls: crops are resized to this square size (pixels)")
    parser.add_argument("--batch-size", type=int, default=16, help="crops per forward pass (crop_cls)")
    add_device_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output .npz")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.instances.embeddings import embed_shard

    return embed_shard(manifest_path=args.manifest, shard=args.shard, shard_size=args.shard_size,
                       masks_path=args.masks, features_path=args.features, method=args.method,
                       backbone_name=args.backbone, weights=args.weights, background=args.background,
                       margin=args.margin, crop_size=args.crop_size, batch_size=args.batch_size, device=args.device,
                       threads=args.threads, out_path=args.out)
