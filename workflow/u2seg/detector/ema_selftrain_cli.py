"""``u2seg self-train-ema``: CUPS's momentum-teacher self-training from a trained model (docs/selftrain.md).

Single process:   u2seg self-train-ema --init r1/model_final.pth --instances I.json --manifest M.json --out-dir OUT
Several GPUs:     torchrun --nproc_per_node=8 -m u2seg self-train-ema ... (the batch is split)
Flag defaults: CUPS's values (u2seg.detector.params.CupsSelfTrainParams); the workflow passes config.yaml's
selftrain.cups section as flags. The model's architecture comes from the --init model file.
"""
from __future__ import annotations

import argparse
import logging
import os

from u2seg.cliargs import add_manifest_argument, add_progress_argument, add_threads_argument
from u2seg.detector.params import CupsSelfTrainParams
from u2seg.params import add_dataclass_arguments, dataclass_from_args, record_inside

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, output folder, then one flag per self-training setting."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--init", required=True, help="model file to start from (round 1's model_final.pth)")
    io.add_argument("--instances", required=True, help="COCO instances json listing the training images")
    add_manifest_argument(io, "dataset manifest (image paths)", cast=None)
    io.add_argument("--out-dir", required=True,
                    help="folder: model_final.pth (student), teacher_final.pth, metrics.jsonl, summary.json, work/")
    add_threads_argument(io, "torch CPU threads per process")
    add_progress_argument(io)
    add_dataclass_arguments(parser.add_argument_group("self-training"), CupsSelfTrainParams)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (rank 0 only)."""
    return record_inside(args.out_dir) if int(os.environ.get("RANK", "0")) == 0 else None


def run(args: argparse.Namespace) -> int:
    """Read the init model's architecture, build the dataset, self-train."""
    import torch

    from u2seg.detector import checkpoint as ckpt
    from u2seg.detector.data import PseudoLabelDataset
    from u2seg.detector.ema_selftrain import self_train
    from u2seg.detector.model import ModelConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    params = dataclass_from_args(CupsSelfTrainParams, args)
    model_cfg = ModelConfig.from_dict(ckpt.load_model_file(args.init)["model_config"])
    model_cfg.backbone_weights = None  # the init file carries every weight
    dataset = PseudoLabelDataset(args.instances, args.manifest, None, model_cfg.num_classes, model_cfg.num_stuff)
    summary = self_train(dataset, model_cfg, params, args.out_dir, args.init, progress=not args.no_progress)
    if summary:
        log.info("summary: %s", {k: v for k, v in summary.items() if k != "inputs"})
    return 0
