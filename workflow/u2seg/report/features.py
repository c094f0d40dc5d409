"""``u2seg report features``: manifest + skipped.json + feature shards -> ingest_summary.json and a page."""
from __future__ import annotations

import argparse
import logging
import re

from u2seg.atomic import write_json, write_text
from u2seg.jsonio import load_json
from u2seg.report.pages import bar_chart, kv_table, page, records_table, render_json

log = logging.getLogger(__name__)


def cmd_features(args: argparse.Namespace) -> int:
    """Ingest + feature summary json and page."""
    import zarr

    manifest = load_json(args.manifest)
    skipped = load_json(args.skipped) if args.skipped else {}
    shards = []
    for path in args.features:
        g = zarr.open_group(str(path), mode="r")
        attrs = dict(g.attrs)
        n = int(attrs.get("n_images", g["image_id"].shape[0]))
        seconds = attrs.get("seconds")
        shards.append({
            "shard": attrs.get("shard_index", len(shards)), "images": n, "seconds": seconds,
            "seconds_per_image": round(seconds / n, 4) if seconds is not None and n else None,
            "backbone": attrs.get("backbone"), "input_size": attrs.get("input_size"),
            "stride": attrs.get("stride"), "feature_dim": attrs.get("feature_dim"),
            "global_dim": attrs.get("global_dim"), "dense_shape": list(g["dense"].shape),
            "path": str(path),
        })
    skipped_list = skipped.get("skipped", []) if isinstance(skipped, dict) else []
    n_images = len(manifest["images"])
    reasons: dict[str, int] = {}
    for s in skipped_list:
        reason = str(s.get("reason", "?")) if isinstance(s, dict) else "?"
        reason = re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason
        reasons[reason] = reasons.get(reason, 0) + 1
    total_seconds = sum(s["seconds"] or 0.0 for s in shards)
    sizes = [(im["width"], im["height"]) for im in manifest["images"]]
    summary = {
        "dataset": manifest.get("dataset"),
        "images": n_images,
        "skipped": len(skipped_list),
        "skipped_fraction": round(len(skipped_list) / max(n_images + len(skipped_list), 1), 4),
        "skipped_reasons": reasons,
        "skipped_files": skipped_list[:200],
        "ground_truth": manifest.get("annotations"),
        "image_size": {
            "width_min": min((w for w, _ in sizes), default=None),
            "width_max": max((w for w, _ in sizes), default=None),
            "height_min": min((h for _, h in sizes), default=None),
            "height_max": max((h for _, h in sizes), default=None),
        },
        "features": {
            "shards": len(shards),
            "backbone": shards[0]["backbone"] if shards else None,
            "input_size": shards[0]["input_size"] if shards else None,
            "stride": shards[0]["stride"] if shards else None,
            "feature_dim": shards[0]["feature_dim"] if shards else None,
            "global_dim": shards[0]["global_dim"] if shards else None,
            "seconds_total": round(total_seconds, 3),
            "seconds_per_image": round(total_seconds / n_images, 4) if n_images else None,
        },
        "shards": shards,
    }
    write_json(args.out_json, summary, indent=1)
    body = ["<h2>At a glance</h2>", kv_table([
        ("images", n_images), ("skipped (unreadable) files", len(skipped_list)),
        ("ground truth", manifest.get("annotations") or "none"),
        ("backbone", summary["features"]["backbone"]), ("input size", summary["features"]["input_size"]),
        ("feature shards", len(shards)), ("feature seconds per image", summary["features"]["seconds_per_image"]),
    ])]
    if skipped_list:
        body += ["<h2>Skipped files</h2>", records_table(skipped_list)]
    body += ["<h2>Feature shards</h2>",
             records_table([{k: v for k, v in s.items() if k != "path"} for s in shards])]
    if len(shards) > 1:
        body.append(bar_chart([s["seconds"] or 0 for s in shards], [str(s["shard"]) for s in shards],
                              title="seconds per shard"))
    body += ["<h2>All fields</h2>", render_json({k: v for k, v in summary.items() if k != "shards"})]
    write_text(args.out_html, page(f"Ingest and features: {args.dataset}",
                                   f"{args.manifest} · {args.skipped or ''}", body))
    log.info("%d images, %d skipped, %d shards -> %s", n_images, len(skipped_list), len(shards), args.out_json)
    return 0
