"""``u2seg concat-validation``: combine per-shard validation reports (see
:mod:`u2seg.pseudo.panoptic.validate_concat`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.params import record_beside


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reports-dir", type=Path, required=True, help="folder of the per-shard shard_{i:05d}.validation.json reports")
    parser.add_argument("--num-shards", type=int, required=True, help="number of shards (shard_00000 .. shard_{n-1})")
    parser.add_argument("--report", type=Path, required=True, help="output combined validation report (json)")
    parser.add_argument("--max-errors", type=int, default=100, help="error messages kept in the report at most (the error counts stay complete)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.report)


def run(args: argparse.Namespace) -> int:
    from u2seg.pseudo.panoptic.validate_concat import concat_reports

    return concat_reports(reports_dir=args.reports_dir, num_shards=args.num_shards, report_path=args.report,
                          max_errors=args.max_errors)
