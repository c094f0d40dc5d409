"""Semantic segmentation metrics: PixelAcc / mIoU of cluster predictions (docs/method.md §8.1(b,c), §8.3, §8.5).

Prediction labels are ``0`` (thing) and ``1..S`` (stuff clusters), as the detector's semantic PNG;
any other value is "no prediction" and excluded. GT is the COCO-Stuff-27 class map (12 thing + 15
stuff super-categories, ``gt.COCOSTUFF27_SUPERCATEGORIES``); the U2Seg 16-class GT (0 = things,
1..15 stuff super-categories) is derived from it.

* ``stego27``: STEGO's ``UnsupervisedMetrics`` (mhamilton723/STEGO src/utils.py) on the whole set,
  with ``n_classes = 27`` and ``extra_clusters = max(0, labels - 27)``, every predicted label scored:
  STEGO's mask (``preds < n_classes``) drops labels >= 27, which in STEGO's own 0..26 label space
  drops nothing, but here label 0 is "thing" and 1..27 the stuff clusters, so that mask would drop
  the last stuff cluster; the literal rule stays available (``stego_mask=True``, used to check the
  code against STEGO's own outputs). With extra clusters the (labels x 27) matrix
  is assigned by two Hungarian calls (on it, and on its transpose), the rows of the clusters left
  unmatched are summed into one extra row (an extra IoU entry, 0 when those clusters predict any
  pixel), and a class without GT pixels gets IoU 0 when its assigned label predicts any.
  PixelAcc = matched diagonal / counted pixels, mIoU = mean of the non-NaN entries.
* ``stego27_strict``: the same 27-class one-to-one Hungarian without those artefacts: every label
  counted (pixels of unmatched labels are errors), IoU_c = TP / (TP + FP + FN) of the label matched
  to class c, mIoU = mean over classes with TP + FP + FN > 0 (no extra entry).
* ``u2seg16`` (U2Seg's released protocol): per image, every stuff label p present and every stuff
  super-category g present vote (p, g) when IoU(p, g) > 0.15 (whole-image masks); p -> most-voted g
  (ties: lowest index), no vote -> unmapped; label 0 -> things. Pixels of unmapped labels are
  excluded (neither counted in GT totals nor as errors). PixelAcc = trace / total, mIoU = mean
  over classes with GT pixels.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from scipy.optimize import linear_sum_assignment

from u2seg.evaluation.matching import hungarian_assign, majority_assign
from u2seg.evaluation.panoptic import mp_context

log = logging.getLogger(__name__)

N27 = len(gtmod.COCOSTUFF27_SUPERCATEGORIES)
N16 = len(gtmod.U2SEG16_NAMES)


def confusion(pred: np.ndarray, gt: np.ndarray, n_pred: int, n_gt: int) -> np.ndarray:
    """(n_pred + 1) x (n_gt + 1) pixel counts; the last row / column collect predictions outside
    ``0..n_pred-1`` and GT outside ``0..n_gt-1`` (ignored pixels)."""
    if pred.shape != gt.shape:
        raise UserError(f"semantic prediction size {pred.shape} != ground-truth size {gt.shape}")
    p = pred.astype(np.int64).ravel()
    g = gt.astype(np.int64).ravel()
    p = np.where((p >= 0) & (p < n_pred), p, n_pred)
    g = np.where((g >= 0) & (g < n_gt), g, n_gt)
    return np.bincount(p * (n_gt + 1) + g, minlength=(n_pred + 1) * (n_gt + 1)).reshape(n_pred + 1, n_gt + 1)


def to_u2seg16(conf27: np.ndarray) -> np.ndarray:
    """Merge the 27 GT columns (+ ignore column) of a confusion matrix into the 16 U2Seg classes."""
    col = np.zeros(N27 + 1, np.int64)
    for i, name in enumerate(gtmod.COCOSTUFF27_SUPERCATEGORIES):
        col[i] = 0 if i < gtmod.NUM_THING_SUPERCATEGORIES else 1 + gtmod.U2SEG_STUFF_SUPERCATEGORIES.index(name)
    col[N27] = N16
    out = np.zeros((conf27.shape[0], N16 + 1), dtype=conf27.dtype)
    np.add.at(out.T, col, conf27.T)
    return out


def u2seg_votes(conf16: np.ndarray, min_iou: float = 0.15) -> np.ndarray:
    """One image's votes (labels x 16) of the U2Seg semantic mapping, from its (labels + 1) x 17
    confusion matrix over all pixels (whole-image masks, VOID included)."""
    n_pred = conf16.shape[0] - 1
    pred_area = conf16.sum(axis=1)[:n_pred].astype(np.float64)
    gt_area = conf16.sum(axis=0)[:N16].astype(np.float64)
    inter = conf16[:n_pred, :N16].astype(np.float64)
    union = pred_area[:, None] + gt_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    votes = (iou > min_iou) & (pred_area[:, None] > 0) & (gt_area[None, :] > 0)
    votes[0, :] = False  # label 0 (things) is not voted, it maps to class 0
    votes[:, 0] = False  # GT things are not a stuff class
    return votes.astype(np.int64)


def iou_stats(conf: np.ndarray, assignment: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) per GT class of a (labels x classes) matrix under a label -> class assignment
    (-1 = unmapped: its pixels are false negatives of their GT class)."""
    tp = np.zeros(n_gt, np.float64)
    fp = np.zeros(n_gt, np.float64)
    for r, c in enumerate(assignment):
        if c >= 0:
            tp[c] += conf[r, c]
            fp[c] += conf[r].sum() - conf[r, c]
    fn = conf.sum(axis=0)[:n_gt] - tp
    return tp, fp, fn


def iou_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, total: float, names: Sequence[str]) -> dict[str, Any]:
    """PixelAcc / mIoU (x100) from per-class TP / FP / FN and the scored pixels: classes without
    TP + FP + FN are left out of the mean and of ``per_class_iou`` (None where nothing is scored)."""
    denom = tp + fp + fn
    valid = denom > 0
    iou = np.where(valid, tp / np.where(valid, denom, 1), np.nan)
    return {"pixel_acc": float(100 * tp.sum() / total) if total else None,
            "miou": float(100 * np.nanmean(iou)) if valid.any() else None,
            "per_class_iou": {names[c]: float(100 * iou[c]) for c in range(len(names)) if valid[c]},
            "pixels": int(total)}


def stego_unsupervised_metrics(conf27: np.ndarray, n_classes: int = N27,
                               stego_mask: bool = False) -> dict[str, Any]:
    """STEGO's ``UnsupervisedMetrics(n_classes, extra_clusters, compute_hungarian=True)`` PixelAcc /
    mIoU (x100) of a (labels + 1) x (n_classes + 1) matrix (last row / column: ignored pixels),
    computed the way STEGO's code does (see the module docstring); ``extra_clusters = labels - 27``.

    Every label is scored unless ``stego_mask`` applies STEGO's ``preds < n_classes`` mask (right for
    maps in STEGO's own 0..n_classes-1 label space only: it drops this pipeline's last stuff cluster).
    """
    n_labels = conf27.shape[0] - 1
    extra = max(0, n_labels - n_classes)
    stats = np.zeros((n_classes + extra, n_classes), np.int64)
    kept = min(n_labels, n_classes) if stego_mask else n_labels
    stats[:kept] = conf27[:kept, :n_classes]
    dropped = int(conf27[kept:n_labels, :n_classes].sum())
    rows, cols = linear_sum_assignment(stats, maximize=True)
    if extra == 0:
        hist = stats[np.argsort(cols), :].astype(np.float64)
        assignment = np.full(n_labels, -1, np.int64)
        assignment[rows[rows < n_labels]] = cols[rows < n_labels]
    else:
        _, cols_t = linear_sum_assignment(stats.T, maximize=True)
        missing = sorted(set(range(n_classes + extra)) - set(rows.tolist()))
        hist = np.vstack([stats[cols_t, :], stats[missing, :].sum(axis=0, keepdims=True)]).astype(np.float64)
        hist = np.hstack([hist, np.zeros((n_classes + 1, 1))])
        assignment = np.full(n_labels, -1, np.int64)  # STEGO's map_clusters: the first Hungarian call
        assignment[rows] = cols
    tp = np.diag(hist)
    fp = hist.sum(axis=0) - tp
    fn = hist.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
    total = hist.sum()
    valid = ~np.isnan(iou)
    out = {
        "pixel_acc": float(100 * tp.sum() / total) if total else None,
        "miou": float(100 * iou[valid].mean()) if valid.any() else None,
        "per_class_iou": {gtmod.COCOSTUFF27_NAMES[c]: float(100 * iou[c]) for c in range(n_classes) if valid[c]},
        "pixels": int(total),
        "dropped_pixels": dropped,
        "extra_clusters": extra,
        "assignment": assignment,
    }
    if extra:
        out["unmatched_clusters_iou"] = float(100 * iou[n_classes]) if valid[n_classes] else None
    return out


def stego27_metrics(conf27: np.ndarray) -> dict[str, Any]:
    """Strict one-to-one Hungarian PixelAcc / mIoU (x100) of a (labels + 1) x 28 matrix
    (``stego27_strict``: every label counted, classes without TP + FP + FN left out)."""
    n_pred = conf27.shape[0] - 1
    conf = conf27[:n_pred, :N27].astype(np.float64)
    assignment = hungarian_assign(conf)
    tp, fp, fn = iou_stats(conf, assignment, N27)
    return dict(iou_scores(tp, fp, fn, conf.sum(), gtmod.COCOSTUFF27_NAMES[:N27]), assignment=assignment)


def u2seg16_metrics(conf16: np.ndarray, votes: np.ndarray) -> dict[str, Any]:
    """U2Seg's released 16-class PixelAcc / mIoU (x100): (labels + 1) x 17 confusion, summed votes."""
    n_pred = conf16.shape[0] - 1
    assignment = majority_assign(votes)
    assignment[0] = 0
    conf = np.zeros((N16, N16), np.float64)
    for r in range(n_pred):
        if assignment[r] >= 0:
            conf[assignment[r]] += conf16[r, :N16]
    total = conf.sum()
    gt_total = conf.sum(axis=0)
    inter = np.diag(conf)
    union = gt_total + conf.sum(axis=1) - inter
    valid = gt_total > 0
    iou = np.where(valid, inter / np.where(union > 0, union, 1), np.nan)
    return {
        "pixel_acc": float(100 * inter.sum() / total) if total else None,
        "miou": float(100 * np.nanmean(iou)) if valid.any() else None,
        "per_class_iou": {gtmod.U2SEG16_NAMES[c]: float(100 * iou[c]) for c in range(N16) if valid[c]},
        "pixels": int(total),
        "excluded_pixels": int(conf16[:, :N16].sum() - total),
        "assignment": assignment,
    }


def label_names(n_pred: int) -> list[str]:
    """Names of the prediction labels: 0 = things, c = stuff cluster c."""
    return ["thing"] + [f"stuff_{c}" for c in range(1, n_pred)]


# ------------------------------------------------------------------------------ per-image pass
def semantic_from_panoptic(ids: np.ndarray, segments: list[dict[str, Any]], stuff_label: dict[int, int]) -> np.ndarray:
    """Semantic prediction from a panoptic prediction: stuff segments -> their stuff label (1..S),
    thing segments -> 0, VOID -> 255."""
    lut = {int(s["id"]): stuff_label.get(int(s["category_id"]), 0) for s in segments}
    return gtmod.semantic_gt(ids, [{"id": k, "category_id": v} for k, v in lut.items()],
                             {v: v for v in set(lut.values())})


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Single-channel label PNG -> (H, W) array."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except FileNotFoundError as exc:
        raise UserError(f"semantic PNG not found: {path}") from exc
    if arr.ndim != 2:
        raise UserError(f"{path}: semantic PNG must be single-channel, got shape {arr.shape}")
    return arr


def image_task(task: tuple[tuple, tuple | None, dict[int, int], int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(conf27, votes16) of one image. ``task`` = (GT source, prediction source, GT category id
    -> 27-class index, number of labels, vote IoU); prediction source = ("png", path) or
    ("panoptic", path, segments, stuff label map) or None (no prediction)."""
    gt_source, pred_source, lut27, n_pred, vote_iou = task
    ids, segments = gtmod.panoptic_image(gt_source)
    gt27 = gtmod.semantic_gt(ids, segments, lut27)
    if pred_source is None:
        pred = np.full(ids.shape, 255, np.uint8)
    elif pred_source[0] == "png":
        pred = read_label_png(pred_source[1])
    else:
        pred = semantic_from_panoptic(gtmod.read_panoptic_png(pred_source[1]), pred_source[2], pred_source[3])
    conf27 = confusion(pred, gt27, n_pred, N27)
    return conf27, u2seg_votes(to_u2seg16(conf27), vote_iou)


def accumulate(tasks: Sequence[tuple], workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Summed conf27 and votes16 over all image tasks (``workers`` processes)."""
    n_pred = tasks[0][3] if tasks else 28
    conf = np.zeros((n_pred + 1, N27 + 1), np.int64)
    votes = np.zeros((n_pred, N16), np.int64)
    workers = max(1, min(int(workers), len(tasks) or 1))
    if workers == 1:
        results = map(image_task, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers, mp_context=mp_context())
        results = pool.map(image_task, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8) or 1)))
    try:
        for c, v in tqdm(results, total=len(tasks), desc="semantic", unit="img", disable=len(tasks) < 50):
            conf += c
            votes += v
    finally:
        if pool is not None:
            pool.shutdown()
    return conf, votes
