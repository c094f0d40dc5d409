"""``u2seg predict``: run a model file on a manifest -> COCO results json, panoptic PNG + json, semantic PNGs."""
from __future__ import annotations

import argparse

import torch

from u2seg.detector.cliutil import add_dataclass_arguments, config_defaults, dataclass_from_args
from u2seg.detector.predict import PredictConfig, run_predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model file, manifest, output folder and the inference settings."""
    parser.add_argument("--weights", required=True, help="model file (model_final.pth or `u2seg import-d2` output)")
    parser.add_argument("--manifest", required=True, help="manifest of the images to predict on")
    parser.add_argument("--out-dir", required=True,
                        help="folder for instances_results.json, panoptic.json, panoptic/, semantic/, summary.json")
    defaults = config_defaults("predict")
    parser.add_argument("--threads", type=int, default=defaults.get("threads", 0),
                        help="torch CPU threads (0 = torch default; default: config.yaml predict.threads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_arguments(parser, PredictConfig, defaults=defaults)  # defaults: config.yaml's predict section


def run(args: argparse.Namespace) -> int:
    """Predict and write the outputs."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run_predict(args.weights, args.manifest, args.out_dir, dataclass_from_args(PredictConfig, args),
                progress=not args.no_progress)
    return 0
