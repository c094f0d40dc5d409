"""Panoptic quality (PQ / SQ / RQ) with panopticapi's semantics (docs/method.md §8.4), own implementation.

Per image, a (GT segment, predicted segment) pair is a true positive iff both have the same
category, the GT segment is not crowd and IoU > 0.5, with
``IoU = |g & p| / (|p| + |g| - |g & p| - |p & VOID_gt|)`` (|g| = the GT json ``area``).
Unmatched non-crowd GT segments are false negatives. An unmatched prediction is a false positive
unless more than half of it lies on GT VOID plus the GT crowd region of its own category. With
several crowd segments of one category in an image, panopticapi uses only the last one listed in
``segments_info`` (``crowd_rule="last"``, the default, so numbers compare with the literature);
``crowd_rule="sum"`` counts the union of them all. A predicted segment whose category id is not a
known category raises UserError (panopticapi raises KeyError).
Per category: PQ = sum IoU_TP / (TP + FP/2 + FN/2), SQ = sum IoU_TP / TP, RQ = TP / (TP + FP/2 +
FN/2); categories without TP, FP and FN are skipped; All / Things / Stuff are unweighted means.

Extensions used by the evaluation protocols (all off by default): GT or predicted segments whose
category maps to ``-1`` are painted VOID (U2Seg's treatment of unmapped clusters); predicted
segments flagged ``forced_fp`` can never be a true positive (strict protocol: unmatched clusters
are false positives); GT stuff segments of one category can be merged per image.

Vectorised per image (segment-id lookup with ``searchsorted`` + one ``bincount`` over the
combined GT x prediction index), parallel over images with a process pool.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
import multiprocessing
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from u2seg.errors import UserError
from u2seg.evaluation.gt import Category, panoptic_image, read_panoptic_png

log = logging.getLogger(__name__)

# How an unmatched prediction's overlap with GT crowd regions of its category is counted.
CROWD_RULES = {
    "last": "panopticapi: only the last crowd segment of the category listed in segments_info",
    "sum": "every crowd segment of the category (their union)",
}


@dataclass
class PQStats:
    """Per-category TP / FP / FN counts and summed TP IoU."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "PQStats":
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.float64))

    def __iadd__(self, other: "PQStats") -> "PQStats":
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


def _lookup(ids: np.ndarray, seg_ids: np.ndarray, seg_col: np.ndarray, unknown: int) -> np.ndarray:
    """Column index per pixel (flattened): ``seg_col`` of the pixel's segment, 0 for VOID (id 0),
    ``unknown`` for ids not in ``seg_ids`` (one ``searchsorted`` over a tiny sorted table)."""
    flat = ids.ravel()
    keys = np.concatenate([np.zeros(1, np.int64), np.asarray(seg_ids, np.int64)])
    cols = np.concatenate([np.zeros(1, np.int64), np.asarray(seg_col, np.int64)])
    order = np.argsort(keys, kind="stable")
    keys, cols = keys[order], cols[order]
    if flat.dtype.kind in "ui" and keys[-1] <= np.iinfo(flat.dtype).max:
        keys = keys.astype(flat.dtype)  # same dtype: no per-pixel cast
    pos = np.searchsorted(keys, flat)
    np.minimum(pos, len(keys) - 1, out=pos)
    col = cols[pos]
    miss = keys[pos] != flat
    if miss.any():
        col[miss] = unknown
    return col


def pq_image(gt_ids: np.ndarray, gt_seg_ids: np.ndarray, gt_seg_cat: np.ndarray, gt_seg_crowd: np.ndarray,
             gt_seg_area: np.ndarray, pred_ids: np.ndarray, pred_seg_ids: np.ndarray, pred_seg_cat: np.ndarray,
             n_categories: int, pred_forced_fp: np.ndarray | None = None,
             gt_seg_group: np.ndarray | None = None, crowd_rule: str = "last") -> PQStats:
    """PQ statistics of one image from segment-id maps and per-segment arrays.

    Categories are indices ``0..n_categories-1``; ``-1`` paints a segment VOID. ``gt_seg_group``
    (optional) merges GT segments that share a group number (their areas are summed).
    ``crowd_rule`` (``CROWD_RULES``): which crowd segments of a category excuse a false positive.
    Raises UserError for predicted ids missing from the segment list or listed segments without
    pixels (as panopticapi does)."""
    if gt_ids.shape != pred_ids.shape:
        raise UserError(f"prediction size {pred_ids.shape} != ground-truth size {gt_ids.shape}")
    gt_seg_ids = np.asarray(gt_seg_ids, np.int64)
    pred_seg_ids = np.asarray(pred_seg_ids, np.int64)
    gt_seg_cat = np.asarray(gt_seg_cat, np.int64)
    pred_seg_cat = np.asarray(pred_seg_cat, np.int64)
    forced = np.zeros(len(pred_seg_ids), bool) if pred_forced_fp is None else np.asarray(pred_forced_fp, bool)
    if crowd_rule not in CROWD_RULES:
        raise UserError(f"crowd_rule {crowd_rule!r}: use one of {sorted(CROWD_RULES)}")
    if len(set(pred_seg_ids.tolist())) != len(pred_seg_ids) or (pred_seg_ids == 0).any():
        raise UserError("predicted segment ids must be unique and non-zero")

    # GT columns: 0 VOID, 1..G evaluated segments (or groups), G+1 ids not in the json
    keep_g = gt_seg_cat >= 0
    group = np.arange(len(gt_seg_ids)) if gt_seg_group is None else np.asarray(gt_seg_group)
    uniq_groups, inv = np.unique(group[keep_g], return_inverse=True)
    n_g = len(uniq_groups)
    g_col = np.zeros(len(gt_seg_ids), np.int64)
    g_col[keep_g] = inv + 1
    g_cat = np.zeros(n_g, np.int64)
    g_crowd = np.zeros(n_g, bool)
    g_area = np.zeros(n_g, np.float64)
    if n_g:
        g_cat[inv] = gt_seg_cat[keep_g]
        g_crowd[inv] = np.asarray(gt_seg_crowd, bool)[keep_g]
        np.add.at(g_area, inv, np.asarray(gt_seg_area, np.float64)[keep_g])
    gcol = _lookup(gt_ids, gt_seg_ids, g_col, n_g + 1)

    # prediction columns: 0 VOID (incl. segments mapped to -1), 1..P kept segments
    raw_col = np.arange(1, len(pred_seg_ids) + 1, dtype=np.int64)
    pcol_raw = _lookup(pred_ids, pred_seg_ids, raw_col, -1)
    if (pcol_raw < 0).any():
        bad = int(pred_ids.ravel()[np.argmax(pcol_raw < 0)])
        raise UserError(f"predicted segment id {bad} is in the PNG but not in segments_info")
    raw_area = np.bincount(pcol_raw, minlength=len(pred_seg_ids) + 1)[1:]
    if (raw_area == 0).any():
        bad = int(pred_seg_ids[np.argmax(raw_area == 0)])
        raise UserError(f"segment {bad} is in segments_info but has no pixels in the PNG")
    keep_p = pred_seg_cat >= 0
    n_p = int(keep_p.sum())
    p_remap = np.zeros(len(pred_seg_ids) + 1, np.int64)
    p_remap[1:][keep_p] = np.arange(1, n_p + 1)
    pcol = p_remap[pcol_raw]
    p_cat = pred_seg_cat[keep_p]
    p_forced = forced[keep_p]

    m = np.bincount(gcol * (n_p + 1) + pcol, minlength=(n_g + 2) * (n_p + 1)).reshape(n_g + 2, n_p + 1)
    stats = PQStats.zeros(n_categories)
    p_area = m[:, 1:].sum(axis=0).astype(np.float64)
    void_inter = m[0, 1:].astype(np.float64)
    inter = m[1:n_g + 1, 1:].astype(np.float64)  # (G, P)
    same = g_cat[:, None] == p_cat[None, :]
    union = p_area[None, :] + g_area[:, None] - inter - void_inter[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    tp_pair = same & (inter > 0) & ~g_crowd[:, None] & ~p_forced[None, :] & (iou > 0.5)
    gi, pj = np.nonzero(tp_pair)
    np.add.at(stats.tp, g_cat[gi], 1)
    np.add.at(stats.iou, g_cat[gi], iou[gi, pj])
    g_matched = np.zeros(n_g, bool)
    g_matched[gi] = True
    p_matched = np.zeros(n_p, bool)
    p_matched[pj] = True
    np.add.at(stats.fn, g_cat[~g_matched & ~g_crowd], 1)
    crowd_rows = g_crowd.copy()
    if crowd_rule == "last" and g_crowd.any():
        # rows follow the listing order (groups are numbered by their first segment)
        last: dict[int, int] = {}
        for row in np.flatnonzero(g_crowd).tolist():
            last[int(g_cat[row])] = row
        crowd_rows[:] = False
        crowd_rows[list(last.values())] = True
    crowd_inter = (inter * (same & crowd_rows[:, None])).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ignored = (void_inter + crowd_inter) / p_area > 0.5
    np.add.at(stats.fp, p_cat[~p_matched & ~ignored], 1)
    return stats


@dataclass
class PQContext:
    """What every image task needs (sent once per worker)."""

    gt_cat_index: dict[int, int]  # GT category id -> eval category index (missing: VOID)
    pred_cat_index: dict[int, int]  # predicted category id -> eval category index (missing: VOID)
    forced_fp_cats: frozenset[int]  # predicted category ids whose segments can only be FPs
    merge_stuff: bool  # merge GT segments of one stuff category per image
    stuff_indices: frozenset[int]
    n_categories: int
    known_pred_cats: frozenset[int] = frozenset()  # predicted category ids allowed (others raise)
    crowd_rule: str = "last"  # CROWD_RULES


_CTX: PQContext | None = None


def mp_context() -> multiprocessing.context.BaseContext:
    """Process start method for the worker pools: fork where available (cheap; no threads here)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _init(ctx: PQContext) -> None:
    global _CTX
    _CTX = ctx


def _task(task: tuple[tuple, str | None, list[dict[str, Any]]]) -> PQStats:
    assert _CTX is not None
    return evaluate_image(task, _CTX)


def evaluate_image(task: tuple[tuple, str | None, list[dict[str, Any]]], ctx: PQContext) -> PQStats:
    """PQ statistics of one (GT source, predicted PNG path or None, predicted segments) task."""
    gt_source, pred_png, pred_segments = task
    gt_ids, gt_segments = panoptic_image(gt_source)
    gt_seg_ids = np.array([int(s["id"]) for s in gt_segments], np.int64)
    gt_cat = np.array([ctx.gt_cat_index.get(int(s["category_id"]), -1) for s in gt_segments], np.int64)
    gt_crowd = np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], bool)
    if any("area" not in s for s in gt_segments):
        counts = np.bincount(_lookup(gt_ids, gt_seg_ids, np.arange(1, len(gt_seg_ids) + 1), 0),
                             minlength=len(gt_seg_ids) + 1)[1:]
        gt_area = np.array([s.get("area", counts[i]) for i, s in enumerate(gt_segments)], np.float64)
    else:
        gt_area = np.array([float(s["area"]) for s in gt_segments], np.float64)
    group = None
    if ctx.merge_stuff:
        group = np.arange(len(gt_segments))
        first: dict[int, int] = {}
        for i, (c, crowd) in enumerate(zip(gt_cat.tolist(), gt_crowd.tolist())):
            if c in ctx.stuff_indices and not crowd:
                group[i] = first.setdefault(c, i)
    if pred_png is None:
        pred_ids = np.zeros_like(gt_ids)
        pred_segments = []
    else:
        pred_ids = read_panoptic_png(pred_png)
    unknown = sorted({int(s["category_id"]) for s in pred_segments} - ctx.known_pred_cats)
    if unknown:
        raise UserError(f"{pred_png}: predicted segment(s) with unknown category_id {unknown} (known: "
                        f"{sorted(ctx.known_pred_cats)}); the prediction json's `categories` must list "
                        "every category its segments use")
    p_ids = np.array([int(s["id"]) for s in pred_segments], np.int64)
    p_cat = np.array([ctx.pred_cat_index.get(int(s["category_id"]), -1) for s in pred_segments], np.int64)
    p_forced = np.array([int(s["category_id"]) in ctx.forced_fp_cats for s in pred_segments], bool)
    return pq_image(gt_ids, gt_seg_ids, gt_cat, gt_crowd, gt_area, pred_ids, p_ids, p_cat,
                    ctx.n_categories, p_forced, group, ctx.crowd_rule)


def run_tasks(tasks: Sequence[tuple], ctx: PQContext, workers: int = 1, desc: str = "PQ") -> PQStats:
    """Sum the PQ statistics of every task, in ``workers`` processes."""
    total = PQStats.zeros(ctx.n_categories)
    workers = max(1, min(int(workers), len(tasks) or 1))
    if workers == 1:
        for t in tqdm(tasks, desc=desc, unit="img", disable=len(tasks) < 50):
            total += evaluate_image(t, ctx)
        return total
    chunk = max(1, min(64, len(tasks) // (workers * 8) or 1))
    with ProcessPoolExecutor(workers, mp_context=mp_context(), initializer=_init,
                             initargs=(ctx,)) as pool:
        for stats in tqdm(pool.map(_task, tasks, chunksize=chunk), total=len(tasks), desc=desc,
                          unit="img", disable=len(tasks) < 50):
            total += stats
    return total


def summarize(stats: PQStats, categories: Sequence[Category]) -> dict[str, Any]:
    """panopticapi's ``pq_average`` for All / Things / Stuff (x100) plus per-category values."""
    per_cat: dict[str, Any] = {}
    groups: dict[str, list[tuple[float, float, float]]] = {"all": [], "things": [], "stuff": []}
    for i, cat in enumerate(categories):
        tp, fp, fn, iou = int(stats.tp[i]), int(stats.fp[i]), int(stats.fn[i]), float(stats.iou[i])
        if tp + fp + fn == 0:
            continue
        denom = tp + 0.5 * fp + 0.5 * fn
        pq, sq, rq = iou / denom, (iou / tp if tp else 0.0), tp / denom
        per_cat[cat.name] = {"id": cat.id, "isthing": cat.isthing, "pq": 100 * pq, "sq": 100 * sq,
                             "rq": 100 * rq, "tp": tp, "fp": fp, "fn": fn}
        groups["all"].append((pq, sq, rq))
        groups["things" if cat.isthing else "stuff"].append((pq, sq, rq))
    out: dict[str, Any] = {}
    for name, vals in groups.items():
        n = len(vals)
        arr = np.array(vals, dtype=np.float64).reshape(n, 3)
        out[name] = {"pq": float(100 * arr[:, 0].mean()) if n else None,
                     "sq": float(100 * arr[:, 1].mean()) if n else None,
                     "rq": float(100 * arr[:, 2].mean()) if n else None, "n": n}
    out["per_category"] = per_cat
    return out


def pq_compute(gt_sources: dict[int, tuple], predictions: dict[int, tuple[str, list[dict[str, Any]]]],
               categories: Sequence[Category], gt_cat_map: dict[int, int] | None = None,
               pred_cat_map: dict[int, int] | None = None, forced_fp: dict[int, int] | None = None,
               merge_stuff: bool = False, workers: int = 1, pred_categories: Iterable[int] | None = None,
               crowd_rule: str = "last") -> dict[str, Any]:
    """PQ over every GT image.

    ``gt_sources``: image id -> GT source (see ``gt.panoptic_image``); ``predictions``: image id ->
    (PNG path, segments_info), images without a prediction count as empty predictions;
    ``categories``: evaluated categories; ``gt_cat_map`` / ``pred_cat_map``: category id -> eval
    category id (identity when None; ids missing from a given map are painted VOID);
    ``forced_fp``: predicted category id -> eval category id whose segments only count as FPs;
    ``pred_categories``: every valid predicted category id (default: the keys of ``pred_cat_map`` and
    ``forced_fp``, or the evaluated categories without a map): a segment of any other id raises
    UserError; ``crowd_rule``: see ``CROWD_RULES``.
    """
    if crowd_rule not in CROWD_RULES:
        raise UserError(f"crowd_rule {crowd_rule!r}: use one of {sorted(CROWD_RULES)}")
    cat_index = {c.id: i for i, c in enumerate(categories)}

    def index_map(m: dict[int, int] | None) -> dict[int, int]:
        if m is None:
            return dict(cat_index)
        return {int(k): cat_index[int(v)] for k, v in m.items() if int(v) in cat_index}

    pred_index = index_map(pred_cat_map)
    forced_fp = forced_fp or {}
    for k, v in forced_fp.items():
        if int(v) in cat_index:
            pred_index[int(k)] = cat_index[int(v)]
    if pred_categories is None:
        known = set(cat_index) if pred_cat_map is None else {int(k) for k in pred_cat_map}
        known |= {int(k) for k in forced_fp}
    else:
        known = {int(k) for k in pred_categories}
    ctx = PQContext(index_map(gt_cat_map), pred_index, frozenset(int(k) for k in forced_fp), merge_stuff,
                    frozenset(i for i, c in enumerate(categories) if not c.isthing), len(categories),
                    frozenset(known), crowd_rule)
    missing = [i for i in gt_sources if i not in predictions]
    if missing:
        log.warning("%d of %d images have no panoptic prediction: evaluated as empty predictions",
                    len(missing), len(gt_sources))
    tasks = [(src, *(predictions.get(i) or (None, []))) for i, src in gt_sources.items()]
    stats = run_tasks(tasks, ctx, workers)
    out = summarize(stats, categories)
    out["images"] = len(tasks)
    out["images_without_prediction"] = len(missing)
    return out


def load_predictions(json_path: str | os.PathLike, png_dir: str | os.PathLike,
                     image_ids: Iterable[int]) -> tuple[dict[int, tuple[str, list[dict[str, Any]]]], list[dict]]:
    """Predicted panoptic json + PNG folder -> ({image id: (PNG path, segments_info)}, categories)."""
    from u2seg.evaluation.gt import load_json

    data = load_json(json_path)
    if "annotations" not in data:
        raise UserError(f"{json_path}: not a COCO panoptic json (missing 'annotations')")
    wanted = set(int(i) for i in image_ids)
    preds = {int(a["image_id"]): (os.path.join(png_dir, a["file_name"]), a["segments_info"])
             for a in data["annotations"] if int(a["image_id"]) in wanted}
    return preds, data.get("categories", [])
