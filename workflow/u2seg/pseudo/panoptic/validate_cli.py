"""``u2seg validate-panoptic``: check a COCO panoptic json + PNG folder (see :mod:`u2seg.pseudo.panoptic.validate`)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--panoptic-json", type=Path, required=True,
                        help="COCO panoptic json to check")
    parser.add_argument("--panoptic-dir", type=Path, required=True, help="folder of panoptic PNGs")
    parser.add_argument("--semantic-dir", type=Path, default=None, help="folder of semantic PNGs (optional)")
    parser.add_argument("--instances", type=Path, default=None, help="class-aware instance json (optional)")
    parser.add_argument("--num-things", type=int, default=None,
                        help="expected K: the instance json must have categories 1..K")
    parser.add_argument("--report", type=Path, default=None, help="write the findings as json here")
    parser.add_argument("--max-errors", type=int, default=100, help="stop listing after this many problems")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record beside the report (``<report minus .json>.config.json``: per-shard reports sit
    beside the shard's panoptic json, whose record is ``shard_XXXXX.config.json``); None without a report."""
    return os.path.splitext(os.fspath(args.report))[0] + ".config.json" if args.report else None


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.validate import validate_dataset

    return validate_dataset(panoptic_json=args.panoptic_json, panoptic_dir=args.panoptic_dir,
                            semantic_dir=args.semantic_dir, instances=args.instances, num_things=args.num_things,
                            report_path=args.report, max_errors=args.max_errors)
