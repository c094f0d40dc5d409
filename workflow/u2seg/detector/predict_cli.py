"""``u2seg predict``: run a model file on a manifest -> COCO results json, panoptic PNG + json, semantic PNGs."""
from __future__ import annotations

import argparse

from u2seg.cliargs import add_manifest_argument, add_progress_argument, add_threads_argument
from u2seg.detector.params import PredictConfig
from u2seg.params import add_dataclass_arguments, dataclass_from_args, record_inside


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model file, manifest, output folder and the inference settings (defaults: u2seg.detector.params)."""
    parser.add_argument("--weights", required=True, help="model file (model_final.pth or `u2seg import-d2` output)")
    add_manifest_argument(parser, "manifest of the images to predict on", cast=None)
    parser.add_argument("--out-dir", required=True,
                        help="folder for instances_results.json, panoptic.json, panoptic/, semantic/, summary.json")
    add_threads_argument(parser)
    add_progress_argument(parser)
    add_dataclass_arguments(parser, PredictConfig)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_inside(args.out_dir)


def run(args: argparse.Namespace) -> int:
    """Predict and write the outputs."""
    import torch

    from u2seg.detector.predict import run_predict

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run_predict(args.weights, args.manifest, args.out_dir, dataclass_from_args(PredictConfig, args),
                progress=not args.no_progress)
    return 0
