"""``u2seg stego <action>``: the STEGO stuff model's jobs (see :mod:`u2seg.pseudo.stuff.stego.jobs`).

``knn`` (crop kNN table), ``train`` (head + cluster probe, resumable), ``infer`` (stuff maps of one shard;
also for ``stego_checkpoint``), ``import`` (an official checkpoint as a stuff model). ``u2seg cluster-stuff
--model stego|stego_checkpoint`` then gathers the per-shard maps.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_device_arguments
from u2seg.pseudo.stuff.options import add_crf_arguments, crf_params
from u2seg.pseudo.stuff.stego.params import StegoLossParams, StegoTrainParams


def _add_shards(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")


def add_knn_arguments(parser: argparse.ArgumentParser) -> None:
    _add_shards(parser)
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--crop-type", default="five", choices=["five", "none"],
                        help="five: STEGO's five crops of each feature map; none: the whole map")
    parser.add_argument("--crop-ratio", type=float, default=0.5, help="crop side as a fraction of the map side")
    parser.add_argument("--knn", type=int, default=30, help="neighbours stored per crop (self included)")
    add_device_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="kNN table (.npz)")


def run_knn(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import knn_job

    return knn_job(manifest_path=args.manifest, shard_size=args.shard_size, features_dir=args.features_dir,
                   crop_type=args.crop_type, crop_ratio=args.crop_ratio, knn=args.knn, device=args.device,
                   threads=args.threads, out=args.out)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    t, lp = StegoTrainParams(), StegoLossParams()
    _add_shards(parser)
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--knn-table", type=Path, required=True, help="kNN table (.npz) from `u2seg stego knn`")
    for name in ("dim", "k", "batch_size", "max_steps", "num_neighbors", "seed", "checkpoint_period",
                 "log_period"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(t, name),
                            help=f"training setting {name} (config {'stuff.k' if name == 'k' else 'stuff.stego.' + name})")
    for name in ("dropout", "lr", "cluster_lr"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(t, name),
                            help=f"training setting {name} (config {'stuff.k' if name == 'k' else 'stuff.stego.' + name})")
    for name in ("pos_intra_weight", "pos_inter_weight", "neg_inter_weight", "pos_intra_shift",
                 "pos_inter_shift", "neg_inter_shift"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(lp, name),
                            help=f"loss setting {name} (config stuff.stego.{name})")
    for name in ("feature_samples", "neg_samples"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(lp, name),
                            help=f"loss setting {name} (config stuff.stego.{name})")
    for name, default in (("pointwise", lp.pointwise), ("zero_clamp", lp.zero_clamp),
                          ("stabilize", lp.stabilize), ("dropout_target", t.dropout_target)):
        parser.add_argument("--" + name.replace("_", "-"), default=default, action=argparse.BooleanOptionalAction,
                            help=f"STEGO switch {name} (config stuff.stego.{name})")
    parser.add_argument("--preload-mb", type=float, default=4096.0,
                        help="keep the dense maps in memory (float16) when they fit in this many MB")
    add_device_arguments(parser)
    parser.add_argument("--work-dir", type=Path, required=True, help="resumable checkpoints")
    parser.add_argument("--out-model", type=Path, required=True, help="trained stuff model (.npz)")
    parser.add_argument("--out-history", type=Path, required=True, help="loss history + timings (json)")
    parser.add_argument("--out-curve", type=Path, default=None, help="loss curve (png)")


def train_params(args: argparse.Namespace) -> StegoTrainParams:
    """The training settings of the ``stego train`` flags."""
    loss = StegoLossParams(args.pos_intra_weight, args.pos_inter_weight, args.neg_inter_weight,
                           args.pos_intra_shift, args.pos_inter_shift, args.neg_inter_shift,
                           args.feature_samples, args.neg_samples, args.pointwise, args.zero_clamp, args.stabilize)
    return StegoTrainParams(args.dim, args.k, args.dropout, args.dropout_target, True, args.lr, args.cluster_lr,
                            args.batch_size, args.max_steps, args.num_neighbors, args.seed,
                            args.checkpoint_period, args.log_period, loss)


def run_train(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import train_job

    return train_job(manifest_path=args.manifest, shard_size=args.shard_size, features_dir=args.features_dir,
                     knn_table=args.knn_table, params=train_params(args), preload_mb=args.preload_mb,
                     device=args.device, threads=args.threads, work_dir=args.work_dir, out_model=args.out_model,
                     out_history=args.out_history, out_curve=args.out_curve)


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard", type=int, required=True, help="index of the shard to label")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--features", type=Path, required=True, help="the shard's zarr store")
    parser.add_argument("--model", type=Path, default=None, help="trained stuff model (.npz) from `u2seg stego train`")
    parser.add_argument("--checkpoint", default=None, help="official STEGO .ckpt (path or URL) instead of --model")
    parser.add_argument("--input-size", type=int, default=480, help="checkpoint mode: image size (features.input_size)")
    add_crf_arguments(parser)
    add_device_arguments(parser)
    parser.add_argument("--out-maps", type=Path, required=True, help="folder of this shard's stuff PNGs")


def run_infer(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import infer_job

    return infer_job(manifest_path=args.manifest, shard=args.shard, shard_size=args.shard_size,
                     features=args.features, model_path=args.model, checkpoint=args.checkpoint,
                     input_size=args.input_size, crf=crf_params(args), device=args.device, threads=args.threads,
                     out_maps=args.out_maps)


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="official STEGO .ckpt (path or URL)")
    parser.add_argument("--out", type=Path, required=True, help="its head + cluster probe as a stuff model (.npz)")


def run_import(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import import_job

    return import_job(checkpoint=args.checkpoint, out=args.out)


ACTIONS = {"knn": (add_knn_arguments, run_knn, "kNN table of the dense-map crops"),
           "train": (add_train_arguments, run_train, "train the STEGO head + cluster probe (resumable)"),
           "infer": (add_infer_arguments, run_infer, "stuff maps of one shard"),
           "import": (add_import_arguments, run_import, "head + cluster probe of an official STEGO checkpoint")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, (add, _, help_text) in ACTIONS.items():
        add(sub.add_parser(name, help=help_text))


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.action][1](args)
