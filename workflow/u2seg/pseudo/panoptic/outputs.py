"""The dataset-level outputs of the panoptic pseudo-labels (``u2seg merge-panoptic`` and ``u2seg
concat-panoptic`` write the same ones): their record and their command-line flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PanopticOutputs:
    """Where the dataset's panoptic pseudo-labels go, and the summaries attached to theirs."""

    json: Path  # COCO panoptic json
    panoptic: Path  # folder of panoptic PNGs
    semantic: Path  # folder of semantic PNGs
    gallery: Path  # folder of overlay PNGs
    summary: Path  # pseudo-label summary json
    cluster_summary: Path | None = None  # `u2seg cluster-instances` summary, copied into the summary
    stuff_summary: Path | None = None  # `u2seg cluster-stuff` summary, copied into the summary


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset-level outputs and the summaries attached."""
    parser.add_argument("--cluster-summary", type=Path, default=None,
                        help="summary json of `u2seg cluster-instances` (copied into the summary)")
    parser.add_argument("--stuff-summary", type=Path, default=None,
                        help="summary json of `u2seg cluster-stuff` (copied into the summary)")
    parser.add_argument("--out-json", type=Path, required=True, help="COCO panoptic json")
    parser.add_argument("--out-panoptic", type=Path, required=True, help="folder of panoptic PNGs")
    parser.add_argument("--out-semantic", type=Path, required=True, help="folder of semantic PNGs")
    parser.add_argument("--gallery", type=Path, required=True, help="folder of overlay PNGs")
    parser.add_argument("--summary", type=Path, required=True, help="output summary json")


def outputs_of(args: argparse.Namespace) -> PanopticOutputs:
    """The :class:`PanopticOutputs` of the :func:`add_output_arguments` flags."""
    return PanopticOutputs(args.out_json, args.out_panoptic, args.out_semantic, args.gallery, args.summary,
                           args.cluster_summary, args.stuff_summary)
