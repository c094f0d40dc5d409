"""``u2seg evaluate``: class-agnostic / cluster-matched AP, PQ and mIoU against COCO ground truth.

Evaluate a predictions folder (``instances_results.json``, ``panoptic.json`` + ``panoptic/``,
``semantic/``), or a MaskCut / pseudo-label json, on the manifest's images; writes metrics.json
(every number, its protocol and the mappings used) and a markdown table.

    u2seg evaluate --manifest results/coco-val/manifest.json \\
        --predictions results/coco-val/predict/coco-train-r1 --out-json m.json --out-md m.md
    u2seg evaluate --manifest ... --instances results/coco-val/maskcut/masks.json --class-agnostic-only ...

With ``--download-coco ROOT`` it instead makes sure a COCO root holds a split's images and
annotations (downloading what is missing) and writes a small ``--ready`` json.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from u2seg import atomic
from u2seg.cliargs import add_manifest_argument, add_num_stuff_argument
from u2seg.errors import UserError
from u2seg.evaluation import download, panoptic, protocols, tables
from u2seg.evaluation.gt import load_json
from u2seg.manifest import load_manifest
from u2seg.params import record_beside

log = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``u2seg evaluate``."""
    d = protocols.default_settings()
    io = parser.add_argument_group("inputs and outputs")
    add_manifest_argument(io, "dataset manifest (its images and GT are evaluated)", required=False)
    io.add_argument("--predictions", type=Path,
                    help="predictions folder: instances_results.json, panoptic.json + panoptic/, semantic/ "
                         "(whichever exist)")
    io.add_argument("--instances", type=Path, help="COCO results list or COCO instances json (MaskCut, pseudo)")
    io.add_argument("--panoptic-json", type=Path, help="predicted COCO panoptic json")
    io.add_argument("--panoptic-dir", type=Path, help="folder of the predicted panoptic PNGs")
    io.add_argument("--semantic-dir", type=Path, help="folder of semantic PNGs (0 = thing, 1..S stuff cluster)")
    io.add_argument("--class-agnostic-only", action="store_true", help="only class-agnostic AP (MaskCut)")
    io.add_argument("--dataset", default="", help="dataset name written into the metrics")
    io.add_argument("--model", default="", help="model name written into the metrics")
    io.add_argument("--out-json", type=Path, help="metrics.json to write")
    io.add_argument("--out-md", type=Path, help="markdown table to write")
    p = parser.add_argument_group("protocol parameters (config.yaml `evaluate`)")
    for rule in ("majority", "hungarian"):
        p.add_argument(f"--{rule}-min-score", type=float, default=d[rule]["min_score"],
                       help=f"{rule}: predictions below this score do not vote")
        p.add_argument(f"--{rule}-min-iou", type=_fraction, default=d[rule]["min_iou"],
                       help=f"{rule}: a vote needs IoU above this")
        p.add_argument(f"--{rule}-iou-type", choices=["bbox", "segm"], default=d[rule]["iou_type"],
                       help=f"{rule}: box or mask IoU for the votes")
        p.add_argument(f"--{rule}-crowd", choices=["include", "exclude"],
                       default="include" if d[rule]["include_crowd"] else "exclude",
                       help=f"{rule}: whether crowd GT receives votes")
    p.add_argument("--semantic-vote-iou", type=_fraction, default=d["semantic_vote_iou"],
                   help="u2seg16: per-image IoU a stuff label needs to vote for a class")
    p.add_argument("--max-dets", type=int, default=d["max_dets"], help="COCOeval detections per image")
    p.add_argument("--pq-crowd-rule", choices=sorted(panoptic.CROWD_RULES), default=d["pq_crowd_rule"],
                   help="PQ, several crowd segments of one category in an image: 'last' = panopticapi (only "
                        "the last one listed excuses a false positive), 'sum' = all of them"),
    add_num_stuff_argument(p, "stuff clusters in the semantic PNGs")
    p.add_argument("--workers", type=int, default=1, help="processes for PQ / semantic passes")
    p.add_argument("--protocol", action="append", default=[], metavar="NAME",
                   help="an extra protocol of the dataset (repeatable): " + ", ".join(protocols.EXTRA_PROTOCOLS))
    dl = parser.add_argument_group("COCO download mode")
    dl.add_argument("--download-coco", type=Path, metavar="ROOT",
                    help="make sure this COCO root holds --split (download what is missing), then exit")
    dl.add_argument("--split", choices=["train", "val"], default="val", help="COCO split to make sure of")
    dl.add_argument("--with-panoptic", action="store_true", help="also the panoptic GT of the split")
    dl.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    dl.add_argument("--base-url", default=download.BASE_URL, help="where the COCO archives are downloaded from")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    dl.add_argument("--ready", type=Path, help="json written when the root is complete")


def _settings(args: argparse.Namespace) -> dict:
    s = protocols.default_settings()
    for rule in ("majority", "hungarian"):
        s[rule] = {"min_score": getattr(args, f"{rule}_min_score"), "min_iou": getattr(args, f"{rule}_min_iou"),
                   "iou_type": getattr(args, f"{rule}_iou_type"),
                   "include_crowd": getattr(args, f"{rule}_crowd") == "include"}
    if args.max_dets < 1 or args.workers < 1 or args.num_stuff < 0:
        raise UserError("--max-dets and --workers must be >= 1, --num-stuff >= 0")
    s.update(semantic_vote_iou=args.semantic_vote_iou, max_dets=args.max_dets, workers=args.workers,
             pq_crowd_rule=args.pq_crowd_rule)
    return s


def _inputs(args: argparse.Namespace) -> dict:
    inst, pj, pd, sd = args.instances, args.panoptic_json, args.panoptic_dir, args.semantic_dir
    if args.predictions is not None:
        folder = args.predictions
        if not folder.is_dir():
            raise UserError(f"predictions folder not found: {folder}")
        inst = inst or (folder / "instances_results.json" if (folder / "instances_results.json").is_file() else None)
        if pj is None and (folder / "panoptic.json").is_file():
            pj, pd = folder / "panoptic.json", pd or folder / "panoptic"
        sd = sd or (folder / "semantic" if (folder / "semantic").is_dir() else None)
    if pj is not None and pd is None:
        pd = pj.with_suffix("")
    if pd is not None and not pd.is_dir():
        raise UserError(f"panoptic PNG folder not found: {pd}")
    if sd is not None and not sd.is_dir():
        raise UserError(f"semantic PNG folder not found: {sd}")
    if inst is None and pj is None and sd is None:
        raise UserError("nothing to evaluate: give --predictions, --instances, --panoptic-json or --semantic-dir")
    return {"instances": inst, "panoptic_json": pj, "panoptic_dir": pd, "semantic_dir": sd}


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    """Evaluate (or, with --download-coco, prepare a COCO root)."""
    if args.download_coco is not None:
        summary = download.ensure_coco(args.download_coco, args.split, panoptic=args.with_panoptic,
                                       allow_download=not args.no_download, base_url=args.base_url,
                                       timeout=args.timeout)
        log.info("COCO root %s ready for %s2017 (downloaded: %s)", summary["root"], args.split,
                 ", ".join(summary["downloaded"]) or "nothing")
        if args.ready is not None:
            atomic.write_json(args.ready, summary, indent=1)
        return 0
    if args.manifest is None or args.out_json is None:
        raise UserError("--manifest and --out-json are required")
    settings = _settings(args)
    inputs = _inputs(args)
    manifest = load_manifest(args.manifest)
    instances_data = load_json(inputs["instances"]) if inputs["instances"] is not None else None
    metrics = protocols.evaluate(
        manifest, args.dataset or str(manifest.get("dataset", {}).get("kind", "")), args.model,
        instances_data=instances_data, panoptic_json=inputs["panoptic_json"], panoptic_dir=inputs["panoptic_dir"],
        semantic_dir=inputs["semantic_dir"], class_agnostic_only=args.class_agnostic_only,
        num_stuff=args.num_stuff, settings=settings, extra_protocols=args.protocol)
    metrics["inputs"] = {k: (str(v) if v is not None else None) for k, v in inputs.items()}
    atomic.write_json(args.out_json, metrics, indent=1)
    md = tables.markdown(metrics)
    if args.out_md is not None:
        atomic.write_text(args.out_md, md)
    log.info("metrics written to %s\n%s", args.out_json, md)
    return 0
