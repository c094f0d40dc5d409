"""The per-shard ``validate-panoptic`` reports -> one report (the format of
``validate-panoptic --report``) for ``u2seg concat-validation``; fails the run on any problem found in any shard.

Shard reports are found as ``--reports-dir/shard_{i:05d}.validation.json`` for i < ``--num-shards``;
one report is in memory at a time. (Dataset-wide uniqueness of image ids is checked by
``u2seg concat-panoptic``.)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from u2seg.atomic import write_json
from u2seg.errors import UserError
from u2seg.jsonio import load_json

log = logging.getLogger(__name__)

_SUMMED = ("images", "annotations", "segments", "errors")


def combine(reports: list[dict[str, Any]] | Any, max_errors: int = 100) -> dict[str, Any]:
    """One report from per-shard reports (an iterable): counts summed, messages kept up to ``max_errors``."""
    out: dict[str, Any] = {}
    for report in reports:
        for part in ("panoptic", "instances"):
            if part not in report:
                continue
            acc = out.setdefault(part, {})
            for key, value in report[part].items():
                if key == "messages":
                    room = max_errors - len(acc.get("messages", []))
                    acc["messages"] = acc.get("messages", []) + value[:max(room, 0)]
                elif key in _SUMMED:
                    acc[key] = acc.get(key, 0) + int(value)
                else:  # the category count: the same in every shard
                    acc[key] = max(acc.get(key, 0), value)
    total = sum(part.get("errors", 0) for part in out.values())
    for part in out.values():  # messages last, as validate-panoptic writes them
        part["messages"] = part.pop("messages", [])
    out["ok"] = total == 0
    return out


def concat_reports(*, reports_dir: Path, num_shards: int, report_path: Path, max_errors: int) -> int:
    """``u2seg concat-validation``: one report of the shards' reports; fails on any problem."""
    paths = [reports_dir / f"shard_{i:05d}.validation.json" for i in range(num_shards)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} shard validation report(s) missing, e.g. {missing[0]}")
    report = combine((load_json(p) for p in paths), max_errors)
    write_json(report_path, report, indent=1)
    total = sum(part["errors"] for key, part in report.items() if key != "ok")
    if total:
        shown = "\n  ".join([m for key, part in report.items() if key != "ok" for m in part["messages"]][:20])
        raise UserError(f"validation: {total} problem(s) in {num_shards} shards; first ones:\n  {shown}")
    pan = report.get("panoptic", {})
    log.info("OK: %d shards, %d images, %d segments", num_shards, pan.get("images", 0), pan.get("segments", 0))
    return 0
