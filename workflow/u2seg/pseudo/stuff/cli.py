"""``u2seg cluster-stuff``: the stuff label maps of a dataset (see :mod:`u2seg.pseudo.stuff.maps`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_dataset_arguments, add_device_arguments
from u2seg.params import STUFF_CLUSTERS, add_dataclass_arguments, record_beside
from u2seg.pseudo.kmeans_params import KMeansParams
from u2seg.pseudo.stuff.options import add_crf_arguments, crf_params
from u2seg.pseudo.stuff.registry import STUFF_MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--k", type=int, default=STUFF_CLUSTERS, help="stuff clusters (config stuff.k)")
    parser.add_argument("--sample-patches", type=int, default=200000,
                        help="patch features sampled (seeded) to fit the stuff k-means")
    add_dataclass_arguments(parser, KMeansParams,
                            help_texts={"seed": "seed of the patch sample and the k-means initialisation"})
    add_crf_arguments(parser)
    parser.add_argument("--model", default="kmeans", choices=list(STUFF_MODELS),
                        help="stuff model (config stuff.model); stego*: gather the maps of `u2seg stego infer`")
    parser.add_argument("--stego-maps-dir", type=Path, default=None, help="stego*: folder of shard_XXXXX/ maps")
    parser.add_argument("--stego-model", type=Path, default=None, help="stego*: the STEGO stuff model (.npz)")
    add_device_arguments(parser)
    parser.add_argument("--out-model", type=Path, required=True, help="stuff model (.npz)")
    parser.add_argument("--out-maps", type=Path, required=True, help="folder of stuff PNGs")
    parser.add_argument("--summary", type=Path, required=True, help="stuff summary json")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_model)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.maps import stuff_maps

    return stuff_maps(model_name=args.model, manifest_path=args.manifest, shard_size=args.shard_size,
                      features_dir=args.features_dir, k=args.k, n_sample=args.sample_patches,
                      iterations=args.iterations, seed=args.seed, chunk_size=args.chunk_size, crf=crf_params(args),
                      maps_dir=args.stego_maps_dir, model_path=args.stego_model, device=args.device,
                      threads=args.threads, out_model=args.out_model, out_maps=args.out_maps,
                      summary_path=args.summary)
