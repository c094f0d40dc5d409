"""``u2seg cluster-instances``: k-means over the instance embeddings -> class-aware instance json (see
:mod:`u2seg.pseudo.instances.cluster`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_dataset_arguments, add_device_arguments
from u2seg.params import add_dataclass_arguments, record_beside
from u2seg.pseudo.kmeans_params import KMeansParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--embed-dir", type=Path, required=True, help="folder of shard_{i:05d}.npz")
    parser.add_argument("--masks-dir", type=Path, required=True, help="folder of MaskCut shard_{i:05d}.json")
    parser.add_argument("--k", type=int, required=True, help="clusters K (config clustering.k)")
    add_dataclass_arguments(parser, KMeansParams)
    add_device_arguments(parser)
    parser.add_argument("--out-instances", type=Path, required=True,
                        help="output COCO instances json (category = cluster + 1)")
    parser.add_argument("--out-centroids", type=Path, required=True, help="output centroids .npy (K x D)")
    parser.add_argument("--out-shards", type=Path, default=None,
                        help="also write one instance json per shard (+ index.json) into this folder")
    parser.add_argument("--summary", type=Path, required=True, help="output summary json (cluster sizes, iterations)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_instances)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.instances.cluster import cluster_instances

    return cluster_instances(manifest_path=args.manifest, shard_size=args.shard_size, embed_dir=args.embed_dir,
                             masks_dir=args.masks_dir, k=args.k, iterations=args.iterations, seed=args.seed,
                             chunk_size=args.chunk_size, device=args.device, threads=args.threads,
                             out_instances=args.out_instances, out_centroids=args.out_centroids,
                             out_shards=args.out_shards, summary_path=args.summary)
