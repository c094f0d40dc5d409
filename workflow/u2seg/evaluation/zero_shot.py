"""``u2seg zero-shot-table``: one table across evaluation sets (CutLER's zero-shot table, plus U2Seg's).

Each row is one evaluation set's ``metrics.json`` (``u2seg evaluate``) of the same model:
class-agnostic AP / AP50 / AR100, box and mask (CutLER), then where the set has classes the
cluster-matched mask AP (``majority``, ``hungarian``), PQ (``panoptic/u2seg``, ``panoptic/hungarian``),
semantic mIoU (``stego27``) and the PQ of every extra protocol the set opts into (e.g. Cityscapes).
A protocol that does not apply to a set shows ``-``.

    u2seg zero-shot-table --model samples-r1 --metrics results/eval/coco-val/samples-r1/metrics.json \\
        results/eval/voc/samples-r1/metrics.json --out-json table.json --out-md table.md
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from u2seg import atomic
from u2seg.errors import UserError
from u2seg.jsonio import load_json
from u2seg.params import record_beside

log = logging.getLogger(__name__)

# (column, path into metrics.json); x100 numbers as `u2seg evaluate` writes them
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("box AP", ("instance", "class_agnostic", "bbox", "AP")),
    ("box AP50", ("instance", "class_agnostic", "bbox", "AP50")),
    ("box AR100", ("instance", "class_agnostic", "bbox", "AR100")),
    ("mask AP", ("instance", "class_agnostic", "segm", "AP")),
    ("mask AP50", ("instance", "class_agnostic", "segm", "AP50")),
    ("mask AR100", ("instance", "class_agnostic", "segm", "AR100")),
    ("majority mask AP", ("instance", "majority", "segm", "AP")),
    ("hungarian mask AP", ("instance", "hungarian", "segm", "AP")),
    ("PQ u2seg", ("panoptic", "u2seg", "all", "pq")),
    ("PQ hungarian", ("panoptic", "hungarian", "all", "pq")),
    ("mIoU stego27", ("semantic", "stego27", "miou")),
)


def _get(metrics: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = metrics
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return None if node is None else float(node)


def row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One table row of a metrics.json dict."""
    out: dict[str, Any] = {"dataset": metrics["dataset"], "images": metrics["images"]}
    out.update({name: _get(metrics, path) for name, path in COLUMNS})
    for name, res in (metrics.get("protocols") or {}).items():
        out[f"PQ {name}"] = _get(res, ("panoptic", "all", "pq"))
    return out


def table(model: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The zero-shot table of ``model`` over the given metrics dicts (one row each)."""
    if not metrics:
        raise UserError("no evaluation sets: name them in `zero_shot.eval` or under `datasets`")
    others = sorted({m["model"] for m in metrics} - {model})
    if others:
        raise UserError(f"metrics of other models ({', '.join(others)}) given for the table of {model}")
    rows = [row(m) for m in metrics]
    columns = ["dataset", "images"] + [c for c, _ in COLUMNS]
    columns += sorted({k for r in rows for k in r} - set(columns))
    return {"model": model, "columns": columns, "rows": rows,
            "notes": {m["dataset"]: m.get("notes", []) for m in metrics if m.get("notes")}}


def markdown(result: dict[str, Any]) -> str:
    """The table as markdown (x100; ``-`` where a protocol does not apply to a set)."""
    cols = result["columns"]
    lines = [f"# Zero-shot evaluation of `{result['model']}`", "",
             "Class-agnostic AP / AP50 / AR100 (CutLER), cluster-matched AP, PQ and mIoU (U2Seg), x100; "
             "mappings fitted on each evaluated set.", "",
             "| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in result["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("-" if v is None else (str(v) if c in ("dataset", "images") else f"{v:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for ds, notes in result["notes"].items():
        lines += [f"> `{ds}`: {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``u2seg zero-shot-table``."""
    parser.add_argument("--model", required=True, help="the model every metrics.json evaluates")
    parser.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics.json, one per set")
    parser.add_argument("--out-json", type=Path, required=True, help="output table (json, one row per set)")
    parser.add_argument("--out-md", type=Path, required=True, help="output table (markdown)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    """Write the table (json + markdown)."""
    result = table(args.model, [load_json(p) for p in args.metrics])
    atomic.write_json(args.out_json, result, indent=1)
    md = markdown(result)
    atomic.write_text(args.out_md, md)
    log.info("zero-shot table -> %s\n%s", args.out_md, md)
    return 0
