"""``u2seg cluster-stuff``: the stuff label maps of a dataset (see :mod:`u2seg.pseudo.stuff.maps`).

k-means without stored features (:mod:`u2seg.pseudo.stuff.fused`): ``--sample-dir`` fits on the per-shard
samples of ``u2seg shard-pass`` and writes only ``--out-model``; ``--shard-maps-dir`` + ``--fitted-model``
gather the per-shard maps of ``u2seg stuff-shard`` into ``--out-maps`` + ``--summary``.
"""
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
    parser.add_argument("--features-dir", type=Path, default=None,
                        help="folder of shard_{i:05d}.zarr (k-means fitted and applied here)")
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
    parser.add_argument("--sample-dir", type=Path, default=None,
                        help="kmeans, features not stored: fit on the per-shard samples (shard_XXXXX.npy) of "
                             "`u2seg shard-pass --stuff-sample` and write only --out-model")
    parser.add_argument("--shard-maps-dir", type=Path, default=None,
                        help="kmeans, features not stored: gather the per-shard maps (shard_XXXXX/) of "
                             "`u2seg stuff-shard` (model: --fitted-model) into --out-maps and --summary")
    parser.add_argument("--fitted-model", type=Path, default=None, help="with --shard-maps-dir: the fitted model")
    add_device_arguments(parser)
    parser.add_argument("--out-model", type=Path, default=None, help="stuff model (.npz)")
    parser.add_argument("--out-maps", type=Path, default=None, help="folder of stuff PNGs")
    parser.add_argument("--summary", type=Path, default=None, help="stuff summary json")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_model or args.summary)


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = ["--" + n.replace("_", "-") for n in names if getattr(args, n) is None]
    if missing:
        from u2seg.errors import UserError

        raise UserError(f"cluster-stuff: this mode needs {', '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.maps import stuff_maps

    if args.sample_dir is not None or args.shard_maps_dir is not None:
        from u2seg.pseudo.stuff import fused

        if args.model != "kmeans":
            raise SystemExit("cluster-stuff: --sample-dir / --shard-maps-dir are for --model kmeans")
        if args.sample_dir is not None:
            _need(args, "out_model")
            return fused.fit_from_shard_samples(
                manifest_path=args.manifest, shard_size=args.shard_size, sample_dir=args.sample_dir, k=args.k,
                iterations=args.iterations, seed=args.seed, chunk_size=args.chunk_size, device=args.device,
                threads=args.threads, out_model=args.out_model)
        _need(args, "fitted_model", "out_maps", "summary")
        return fused.gather_kmeans_maps(manifest_path=args.manifest, shard_size=args.shard_size,
                                        maps_dir=args.shard_maps_dir, model_path=args.fitted_model, k=args.k,
                                        out_maps=args.out_maps, summary_path=args.summary)
    _need(args, "out_model", "out_maps", "summary")
    if args.model == "kmeans":
        _need(args, "features_dir")

    return stuff_maps(model_name=args.model, manifest_path=args.manifest, shard_size=args.shard_size,
                      features_dir=args.features_dir, k=args.k, n_sample=args.sample_patches,
                      iterations=args.iterations, seed=args.seed, chunk_size=args.chunk_size, crf=crf_params(args),
                      maps_dir=args.stego_maps_dir, model_path=args.stego_model, device=args.device,
                      threads=args.threads, out_model=args.out_model, out_maps=args.out_maps,
                      summary_path=args.summary)
