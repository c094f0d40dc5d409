"""``u2seg report stage``: a stage's summary.json (+ extra summaries) and gallery -> a summary page."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from u2seg.atomic import write_text
from u2seg.errors import UserError
from u2seg.jsonio import load_json
from u2seg.report.images import cluster_legend, copy_gallery, thumbnails
from u2seg.report.pages import esc, fmt, kv_table, page, render_json

log = logging.getLogger(__name__)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def highlights(stage: str, summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """The few numbers a reader looks for first (missing keys are left out)."""
    picks = {
        "maskcut": [("images", ("n_images",)), ("masks", ("n_masks",)),
                    ("masks per image (mean)", ("masks_per_image_mean",)),
                    ("images without a mask", ("images_without_masks",)),
                    ("mean mask area (fraction of image)", ("mask_area_fraction_mean",)),
                    ("seconds per image", ("seconds_per_image",)), ("seconds in all", ("seconds_total",))],
        "pseudo": [("images", ("images",)), ("instances", ("instances",)),
                   ("instances per image (mean)", ("instances_per_image", "mean")),
                   ("images without instances", ("images_without_instances",)),
                   ("instance clusters K", ("k",)), ("stuff clusters", ("num_stuff",)),
                   ("empty instance clusters", ("clustering", "empty_clusters")),
                   ("cluster size min / median / max", None),
                   ("stuff segments", ("stuff_segments",)),
                   ("thing / stuff / void pixels", None)],
    }.get(stage, [])
    rows: list[tuple[str, Any]] = []
    for label, keys in picks:
        if keys is None:
            if label.startswith("cluster size"):
                st = _get(summary, "clustering", "cluster_size_stats")
                if isinstance(st, dict):
                    rows.append((label, f"{fmt(st.get('min'))} / {fmt(st.get('median'))} / {fmt(st.get('max'))}"))
            elif label.startswith("thing / stuff"):
                pf = summary.get("pixel_fraction")
                if isinstance(pf, dict):
                    rows.append((label, " / ".join(fmt(pf.get(k)) for k in ("thing", "stuff", "void"))))
            continue
        value = _get(summary, *keys)
        if value is not None:
            rows.append((label, value))
    return rows


def panoptic_legends(panoptic: dict[str, Any]) -> dict[str, list]:
    """Gallery PNG stem -> cluster legend, from a COCO panoptic json with thing / stuff categories."""
    cats = panoptic.get("categories") or []
    num_things = sum(1 for c in cats if c.get("isthing", 1))
    num_stuff = len(cats) - num_things
    return {str(a["file_name"]).rsplit(".", 1)[0]: cluster_legend(a.get("segments_info", []), num_things, num_stuff)
            for a in panoptic.get("annotations", [])}


def cmd_stage(args: argparse.Namespace) -> int:
    """A stage's summary page (+ copy of its gallery)."""
    summary = load_json(args.summary)
    if not isinstance(summary, dict):
        raise UserError(f"{args.summary}: expected a json object")
    extras = {}
    for spec in args.extra or []:
        name, _, path = spec.partition("=")
        extras[name] = load_json(path)
    legends = panoptic_legends(load_json(args.panoptic_json)) if args.panoptic_json else None
    pngs = copy_gallery(args.gallery, args.out_gallery, legends) if args.out_gallery else []
    body: list[str] = []
    rows = highlights(args.stage, summary)
    if rows:
        body += ["<h2>At a glance</h2>", kv_table(rows)]
    if args.out_gallery is not None:
        if pngs:
            body += [f"<h2>Gallery ({len(pngs)} images; full size under “gallery”)</h2>", thumbnails(pngs)]
        else:
            body.append(f"<p class='missing'>The stage wrote no gallery PNGs into {esc(args.gallery)}.</p>")
    body += ["<h2>summary.json</h2>", render_json(summary)]
    for name, obj in extras.items():
        body += [f"<h2>{esc(name)}</h2>", render_json(obj) if isinstance(obj, dict) else f"<pre>{esc(obj)}</pre>"]
    write_text(args.out_html, page(args.title, str(args.summary), body))
    log.info("%s: summary page with %d gallery images -> %s", args.stage, len(pngs), args.out_html)
    return 0
