"""``u2seg stuff-shard``: one shard's k-means stuff maps from features recomputed in memory.

Usage: ``u2seg stuff-shard --model MODEL.npz --out-maps DIR [CRF flags] :: features FLAGS``. The features
segment holds exactly the flags of ``u2seg features`` (parsed by its own parser); the backbone runs on the
shard (no MaskCut, no embeddings) and nothing is written to its ``--out``: the features stay in memory. The
maps are those ``u2seg cluster-stuff`` makes from the stored features (:mod:`u2seg.pseudo.stuff.fused`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.params import record_inside
from u2seg.pseudo.stuff.options import add_crf_arguments, crf_params

SEPARATOR = "::"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the fitted k-means stuff model (.npz)")
    add_crf_arguments(parser)
    parser.add_argument("--out-maps", type=Path, required=True,
                        help="folder of the shard's stuff PNGs + _shard.json (gathered by `u2seg cluster-stuff`)")
    parser.add_argument("segments", nargs=argparse.REMAINDER,
                        help=f"'{SEPARATOR} features FLAGS': the flags of `u2seg features` (its --out is not written)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record inside the maps folder."""
    return record_inside(args.out_maps)


def features_flags(tokens: list[str]) -> list[str]:
    """``:: features FLAGS`` -> FLAGS."""
    if tokens[:2] != [SEPARATOR, "features"]:
        raise SystemExit(f"u2seg stuff-shard: expected '{SEPARATOR} features FLAGS', got {tokens[:2]}")
    return tokens[2:]


def run(args: argparse.Namespace) -> int:
    import torch

    from u2seg.backbones import build_backbone
    from u2seg.cli import stage_parser
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path, load_manifest, shard_images
    from u2seg.pseudo.stuff.fused import write_shard_maps
    from u2seg.pseudo.stuff.registry import load_stuff_model
    from u2seg.shard_pass import compute_features

    fa = stage_parser("features").parse_args(features_flags(args.segments))
    if fa.threads > 0:
        torch.set_num_threads(fa.threads)
    model = load_stuff_model(args.model)
    manifest = load_manifest(fa.manifest)
    backbone = build_backbone(fa.backbone, fa.weights or None, fa.device)
    feats = compute_features(manifest, fa.shard, fa.shard_size, backbone, fa.input_size, fa.batch_size,
                             Path(fa.out).name)
    del backbone
    write_shard_maps(model, feats["dense"], shard_images(manifest, fa.shard, fa.shard_size),
                     lambda im: load_rgb(image_path(manifest, im)), crf_params(args), args.out_maps)
    return 0
