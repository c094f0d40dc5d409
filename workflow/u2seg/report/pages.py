"""HTML building blocks of the report pages: CSS, tables, SVG bar charts, generic json rendering."""
from __future__ import annotations

import html
import json
import math
import re
from typing import Any, Iterable, Sequence

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
