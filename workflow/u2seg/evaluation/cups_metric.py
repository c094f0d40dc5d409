"""CUPS's panoptic metric, rule by rule (visinf/cups 78fc273 ``cups/metrics/panoptic_quality.py``:
``PanopticQualitySemanticMatching`` over torchmetrics 1.3.1 ``PanopticQuality``), own numpy code.

Label matching (``assign`` / ``assign_separated``), on the (labels x classes) pixel-overlap matrix
of the whole set (pixels with a GT class and a predicted label only):

* a Hungarian assignment maximising the overlap (``scipy.optimize.linear_sum_assignment``); a pair
  with zero overlap is still a match (a class absent from the GT gets a label and scores 0);
* labels left over by it (more labels than classes) take their most-overlapping class (first class
  for a label without overlap), so every label is mapped;
* PQ: thing labels are matched to thing classes and stuff labels to stuff classes separately
  (CUPS's default ``VALIDATION.ADHERE_THING_STUFF: True``); PixelAcc / mIoU: one joint matching.

PQ per image (``segment_stats``; torchmetrics' rules, not panopticapi's): a segment is a
(class, instance) pair; every pixel of a stuff class has instance 0 (all segments mapped to one
stuff class form one segment per image, GT and prediction alike); the GT has no crowd: a crowd
region is an ordinary segment (instance 0 of its thing class). A (GT, predicted) pair of one class
is a true positive iff IoU > 0.5 with IoU = |g & p| / (|p| - |p & VOID_gt| + |g| - |g & VOID_pred|
- |g & p|) (computed in float32, as torchmetrics); an unmatched GT segment is a false negative unless
more than half of it is predicted VOID; an unmatched prediction is a false positive unless more than
half of it lies on GT VOID. PQ / SQ / RQ per class as panopticapi; averages over classes with
TP + FP + FN > 0 (``panoptic.summarize``).

PixelAcc / mIoU (``semantic_scores``): under the joint matching, IoU_c = TP / (TP + FP + FN) over
the pixels with a GT class and a predicted label, mean over classes where that is defined (a class
absent from the GT whose label predicts pixels scores 0); PixelAcc = TP / those pixels.

Ties (equal overlaps, e.g. labels without overlap) are broken as CUPS breaks them: labels are
numbered stuff first, then things, each by id (CUPS's pseudo-class numbering), and each part of the
separated matching is indexed in the order CUPS iterates its sets of indices (CPython's set order,
e.g. 32, 20, 21, ..., 31 for thing labels 20..32).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from u2seg.evaluation.gt import Category
from u2seg.evaluation.panoptic import PQStats
from u2seg.evaluation.semantic import iou_scores


def assign(cost: np.ndarray) -> np.ndarray:
    """Class column per row (label): Hungarian maximising the overlap, leftover rows -> argmax of
    their row; -1 only for rows when there are no columns."""
    cost = np.asarray(cost, np.float64)
    out = np.full(cost.shape[0], -1, np.int64)
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        return out
    rows, cols = linear_sum_assignment(cost, maximize=True)
    out[rows] = cols
    left = out < 0
    out[left] = np.argmax(cost[left], axis=1)
    return out


def assign_separated(cost: np.ndarray, thing_rows: np.ndarray, thing_cols: np.ndarray) -> np.ndarray:
    """``assign`` on thing rows x thing columns and on stuff rows x stuff columns (global column ids)."""
    cost = np.asarray(cost, np.float64)
    thing_rows, thing_cols = np.asarray(thing_rows, bool), np.asarray(thing_cols, bool)
    out = np.full(cost.shape[0], -1, np.int64)
    for rows_mask, cols_mask in ((thing_rows, thing_cols), (~thing_rows, ~thing_cols)):
        # CUPS indexes each part by ``list(set(indices))``: CPython's set order, which decides ties
        rows = np.array(list(set(np.flatnonzero(rows_mask).tolist())), np.int64)
        cols = np.array(list(set(np.flatnonzero(cols_mask).tolist())), np.int64)
        part = assign(cost[np.ix_(rows, cols)])
        out[rows[part >= 0]] = cols[part[part >= 0]]
    return out


def merge_segments(cls: np.ndarray, inst: np.ndarray, is_stuff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchmetrics' segments of a segment table: (merged index per entry, class per merged segment).
    An entry is (class index or -1 for VOID, instance id); stuff and VOID entries get instance 0, so
    entries of one stuff class (and all VOID) become one segment."""
    cls, inst = np.asarray(cls, np.int64), np.asarray(inst, np.int64)
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0")
    inst = np.where(np.concatenate([[True], np.asarray(is_stuff, bool)])[cls + 1], 0, inst)
    span = int(inst.max()) + 1 if inst.size else 1
    keys, index = np.unique((cls + 1) * span + inst, return_inverse=True)
    return index.ravel(), keys // span - 1


def segment_stats(inter: np.ndarray, gt_cls: np.ndarray, gt_inst: np.ndarray, pred_cls: np.ndarray,
                  pred_inst: np.ndarray, is_stuff: Sequence[bool]) -> PQStats:
    """torchmetrics' PQ statistics of one image from the pixel counts ``inter`` (GT entries x predicted
    entries) of its segment tables: class index (-1 VOID) and instance id per entry (``merge_segments``);
    ``is_stuff`` per class index."""
    is_stuff = np.asarray(is_stuff, bool)
    stats = PQStats.zeros(len(is_stuff))
    gi, g_cls = merge_segments(gt_cls, gt_inst, is_stuff)
    pi, p_cls = merge_segments(pred_cls, pred_inst, is_stuff)
    n_g, n_p = len(g_cls), len(p_cls)
    inter_m = np.zeros((n_g, n_p), np.int64)
    np.add.at(inter_m, (gi[:, None], pi[None, :]), np.asarray(inter, np.int64))
    g_area, p_area = inter_m.sum(axis=1), inter_m.sum(axis=0)
    g_void, p_void = g_cls < 0, p_cls < 0
    on_gt_void = inter_m[g_void].sum(axis=0)  # per predicted segment: pixels on GT VOID
    on_pred_void = inter_m[:, p_void].sum(axis=1)  # per GT segment: pixels predicted VOID
    union = (p_area - on_gt_void)[None, :] + (g_area - on_pred_void)[:, None] - inter_m
    pair = (g_cls[:, None] == p_cls[None, :]) & ~g_void[:, None] & ~p_void[None, :] & (inter_m > 0)
    iou = np.zeros(inter_m.shape, np.float32)
    iou[pair] = inter_m[pair].astype(np.float32) / union[pair].astype(np.float32)
    gs, ps = np.nonzero(pair & (iou > 0.5))
    np.add.at(stats.tp, g_cls[gs], 1)
    np.add.at(stats.iou, g_cls[gs], iou[gs, ps].astype(np.float64))
    g_matched = np.zeros(n_g, bool)
    g_matched[gs] = True
    p_matched = np.zeros(n_p, bool)
    p_matched[ps] = True
    fn = ~g_void & ~g_matched & (2 * on_pred_void <= g_area)
    fp = ~p_void & ~p_matched & (2 * on_gt_void <= p_area)
    np.add.at(stats.fn, g_cls[fn], 1)
    np.add.at(stats.fp, p_cls[fp], 1)
    return stats


def semantic_scores(conf: np.ndarray, assignment: np.ndarray, classes: Sequence[Category]) -> dict[str, Any]:
    """CUPS's PixelAcc / mIoU (x100) of a label -> class assignment; ``conf``: (labels x classes)
    pixel counts over the pixels with a GT class and a predicted label."""
    n_c = len(classes)
    conf = np.asarray(conf, np.float64)
    mapped = np.zeros((n_c, n_c), np.float64)  # mapped class x GT class
    for r, c in enumerate(assignment):
        if c >= 0:
            mapped[c] += conf[r]
    tp = np.diag(mapped)
    fp = mapped.sum(axis=1) - tp
    fn = mapped.sum(axis=0) - tp
    return iou_scores(tp, fp, fn, conf.sum(), [c.name for c in classes])
