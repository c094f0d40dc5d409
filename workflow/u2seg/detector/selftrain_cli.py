"""``u2seg self-train-labels``: next round's pseudo-labels from predictions + the previous round's labels."""
from __future__ import annotations

import argparse
import json
import logging

from u2seg.atomic import write_json
from u2seg.detector.params import SelfTrainParams
from u2seg.detector.selftrain import next_round_labels, round_threshold
from u2seg.errors import UserError
from u2seg.params import add_dataclass_arguments, record_beside

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, output and the selection thresholds."""
    parser.add_argument("--predictions", required=True, help="COCO results json of the previous round's model")
    parser.add_argument("--previous", required=True, help="previous round's pseudo-label instances json")
    parser.add_argument("--out", required=True, help="output instances json")
    parser.add_argument("--round", type=int, required=True, help="round being prepared (>= 2)")
    add_dataclass_arguments(parser, SelfTrainParams)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out)


def run(args: argparse.Namespace) -> int:
    """Read, merge, write."""
    thresh = round_threshold(args.score_thresholds, args.round)
    try:
        with open(args.predictions) as fh:
            predictions = json.load(fh)
        with open(args.previous) as fh:
            previous = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read inputs: {exc}") from exc
    if not isinstance(predictions, list):
        raise UserError(f"{args.predictions}: expected a COCO results list")
    merged, stats = next_round_labels(predictions, previous, thresh, args.iou_thresh, args.max_per_image)
    write_json(args.out, merged)
    log.info("round %d labels (score >= %.2f): %s", args.round, thresh, stats)
    return 0
