"""``u2seg train``: train the panoptic cascade Mask R-CNN on pseudo-labels (resumes from ``work/``).

Single process:   u2seg train --instances I.json --semantic-dir S/ --manifest M.json --out-dir OUT ...
Several GPUs:     torchrun --nproc_per_node=8 -m u2seg train ... (same flags; the batch is split);
                  in the workflow: train.gpus / train.nodes (u2seg.detector.launch)
Flag defaults: U2Seg's values (u2seg.detector.params); the workflow passes config.yaml's model / train
sections as flags.
"""
from __future__ import annotations

import argparse
import logging
import os

from u2seg.cliargs import add_manifest_argument, add_progress_argument, add_threads_argument
from u2seg.detector.params import ModelConfig, TrainConfig
from u2seg.params import add_dataclass_arguments, dataclass_from_args, record_inside

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, output folder, then one flag per model / solver setting."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--instances", required=True, help="COCO instances json of the pseudo-labels (category 1..K)")
    io.add_argument("--semantic-dir", default=None,
                    help="folder of semantic PNGs <image stem>.png (0 = thing, 1..stuff, 255 = void)")
    add_manifest_argument(io, "dataset manifest (image paths)", cast=None)
    io.add_argument("--out-dir", required=True,
                    help="round folder: model_final.pth, metrics.jsonl, loss.png, summary.json, work/")
    io.add_argument("--init", default=None, help="start from this model file (previous round)")
    add_threads_argument(io, "torch CPU threads per process")
    add_progress_argument(io)
    add_dataclass_arguments(parser.add_argument_group("model"), ModelConfig)
    add_dataclass_arguments(parser.add_argument_group("solver and data"), TrainConfig)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run; rank 0 only)."""
    return record_inside(args.out_dir) if int(os.environ.get("RANK", "0")) == 0 else None


def run(args: argparse.Namespace) -> int:
    """Build the dataset and train."""
    import torch

    from u2seg.detector.data import PseudoLabelDataset
    from u2seg.detector.train import train

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model_cfg = dataclass_from_args(ModelConfig, args)
    train_cfg = dataclass_from_args(TrainConfig, args)
    dataset = PseudoLabelDataset(args.instances, args.manifest, args.semantic_dir, model_cfg.num_classes,
                                 model_cfg.num_stuff)
    summary = train(dataset, model_cfg, train_cfg, args.out_dir, init=args.init, progress=not args.no_progress)
    if summary:
        log.info("summary: %s", summary)
    return 0
