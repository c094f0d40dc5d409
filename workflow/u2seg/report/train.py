"""``u2seg report train``: a training round's summary.json, metrics.jsonl and loss.png -> page + loss curve."""
from __future__ import annotations

import argparse
import base64
import json
import shutil
from pathlib import Path

from u2seg.atomic import atomic_path, write_text
from u2seg.jsonio import load_json
from u2seg.report.pages import bar_chart, kv_table, page, records_table, render_json


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
        # `train` writes iterations / seconds_per_iter, `self-train-ema` (CUPS) steps / seconds_per_step
        ("iterations", summary.get("iterations", summary.get("steps"))), ("loss (start)", summary.get("loss_start")),
        ("loss (end)", summary.get("loss_end")), ("seconds", summary.get("seconds")),
        ("seconds per iteration", summary.get("seconds_per_iter", summary.get("seconds_per_step"))),
        ("teacher seconds per step", summary.get("teacher_seconds_per_step")), ("device", summary.get("device")),
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
