"""``u2seg stego <action>``: the STEGO stuff model's jobs (see :mod:`u2seg.pseudo.stuff.stego.jobs`).

``knn`` (crop kNN table), ``train`` (head + cluster probe, resumable), ``infer`` (stuff maps of one shard;
also for ``stego_checkpoint``), ``import`` (an official checkpoint as a stuff model). ``u2seg cluster-stuff
--model stego|stego_checkpoint`` then gathers the per-shard maps.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from u2seg.cliargs import add_dataset_arguments, add_device_arguments, add_shard_arguments
from u2seg.params import add_dataclass_arguments, dataclass_from_args, record_beside
from u2seg.pseudo.stuff.options import add_crf_arguments, crf_params
from u2seg.pseudo.stuff.stego.params import StegoInferenceParams, StegoLossParams, StegoTrainParams


def add_knn_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
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


def _help_texts(cls: type, kind: str) -> dict[str, str]:
    """``<kind> <name> (config stuff.stego.<name>)`` for each field (``k``: config stuff.k)."""
    return {f.name: f"{kind} {f.name} (config {'stuff.k' if f.name == 'k' else 'stuff.stego.' + f.name})"
            for f in fields(cls)}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--knn-table", type=Path, required=True, help="kNN table (.npz) from `u2seg stego knn`")
    add_dataclass_arguments(parser, StegoTrainParams, exclude=("nonlinear", "loss"),
                            help_texts=_help_texts(StegoTrainParams, "training setting"))
    add_dataclass_arguments(parser, StegoLossParams, help_texts=_help_texts(StegoLossParams, "loss setting"))
    parser.add_argument("--preload-mb", type=float, default=4096.0,
                        help="keep the dense maps in memory (float16) when they fit in this many MB")
    add_device_arguments(parser)
    parser.add_argument("--work-dir", type=Path, required=True, help="resumable checkpoints")
    parser.add_argument("--out-model", type=Path, required=True, help="trained stuff model (.npz)")
    parser.add_argument("--out-history", type=Path, required=True, help="loss history + timings (json)")
    parser.add_argument("--out-curve", type=Path, default=None, help="loss curve (png)")


def train_params(args: argparse.Namespace) -> StegoTrainParams:
    """The training settings of the ``stego train`` flags."""
    return dataclass_from_args(StegoTrainParams, args, loss=dataclass_from_args(StegoLossParams, args))


def run_train(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import train_job

    return train_job(manifest_path=args.manifest, shard_size=args.shard_size, features_dir=args.features_dir,
                     knn_table=args.knn_table, params=train_params(args), preload_mb=args.preload_mb,
                     device=args.device, threads=args.threads, work_dir=args.work_dir, out_model=args.out_model,
                     out_history=args.out_history, out_curve=args.out_curve)


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser, shard_help="index of the shard to label")
    parser.add_argument("--features", type=Path, required=True, help="the shard's zarr store")
    parser.add_argument("--model", type=Path, default=None, help="trained stuff model (.npz) from `u2seg stego train`")
    parser.add_argument("--checkpoint", default=None, help="official STEGO .ckpt (path or URL) instead of --model")
    parser.add_argument("--input-size", type=int, default=480, help="checkpoint mode: image size (features.input_size)")
    add_dataclass_arguments(parser, StegoInferenceParams, help_texts={
        f.name: f"checkpoint mode: {text} (config stuff.stego_inference.{f.name})"
        for f, text in zip(fields(StegoInferenceParams), (
            "average the code of the image and of its horizontal flip, as STEGO's evaluation",
            "full: the whole image at --input-size (labels everywhere, the pipeline's maps); center: STEGO's "
            "nearest resize + centre crop (labels in the crop only, 255 elsewhere)",
            "crop=center: side of STEGO's centre crop (its evaluation res)"))})
    add_crf_arguments(parser)
    add_device_arguments(parser)
    parser.add_argument("--out-maps", type=Path, required=True, help="folder of this shard's stuff PNGs")


def run_infer(args: argparse.Namespace) -> int:
    from u2seg.errors import UserError
    from u2seg.pseudo.stuff.stego.jobs import infer_job

    inference = dataclass_from_args(StegoInferenceParams, args)
    if args.model is not None and inference != StegoInferenceParams():
        raise UserError("--flip/--crop/--crop-size apply to --checkpoint inference only; a trained --model "
                        "labels the stored shard features (drop these flags or use --checkpoint)")
    return infer_job(manifest_path=args.manifest, shard=args.shard, shard_size=args.shard_size,
                     features=args.features, model_path=args.model, checkpoint=args.checkpoint,
                     input_size=args.input_size, inference=inference,
                     crf=crf_params(args), device=args.device, threads=args.threads, out_maps=args.out_maps)


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="official STEGO .ckpt (path or URL)")
    parser.add_argument("--out", type=Path, required=True, help="its head + cluster probe as a stuff model (.npz)")


def run_import(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.jobs import import_job

    return import_job(checkpoint=args.checkpoint, out=args.out)


# action -> the output its resolved-config record sits beside
RECORD_BESIDE = {"knn": "out", "train": "out_model", "infer": "out_maps", "import": "out"}

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


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run, beside the action's main output (written by u2seg.cli)."""
    return record_beside(getattr(args, RECORD_BESIDE[args.action]))
