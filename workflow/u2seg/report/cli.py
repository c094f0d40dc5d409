"""Sub-commands of ``u2seg report`` (one module per report category).

Lists of inputs that grow with the dataset (the feature shards) can be given in a file, one path
per line (``--features-from``), so that the command line stays short for any number of shards.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_manifest_argument
from u2seg.errors import UserError
from u2seg.params import record_beside
from u2seg.report.evaluation import cmd_evaluation
from u2seg.report.features import cmd_features
from u2seg.report.predictions import cmd_predictions
from u2seg.report.stage import cmd_stage
from u2seg.report.train import cmd_train


def read_path_list(path: Path) -> list[Path]:
    """Paths listed in a text file, one per line (blank lines and ``#`` comments ignored)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read the list of inputs {path}: {exc.strerror or exc}") from exc
    return [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _features(args: argparse.Namespace) -> int:
    if args.features_from is not None:
        args.features = list(args.features) + read_path_list(args.features_from)
    return cmd_features(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``u2seg report <item>``."""
    sub = parser.add_subparsers(dest="item", metavar="<item>", required=True)

    p = sub.add_parser("features", help="ingest + feature summary json and page")
    p.add_argument("--dataset", required=True, help="dataset name shown in the title")
    add_manifest_argument(p)
    p.add_argument("--skipped", type=Path, default=None, help="skipped.json of the ingestion (unreadable files)")
    p.add_argument("--features", type=Path, nargs="*", default=[], help="feature shard stores (zarr)")
    p.add_argument("--features-from", type=Path, default=None, metavar="LIST",
                   help="text file listing feature shard stores, one per line (added to --features)")
    p.add_argument("--out-json", type=Path, required=True, help="output ingest_summary.json")
    p.add_argument("--out-html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=_features)

    p = sub.add_parser("stage", help="a stage's summary page and gallery copy")
    p.add_argument("--stage", required=True, help="maskcut, pseudo, ... (picks the 'at a glance' numbers)")
    p.add_argument("--title", required=True, help="page title")
    p.add_argument("--summary", type=Path, required=True, help="the stage's summary.json")
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=JSON", help="more json files to show")
    p.add_argument("--gallery", type=Path, default=None, help="the stage's folder of overlay PNGs")
    p.add_argument("--out-gallery", type=Path, default=None,
                   help="where to copy the gallery PNGs (long side bounded, legend added)")
    p.add_argument("--panoptic-json", type=Path, default=None,
                   help="the stage's COCO panoptic json: a cluster legend (ids, colours) under each panel")
    p.add_argument("--out-html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("train", help="a training round's page and loss curve")
    p.add_argument("--title", required=True, help="page title")
    p.add_argument("--summary", type=Path, required=True, help="the round's summary.json")
    p.add_argument("--metrics", type=Path, default=None, help="the round's metrics.jsonl (loss per iteration)")
    p.add_argument("--plot", type=Path, default=None, help="the round's loss.png")
    p.add_argument("--out-plot", type=Path, default=None, help="where to copy loss.png")
    p.add_argument("--out-html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predictions", help="prediction | ground truth panels of a seeded image sample")
    p.add_argument("--title", required=True, help="page title")
    add_manifest_argument(p, "dataset manifest json (images, GT if any)")
    p.add_argument("--predictions", type=Path, required=True, help="predict/{model} folder")
    p.add_argument("--gallery-size", type=int, default=8, help="images in the seeded sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    p.add_argument("--score-thresh", type=float, default=0.5, help="instances drawn from this score")
    p.add_argument("--k", type=int, default=1, help="thing classes when panoptic.json has no categories")
    p.add_argument("--num-stuff", type=int, default=0, help="stuff classes when panoptic.json has no categories")
    p.add_argument("--out-gallery", type=Path, required=True, help="output folder of the panels (PNG)")
    p.add_argument("--out-html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=cmd_predictions)

    p = sub.add_parser("evaluation", help="evaluation tables page")
    p.add_argument("--title", required=True, help="page title")
    p.add_argument("--metrics", type=Path, nargs="*", default=[], help="metrics.md files")
    p.add_argument("--reason", default="", help="shown when there is no metrics file")
    p.add_argument("--out-html", type=Path, required=True, help="output HTML page")
    p.set_defaults(func=cmd_evaluation)


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run beside its main output (written by u2seg.cli after a successful run)."""
    return record_beside(next((getattr(args, k) for k in ("out_json", "out", "out_html") if getattr(args, k, None)),
                              None))


def run(args: argparse.Namespace) -> int:
    """Run the chosen report item."""
    return int(args.func(args) or 0)
