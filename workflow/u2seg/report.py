"""``u2seg report <item>``: what the HTML report shows of every stage.

Snakemake's report (``snakemake --report results/report.html``) embeds files that rules mark with
``report()``; the rules of ``rules/report.smk`` call these sub-commands to turn the stages' outputs
into such files, under ``{results}/report/{ds}/<stage>/``:

* ``features``     manifest + skipped.json + feature shards -> ``{results}/{ds}/ingest_summary.json``
                   (images, skipped files with reasons, per-shard backbone attrs and timings) + a page
* ``stage``        a stage's ``summary.json`` (+ extra summaries) and gallery folder -> a summary page
                   (tables, bar charts of numeric lists, gallery thumbnails) + the gallery PNGs
* ``train``        a training round's summary.json, metrics.jsonl and loss.png -> page + loss curve
* ``predictions``  a model's predictions on a fixed seeded sample of images -> side-by-side PNGs
                   ``image | predicted instances | predicted panoptic | ground truth`` (where the
                   manifest has annotations) + a summary page
* ``evaluation``   ``metrics.md`` of the evaluated models -> one page of tables (or the reason there are
                   none, e.g. a dataset without ground truth)

Every page is a self-contained HTML file (inline CSS, images as data URIs) so the report can embed it.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from u2seg.atomic import atomic_path, write_json, write_text
from u2seg.errors import UserError
from u2seg.jsonio import load_json

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- HTML building blocks

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;padding:18px 24px;
     color:#1e293b;background:#fff;font-size:14px;line-height:1.45}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #e2e8f0}
h3{font-size:15px;margin:16px 0 4px}h4{font-size:14px;margin:12px 0 4px;color:#475569}
.sub{color:#64748b;margin:0 0 12px}
table{border-collapse:collapse;margin:4px 0 10px}
th,td{border:1px solid #cbd5e1;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv th{width:260px}.note{background:#fefce8;border-left:4px solid #eab308;padding:6px 10px;margin:8px 0}
.missing{background:#fef2f2;border-left:4px solid #dc2626;padding:6px 10px;margin:8px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #e2e8f0;padding:4px;background:#f8fafc}
figure img{display:block;max-width:100%;height:auto}figcaption{font-size:12px;color:#475569}
code{background:#f1f5f9;padding:0 3px;border-radius:3px}
svg text{font-size:10px;fill:#475569}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """Human-readable scalar."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value)}" if abs(value) >= 1 or value == 0 else f"{value:.4g}"
        return f"{value:.4g}"
    return str(value)


def page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>" + "".join(body) + "</body></html>")


def kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        cls = " class='num'" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        cells.append(f"<tr><th>{esc(key)}</th><td{cls}>{esc(fmt(value))}</td></tr>")
    return "<table class='kv'>" + "".join(cells) + "</table>" if cells else ""


def records_table(rows: Sequence[dict[str, Any]], limit: int = 50) -> str:
    keys: list[str] = []
    for row in rows[:limit]:
        for k in row:
            if k not in keys:
                keys.append(k)
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = []
    for row in rows[:limit]:
        tds = []
        for k in keys:
            v = row.get(k)
            if isinstance(v, (dict, list)):
                v = json.dumps(v)
            cls = " class='num'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            tds.append(f"<td{cls}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    more = f"<p class='sub'>… {len(rows) - limit} more rows in the json</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def bar_chart(values: Sequence[float], labels: Sequence[str] | None = None, width: int = 640,
              height: int = 120, title: str = "") -> str:
    """Inline SVG bar chart of a numeric list (cluster sizes, histograms, pixel fractions)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return ""
    top = max(max(vals), 1e-12)
    pad_l, pad_b = 40, 16
    bw = max((width - pad_l) / n, 0.5)
    bars = []
    for i, v in enumerate(vals):
        h = (height - pad_b - 6) * max(v, 0.0) / top
        x = pad_l + i * bw
        tip = f"{labels[i] if labels else i}: {fmt(v)}"
        bars.append(f"<rect x='{x:.2f}' y='{height - pad_b - h:.2f}' width='{max(bw - 1, 0.5):.2f}' "
                    f"height='{h:.2f}' fill='#0ea5e9'><title>{esc(tip)}</title></rect>")
    ticks = (f"<text x='{pad_l - 4}' y='12' text-anchor='end'>{esc(fmt(top))}</text>"
             f"<text x='{pad_l - 4}' y='{height - pad_b}' text-anchor='end'>0</text>")
    first = labels[0] if labels else "0"
    last = labels[-1] if labels else str(n - 1)
    ticks += (f"<text x='{pad_l}' y='{height - 3}'>{esc(first)}</text>"
              f"<text x='{width}' y='{height - 3}' text-anchor='end'>{esc(last)}</text>")
    cap = f"<figcaption>{esc(title)}</figcaption>" if title else ""
    return (f"<figure style='display:inline-block'><svg width='{width + 4}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'><line x1='{pad_l}' y1='{height - pad_b}' x2='{width}' "
            f"y2='{height - pad_b}' stroke='#94a3b8'/>{''.join(bars)}{ticks}</svg>{cap}</figure>")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _numeric_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def render_json(obj: dict[str, Any], level: int = 2, name: str = "") -> str:
    """Generic rendering of a summary dict: scalars -> key/value table, numeric lists -> bar charts,
    lists of dicts -> tables, dicts -> sub-sections (recursively)."""
    out: list[str] = []
    scalars: list[tuple[str, Any]] = []
    later: list[str] = []
    for key, value in obj.items():
        label = f"{name}.{key}" if name else key
        if _is_scalar(value):
            scalars.append((key, value))
        elif _numeric_list(value):
            if len(value) <= 12:
                scalars.append((key, ", ".join(fmt(v) for v in value)))
            else:
                s = sorted(value)
                scalars.append((key, f"{len(value)} values: min {fmt(s[0])}, median "
                                     f"{fmt(s[len(s) // 2])}, max {fmt(s[-1])}"))
            if len(value) > 1:
                later.append(bar_chart(value, title=label))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            later.append(f"<h{min(level + 1, 4)}>{esc(label)} ({len(value)})</h{min(level + 1, 4)}>"
                         + records_table(value))
        elif isinstance(value, list):
            shown = ", ".join(fmt(x) if _is_scalar(x) else json.dumps(x) for x in value[:30])
            scalars.append((key, shown + (f" … ({len(value)} in all)" if len(value) > 30 else "")
                            if value else "(none)"))
        elif isinstance(value, dict) and not value:
            scalars.append((key, "(none)"))
        elif isinstance(value, dict):
            if all(_is_scalar(v) for v in value.values()) and len(value) > 1 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()) \
                    and all(re.fullmatch(r"-?\d+", str(k)) for k in value):
                # histogram keyed by integers, e.g. {"0": 3, "1": 5}
                scalars.append((key, ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())))
                later.append(bar_chart(list(value.values()), [str(k) for k in value], title=label))
            else:
                later.append(f"<h{min(level + 1, 4)}>{esc(label)}</h{min(level + 1, 4)}>"
                             + render_json(value, level + 1, label))
        else:
            scalars.append((key, json.dumps(value)))
    out.append(kv_table(scalars))
    out.extend(later)
    return "".join(out)


def _jpeg_data_uri(png: Path, max_width: int = 560) -> str:
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(pngs: Sequence[Path], max_width: int = 560) -> str:
    figs = [f"<figure><img src='{_jpeg_data_uri(p, max_width)}' alt='{esc(p.stem)}'>"
            f"<figcaption>{esc(p.name)}</figcaption></figure>" for p in pngs]
    return "<div class='grid'>" + "".join(figs) + "</div>"


def copy_gallery(src: Path | None, dst: Path) -> list[Path]:
    """Copy the PNGs of a stage's gallery folder into ``dst`` (atomically); returns the copies."""
    pngs = sorted(src.glob("*.png")) if src is not None and src.is_dir() else []
    with atomic_path(dst, directory=True) as tmp:
        for p in pngs:
            shutil.copyfile(p, tmp / p.name)
    return [dst / p.name for p in pngs]


# ---------------------------------------------------------------------------- highlights per stage

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


# ---------------------------------------------------------------------------- sub-commands

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


def cmd_stage(args: argparse.Namespace) -> int:
    """A stage's summary page (+ copy of its gallery)."""
    summary = load_json(args.summary)
    if not isinstance(summary, dict):
        raise UserError(f"{args.summary}: expected a json object")
    extras = {}
    for spec in args.extra or []:
        name, _, path = spec.partition("=")
        extras[name] = load_json(path)
    pngs = copy_gallery(args.gallery, args.out_gallery) if args.out_gallery else []
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


def cmd_train(args: argparse.Namespace) -> int:
    """A training round's page + its loss curve."""
    summary = load_json(args.summary)
    rows = []
    if args.metrics and Path(args.metrics).is_file():
        for line in Path(args.metrics).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    if args.plot and args.out_plot:
        with atomic_path(args.out_plot) as tmp:
            shutil.copyfile(args.plot, tmp)
    body = ["<h2>At a glance</h2>", kv_table([
        ("iterations", summary.get("iterations")), ("loss (start)", summary.get("loss_start")),
        ("loss (end)", summary.get("loss_end")), ("seconds", summary.get("seconds")),
        ("seconds per iteration", summary.get("seconds_per_iter")), ("device", summary.get("device")),
        ("images", summary.get("num_images")), ("instances", summary.get("num_instances")),
        ("classes (K)", summary.get("num_classes")), ("backbone", summary.get("backbone")),
    ])]
    if args.plot:
        data = base64.b64encode(Path(args.plot).read_bytes()).decode("ascii")
        body += ["<h2>Loss curve</h2>", f"<img src='data:image/png;base64,{data}' alt='loss curve'>"]
    if rows:
        losses = [r.get("loss") for r in rows if isinstance(r.get("loss"), (int, float))]
        body += ["<h2>Total loss per iteration</h2>", bar_chart(losses, [str(r.get("iter")) for r in rows],
                                                                 title="loss")]
        step = max(1, len(rows) // 20)
        body += ["<h2>metrics.jsonl (every %d. iteration)</h2>" % step, records_table(rows[::step], limit=40)]
    body += ["<h2>summary.json</h2>", render_json(summary)]
    write_text(args.out_html, page(args.title, str(args.summary), body))
    return 0


def seeded_sample(image_ids: Iterable[int], size: int, seed: int = 0) -> list[int]:
    """``size`` image ids with the smallest seeded hash (same rule as the MaskCut gallery sample)."""
    ranked = sorted({int(i) for i in image_ids},
                    key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[:max(size, 0)])


def _categories_split(panoptic: dict[str, Any], k_default: int, s_default: int) -> tuple[int, int]:
    cats = panoptic.get("categories") or []
    things = [c for c in cats if c.get("isthing", 1)]
    stuff = [c for c in cats if not c.get("isthing", 1)]
    return (len(things) or k_default), (len(stuff) or s_default)


def prediction_tile(image: np.ndarray, dets: list[dict[str, Any]], pan_ids: np.ndarray | None,
                    segments: list[dict[str, Any]], num_things: int, num_stuff: int, score_thresh: float,
                    gt: list[dict[str, Any]] | None, gt_categories: dict[int, str], height: int = 320) -> np.ndarray:
    """``image | predicted instances | predicted panoptic | ground truth`` (GT panel only with GT)."""
    from u2seg.coco_format import decode_mask
    from u2seg.pseudo.gallery import blend, overlay_instances, palette, panel

    h, w = image.shape[:2]
    ranked = sorted(dets, key=lambda d: -float(d.get("score", 0)))
    kept = [d for d in ranked if float(d.get("score", 0)) >= score_thresh]
    if kept:
        title = f"{len(kept)} instances >= {score_thresh:g}"
    else:  # an undertrained model: show its best guesses, saying so
        kept = ranked[:3]
        title = f"top {len(kept)}, all < {score_thresh:g}"
    masks = [decode_mask(d["segmentation"], h, w) for d in kept]
    thing_colors = palette(max(num_things, 1))
    inst = overlay_instances(image, masks, [int(d["category_id"]) - 1 for d in kept], thing_colors)
    tiles = [image, inst]
    titles = ["image", title]
    if pan_ids is not None:
        stuff_colors = palette(max(num_stuff, 1), offset=0.31)
        colored = np.zeros(image.shape, dtype=np.uint8)
        painted = np.zeros((h, w), dtype=bool)
        for seg in segments:
            m = pan_ids == int(seg["id"])
            c = int(seg["category_id"])
            colored[m] = thing_colors[(c - 1) % len(thing_colors)] if c <= num_things else \
                stuff_colors[(c - num_things - 1) % len(stuff_colors)]
            painted |= m
        pan = blend(image, colored, painted, 0.7)
        pan[~painted] = 0
        tiles.append(pan)
        titles.append(f"panoptic ({len(segments)} segments)")
    if gt is not None:
        # colour and number = COCO category id (the cluster -> class mapping is the evaluation's job)
        colors = palette(max([*gt_categories, *(int(a["category_id"]) for a in gt), 1]), offset=0.13)
        gt_masks, gt_cls = [], []
        for a in gt:
            seg = a.get("segmentation")
            if not seg:
                continue
            gt_masks.append(decode_mask(seg, h, w))
            gt_cls.append(int(a["category_id"]) - 1)
        gt_img = overlay_instances(image, gt_masks, gt_cls, colors)
        tiles.append(gt_img)
        titles.append(f"ground truth ({len(gt_masks)})")
    return panel(tiles, titles, height)


def cmd_predictions(args: argparse.Namespace) -> int:
    """Side-by-side PNGs of predictions (and GT where the manifest has annotations) + a page."""
    from u2seg.atomic import save_png
    from u2seg.coco_format import rgb2id
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path, image_stem

    t0 = time.perf_counter()
    manifest = load_json(args.manifest)
    pred_dir = Path(args.predictions)
    results = load_json(pred_dir / "instances_results.json")
    pan_json_path = pred_dir / "panoptic.json"
    panoptic = load_json(pan_json_path) if pan_json_path.is_file() else {}
    summary = load_json(pred_dir / "summary.json") if (pred_dir / "summary.json").is_file() else {}
    num_things, num_stuff = _categories_split(panoptic, args.k, args.num_stuff)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for d in results:
        by_image.setdefault(int(d["image_id"]), []).append(d)
    pan_anns = {int(a["image_id"]): a for a in panoptic.get("annotations", [])}
    gt_by_image: dict[int, list[dict[str, Any]]] | None = None
    gt_categories: dict[int, str] = {}
    if manifest.get("annotations"):
        gt_data = load_json(manifest["annotations"])
        gt_categories = {int(c["id"]): c.get("name", str(c["id"])) for c in gt_data.get("categories", [])}
        gt_by_image = {}
        for a in gt_data.get("annotations", []):
            gt_by_image.setdefault(int(a["image_id"]), []).append(a)
    images = {int(im["id"]): im for im in manifest["images"]}
    sample = seeded_sample(images, args.gallery_size, args.seed)
    rows = []
    with atomic_path(args.out_gallery, directory=True) as tmp:
        for image_id in sample:
            im = images[image_id]
            rgb = load_rgb(image_path(manifest, im))
            stem = image_stem(im)
            ann = pan_anns.get(image_id)
            pan_ids = None
            segments: list[dict[str, Any]] = []
            if ann is not None and (pred_dir / "panoptic" / ann["file_name"]).is_file():
                from PIL import Image

                with Image.open(pred_dir / "panoptic" / ann["file_name"]) as pim:
                    pan_ids = rgb2id(np.asarray(pim.convert("RGB")))
                segments = ann.get("segments_info", [])
            gt = gt_by_image.get(image_id, []) if gt_by_image is not None else None
            dets = by_image.get(image_id, [])
            tile = prediction_tile(rgb, dets, pan_ids, segments, num_things, num_stuff, args.score_thresh,
                                   gt, gt_categories)
            save_png(tmp / f"{stem}.png", tile)
            rows.append({"image": im["file_name"], "id": image_id, "detections": len(dets),
                         f"score >= {args.score_thresh:g}": sum(float(d.get("score", 0)) >= args.score_thresh
                                                                for d in dets),
                         "panoptic segments": len(segments),
                         "ground-truth instances": len(gt) if gt is not None else None})
    pngs = sorted(Path(args.out_gallery).glob("*.png"))
    scores = [float(d.get("score", 0)) for d in results]
    body = ["<h2>At a glance</h2>", kv_table([
        ("images predicted", len(manifest["images"])), ("detections", len(results)),
        ("detections per image (mean)", len(results) / max(len(manifest["images"]), 1)),
        (f"detections with score >= {args.score_thresh:g}", sum(s >= args.score_thresh for s in scores)),
        ("ground truth", manifest.get("annotations") or "none (the panels show predictions only)"),
    ])]
    if scores:
        hist, edges = np.histogram(scores, bins=10, range=(0.0, 1.0))
        body.append(bar_chart(hist.tolist(), [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])],
                              title="detections per score bin"))
    body += [f"<h2>Sample ({len(pngs)} images, seeded; full size under “gallery”)</h2>",
             "<p class='sub'>image | predicted instances (colour = cluster, as in the pseudo-label gallery) | "
             "predicted panoptic | ground truth (COCO categories), where it exists</p>",
             records_table(rows), thumbnails(pngs, 720)]
    if summary:
        body += ["<h2>predict summary.json</h2>", render_json(summary)]
    write_text(args.out_html, page(args.title, str(pred_dir), body))
    log.info("prediction gallery: %d images in %.1f s -> %s", len(pngs), time.perf_counter() - t0, args.out_gallery)
    return 0


def markdown_to_html(md: str) -> str:
    """The small markdown subset of ``metrics.md``: headings, pipe tables, bullets, quotes, paragraphs."""
    def inline(text: str) -> str:
        text = esc(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)

    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            level = min(len(m.group(1)) + 1, 4)
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            rows = [r for r in block if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]
            if rows:
                head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(
                    f"<td{' class=num' if re.fullmatch(r'-?[0-9.]+|–|-', c) else ''}>{inline(c)}</td>"
                    for c in r) + "</tr>" for r in rows[1:])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + inline(re.sub(r"^\s*[-*]\s+", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith(">"):
            out.append(f"<p class='note'>{inline(line.lstrip('> '))}</p>")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||>|\s*[-*]\s)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "".join(out)


def cmd_evaluation(args: argparse.Namespace) -> int:
    """One page with every evaluated model's tables, or the reason there is none."""
    body: list[str] = []
    if not args.metrics:
        reason = args.reason or "no evaluation was run"
        body.append(f"<p class='note'>No evaluation table: {esc(reason)}</p>")
    for md_path in args.metrics or []:
        md_path = Path(md_path)
        body.append(f"<section><p class='sub'>{esc(md_path)}</p>{markdown_to_html(md_path.read_text())}</section>")
    write_text(args.out_html, page(args.title, f"{len(args.metrics or [])} evaluated model(s)", body))
    return 0


# ---------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="item", metavar="<item>", required=True)

    p = sub.add_parser("features", help="ingest + feature summary json and page")
    p.add_argument("--dataset", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--skipped", type=Path, default=None)
    p.add_argument("--features", type=Path, nargs="*", default=[], help="feature shard stores (zarr)")
    p.add_argument("--out-json", type=Path, required=True)
    p.add_argument("--out-html", type=Path, required=True)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("stage", help="a stage's summary page and gallery copy")
    p.add_argument("--stage", required=True, help="maskcut, pseudo, ... (picks the 'at a glance' numbers)")
    p.add_argument("--title", required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=JSON", help="more json files to show")
    p.add_argument("--gallery", type=Path, default=None, help="the stage's folder of overlay PNGs")
    p.add_argument("--out-gallery", type=Path, default=None, help="where to copy the gallery PNGs")
    p.add_argument("--out-html", type=Path, required=True)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("train", help="a training round's page and loss curve")
    p.add_argument("--title", required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--metrics", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--out-plot", type=Path, default=None)
    p.add_argument("--out-html", type=Path, required=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predictions", help="prediction | ground truth panels of a seeded image sample")
    p.add_argument("--title", required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--predictions", type=Path, required=True, help="predict/{model} folder")
    p.add_argument("--gallery-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-thresh", type=float, default=0.5, help="instances drawn from this score")
    p.add_argument("--k", type=int, default=1, help="thing classes when panoptic.json has no categories")
    p.add_argument("--num-stuff", type=int, default=0)
    p.add_argument("--out-gallery", type=Path, required=True)
    p.add_argument("--out-html", type=Path, required=True)
    p.set_defaults(func=cmd_predictions)

    p = sub.add_parser("evaluation", help="evaluation tables page")
    p.add_argument("--title", required=True)
    p.add_argument("--metrics", type=Path, nargs="*", default=[], help="metrics.md files")
    p.add_argument("--reason", default="", help="shown when there is no metrics file")
    p.add_argument("--out-html", type=Path, required=True)
    p.set_defaults(func=cmd_evaluation)


def run(args: argparse.Namespace) -> int:
    return int(args.func(args) or 0)
