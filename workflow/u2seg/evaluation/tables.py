"""Markdown summary of a metrics.json dict."""
from __future__ import annotations

from typing import Any


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(metrics: dict[str, Any]) -> str:
    """Tables of every number in ``metrics`` (per-category values stay in the json)."""
    gt = metrics["ground_truth"]
    lines = [f"# Evaluation: `{metrics['model']}` on `{metrics['dataset']}`", "",
             f"{metrics['images']} images; ground truth: COCO instances"
             + (f", {gt['panoptic']['kind']}." if metrics.get("panoptic") or metrics.get("semantic") else "."), ""]
    inst = metrics.get("instance")
    if inst:
        lines += ["## Instance segmentation (COCOeval, x100)", "",
                  "| protocol | type | AP | AP50 | AP75 | APs | APm | APl | AR1 | AR10 | AR100 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, res in inst.items():
            if not isinstance(res, dict) or "bbox" not in res:
                continue
            for t in ("bbox", "segm"):
                if t in res:
                    s = res[t]
                    lines.append(f"| {name} | {'box' if t == 'bbox' else 'mask'} | " + " | ".join(
                        _f(s[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")) + " |")
        lines.append("")
        for name, res in inst.items():
            if isinstance(res, dict) and "mapping" in res:
                lines.append(f"- `{name}`: {res['protocol']} — {len(res['mapping'])} clusters mapped, "
                             f"{len(res.get('unmapped', []))} unmapped; predictions {res.get('predictions')}")
        lines += [f"- `class_agnostic`: {inst['class_agnostic']['protocol']}", ""]
    pan = metrics.get("panoptic")
    if pan:
        lines += ["## Panoptic quality (x100)", "",
                  "| protocol | PQ | SQ | RQ | PQ_th | SQ_th | RQ_th | PQ_st | SQ_st | RQ_st | #cat th/st |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, res in pan.items():
            if not isinstance(res, dict) or "all" not in res:
                continue
            a, t, s = res["all"], res["things"], res["stuff"]
            lines.append(f"| {name} | {_f(a['pq'])} | {_f(a['sq'])} | {_f(a['rq'])} | {_f(t['pq'])} | {_f(t['sq'])} | "
                         f"{_f(t['rq'])} | {_f(s['pq'])} | {_f(s['sq'])} | {_f(s['rq'])} | {t['n']}/{s['n']} |")
        lines.append("")
        for name, res in pan.items():
            if isinstance(res, dict) and "protocol" in res:
                lines.append(f"- `{name}`: {res['protocol']}")
        if pan.get("crowd_rule"):
            lines.append(f"- several crowd segments of one category in an image: {pan['crowd_rule']}")
        lines.append("")
    sem = metrics.get("semantic")
    if sem:
        lines += ["## Semantic segmentation (x100)", "", "| protocol | PixelAcc | mIoU | pixels |",
                  "| --- | --- | --- | --- |"]
        for name, res in sem.items():
            if isinstance(res, dict) and "pixel_acc" in res:
                lines.append(f"| {name} | {_f(res['pixel_acc'])} | {_f(res['miou'])} | {res['pixels']} |")
        lines.append("")
        for name, res in sem.items():
            if isinstance(res, dict) and "protocol" in res:
                skipped = f" (skipped: {res['skipped']})" if "skipped" in res else ""
                lines.append(f"- `{name}`: {res['protocol']}{skipped}")
        lines.append("")
    extra = metrics.get("protocols")
    if extra:  # the dataset's own protocols (e.g. Cityscapes)
        lines += ["## Dataset protocols (x100)", "", "| protocol | PQ | PQ_th | PQ_st | PixelAcc | mIoU |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, res in extra.items():
            pan, sem = res.get("panoptic", {}), res.get("semantic", {})
            lines.append(f"| {name} | {_f(pan.get('all', {}).get('pq'))} | {_f(pan.get('things', {}).get('pq'))} | "
                         f"{_f(pan.get('stuff', {}).get('pq'))} | {_f(sem.get('pixel_acc'))} | {_f(sem.get('miou'))} |")
        lines += [""] + [f"- `{name}`: {res['protocol']}" for name, res in extra.items()] + [""]
    for note in metrics.get("notes", []):
        lines.append(f"> {note}")
    return "\n".join(lines).rstrip() + "\n"
