"""``u2seg finetune <action>``: the few-shot path (docs/method.md §7.4).

  split     labelled subset of a COCO instances json (seeded), category ids made contiguous 1..C
  rehead    a trained U2Seg model re-headed for the C real classes (the fine-tuning init)
  evaluate  standard COCO AP (box and mask) of fine-tuned predictions, ids mapped back to COCO's
  compare   one table of the pre-trained (U2Seg init) and baseline (backbone init) rows

Training and prediction use ``u2seg train`` / ``u2seg predict`` (rules/finetune.smk wires them).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from u2seg import atomic
from u2seg.cliargs import add_manifest_argument
from u2seg.errors import UserError
from u2seg.finetune.split import coverage, labelled_subset
from u2seg.manifest import load_manifest
from u2seg.params import record_beside

log = logging.getLogger(__name__)


def restrict_to_manifest(coco: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a COCO json whose images are in the manifest (a `limit` may have cut the split)."""
    ids = {int(im["id"]) for im in manifest["images"]}
    return {**coco, "images": [im for im in coco["images"] if int(im["id"]) in ids],
            "annotations": [a for a in coco["annotations"] if int(a["image_id"]) in ids]}


def contiguous(coco: dict[str, Any]) -> tuple[dict[str, Any], dict[int, int]]:
    """Relabel categories to 1..C (sorted by COCO id). Returns (json, {contiguous: coco id})."""
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    to_new = {c["id"]: i + 1 for i, c in enumerate(cats)}
    out = {**coco,
           "categories": [{**c, "id": to_new[c["id"]], "coco_id": c["id"]} for c in cats],
           "annotations": [{**a, "category_id": to_new[a["category_id"]]} for a in coco["annotations"]]}
    return out, {new: old for old, new in to_new.items()}


def _split(args: argparse.Namespace) -> None:
    manifest = load_manifest(args.manifest)
    source = args.labelled_json or manifest.get("annotations")
    if not source:
        raise UserError(f"{args.manifest} has no annotations: fine-tuning needs a COCO dataset with labels")
    with open(args.annotations if args.annotations else source) as fh:
        full = restrict_to_manifest(json.load(fh), manifest)
    if args.labelled_json:
        subset = full  # an explicit labelled json: use it as it is (restricted to the manifest)
        subset["info"] = {**subset.get("info", {}), "u2seg_split": {"explicit": str(args.labelled_json)}}
        with open(manifest["annotations"]) as fh:
            reference = restrict_to_manifest(json.load(fh), manifest)
    else:
        subset = labelled_subset(full, args.fraction, args.seed)
        reference = full
    cov = coverage(subset, reference)
    labelled, mapping = contiguous(subset)
    labelled["info"]["contiguous_to_coco"] = {str(k): v for k, v in mapping.items()}
    atomic.write_json(args.out, labelled)
    atomic.write_json(args.coverage, cov, indent=1)
    log.info("labelled subset: %d images, %d instances, %d of %d categories covered (missing: %s)",
             cov["images"], cov["instances"], cov["categories_covered"], cov["categories_total"],
             ", ".join(cov["missing_categories"][:10]) or "none")


def _rehead(args: argparse.Namespace) -> None:
    from u2seg.finetune.rehead import rehead

    with open(args.labelled) as fh:
        categories = json.load(fh)["categories"]
    rehead(args.model, len(categories), categories, args.out, num_stuff=0, seed=args.seed)


def _evaluate(args: argparse.Namespace) -> None:
    from u2seg.evaluation.instance import coco_eval

    manifest = load_manifest(args.manifest)
    if not manifest.get("annotations"):
        raise UserError(f"{args.manifest} has no ground truth to evaluate against")
    with open(manifest["annotations"]) as fh:
        gt = restrict_to_manifest(json.load(fh), manifest)
    with open(args.labelled) as fh:
        mapping = {int(k): int(v) for k, v in json.load(fh)["info"]["contiguous_to_coco"].items()}
    with open(args.predictions) as fh:
        dets = json.load(fh)
    dets = [{**d, "category_id": mapping[int(d["category_id"])]} for d in dets]
    metrics = {
        "protocol": "standard COCO AP (pycocotools COCOeval, real classes, no cluster matching)",
        "init": args.init_name,
        "images": len(gt["images"]),
        "detections": len(dets),
        "bbox": coco_eval(gt, dets, "bbox"),
        "segm": coco_eval(gt, dets, "segm"),
    }
    atomic.write_json(args.out, metrics, indent=1)
    log.info("%s: box AP %.2f, mask AP %.2f", args.init_name, metrics["bbox"]["AP"], metrics["segm"]["AP"])


def comparison_table(rows: list[dict[str, Any]], coverage_info: dict[str, Any]) -> str:
    """Markdown table of the fine-tuning rows (pure)."""
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [
        f"Few-shot fine-tuning: {coverage_info['images']} labelled images, {coverage_info['instances']} "
        f"instances, {coverage_info['categories_covered']}/{coverage_info['categories_total']} classes covered.",
        "",
        "| init | box AP | box AP50 | mask AP | mask AP50 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['init']} | {fmt(row['bbox']['AP'])} | {fmt(row['bbox']['AP50'])} | "
                     f"{fmt(row['segm']['AP'])} | {fmt(row['segm']['AP50'])} |")
    return "\n".join(lines) + "\n"


def _compare(args: argparse.Namespace) -> None:
    rows = [json.loads(Path(p).read_text()) for p in args.metrics]
    cov = json.loads(Path(args.coverage).read_text())
    atomic.write_text(args.out_md, comparison_table(rows, cov))
    atomic.write_json(args.out_json, {"coverage": cov, "rows": rows}, indent=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("split", help="seeded labelled subset (contiguous category ids)")
    add_manifest_argument(p, "manifest of the labelled split (COCO train)")
    p.add_argument("--annotations", type=Path, default=None,
                   help="COCO instances json to draw from (default: the manifest's)")
    p.add_argument("--labelled-json", type=Path, default=None,
                   help="an explicit labelled json instead of a seeded fraction")
    p.add_argument("--fraction", type=float, default=0.01,
                   help="fraction of the labelled images drawn (ignored with --labelled-json)")
    p.add_argument("--seed", type=int, default=42, help="seed of the labelled-subset draw")
    p.add_argument("--out", required=True, type=Path, help="output labelled json")
    p.add_argument("--coverage", required=True, type=Path,
                   help="output coverage json (instances per category, missing categories)")
    p = sub.add_parser("rehead", help="re-head a U2Seg model for the labelled classes")
    p.add_argument("--model", required=True, type=Path, help="U2Seg model checkpoint (.pth) to re-head")
    p.add_argument("--labelled", required=True, type=Path, help="labelled COCO instances json (from `finetune split`)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new head's initialisation")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint")
    p = sub.add_parser("evaluate", help="standard COCO AP of fine-tuned predictions")
    p.add_argument("--predictions", required=True, type=Path, help="COCO results json of the fine-tuned model")
    p.add_argument("--labelled", required=True, type=Path, help="labelled COCO instances json (from `finetune split`)")
    add_manifest_argument(p, "manifest of the evaluation split")
    p.add_argument("--init-name", required=True, help="name of the initialisation (row of the comparison table)")
    p.add_argument("--out", required=True, type=Path, help="output metrics json")
    p = sub.add_parser("compare", help="table of the fine-tuning rows")
    p.add_argument("--metrics", nargs="+", required=True, type=Path,
                   help="metrics jsons of `finetune evaluate`, one per initialisation")
    p.add_argument("--coverage", required=True, type=Path, help="coverage json of `finetune split`")
    p.add_argument("--out-md", required=True, type=Path, help="output markdown table")
    p.add_argument("--out-json", required=True, type=Path, help="output json")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run beside its main output (written by u2seg.cli after a successful run)."""
    return record_beside(next((getattr(args, k) for k in ("out_json", "out", "out_html") if getattr(args, k, None)),
                              None))


def run(args: argparse.Namespace) -> int:
    {"split": _split, "rehead": _rehead, "evaluate": _evaluate, "compare": _compare}[args.action](args)
    return 0
