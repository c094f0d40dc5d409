"""Cityscapes evaluation protocols (a dataset opts in with ``datasets.<name>.protocols``).

GT: a COCO panoptic json + PNGs whose categories are Cityscapes labels, recognised by name (as
cityscapesScripts' ``csCreatePanopticImgs`` writes them, or ``u2seg cityscapes-panoptic``); GT
categories outside a protocol's class set are VOID. Class sets (cityscapesScripts' label table):

* 19 classes: the ``trainId`` classes, 8 things (person, rider, car, truck, bus, train, motorcycle,
  bicycle) + 11 stuff (road, sidewalk, building, wall, fence, pole, traffic light, traffic sign,
  vegetation, terrain, sky).
* 27 classes: label ids 7..33 (the 19 plus parking, rail track, guard rail, bridge, tunnel,
  polegroup as stuff and caravan, trailer as things), STEGO's / CUPS's Cityscapes-27.

Protocols (predicted segments of labels without a class are VOID):

``cityscapes/u2seg``   U2Seg's Cityscapes panoptic (8 things + 11 stuff): thing clusters by the
                       ``instance/majority`` mapping (cluster -> GT thing class), stuff clusters by
                       per-image votes (IoU > 0.15 of whole-image masks, as ``semantic/u2seg16``),
                       most-voted stuff class; panopticapi's PQ.
``cityscapes/cups27``  CUPS's metric with CUPS's defaults (``cups_metric``): thing / stuff
``cityscapes/cups19``  pseudo-classes (the prediction's ``isthing``) matched separately to the thing /
                       stuff classes for PQ, jointly for PixelAcc / mIoU; Hungarian over the set plus
                       the most-overlapping class for leftover labels; torchmetrics' PQ rules (stuff
                       merged per class and image, crowd as ordinary segments, GT segments mostly
                       predicted VOID not missed).
``cityscapes/cups27_strict``  the stricter variant: every predicted label matched one-to-one to the
``cityscapes/cups19_strict``  27 / 19 classes by one joint Hungarian (pairs without overlap are no
                       match); unmatched labels VOID for PQ and errors for mIoU; panopticapi's PQ
                       (crowd regions excuse false positives and are never missed; GT and predicted
                       segments scored as they are); mIoU over classes with TP + FP + FN > 0.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from u2seg import registry
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.evaluation import cups_metric, matching, panoptic, semantic

log = logging.getLogger(__name__)

# (label id, name, trainId or None, category, hasInstances) of cityscapesScripts' labels 7..33
LABELS_27: tuple[tuple[int, str, int | None, str, bool], ...] = (
    (7, "road", 0, "flat", False), (8, "sidewalk", 1, "flat", False), (9, "parking", None, "flat", False),
    (10, "rail track", None, "flat", False), (11, "building", 2, "construction", False),
    (12, "wall", 3, "construction", False), (13, "fence", 4, "construction", False),
    (14, "guard rail", None, "construction", False), (15, "bridge", None, "construction", False),
    (16, "tunnel", None, "construction", False), (17, "pole", 5, "object", False),
    (18, "polegroup", None, "object", False), (19, "traffic light", 6, "object", False),
    (20, "traffic sign", 7, "object", False), (21, "vegetation", 8, "nature", False),
    (22, "terrain", 9, "nature", False), (23, "sky", 10, "sky", False), (24, "person", 11, "human", True),
    (25, "rider", 12, "human", True), (26, "car", 13, "vehicle", True), (27, "truck", 14, "vehicle", True),
    (28, "bus", 15, "vehicle", True), (29, "caravan", None, "vehicle", True), (30, "trailer", None, "vehicle", True),
    (31, "train", 16, "vehicle", True), (32, "motorcycle", 17, "vehicle", True), (33, "bicycle", 18, "vehicle", True),
)


def class_set(n: int) -> list[gtmod.Category]:
    """The 27 or 19 Cityscapes evaluation classes (id = Cityscapes label id)."""
    if n not in (19, 27):
        raise ValueError("Cityscapes class sets: 19 or 27")
    return [gtmod.Category(i, name, thing, cat) for i, name, train, cat, thing in LABELS_27
            if n == 27 or train is not None]


def gt_class_map(categories: list[gtmod.Category], classes: list[gtmod.Category]) -> dict[int, int]:
    """GT category id -> class id, by Cityscapes label name (others: VOID)."""
    by_name = {c.name.lower(): c.id for c in classes}
    out = {c.id: by_name[c.name.lower()] for c in categories if c.name.lower() in by_name}
    if not out:
        raise UserError("the Cityscapes protocols need GT categories named as Cityscapes labels (road, car, ...); "
                        f"got {', '.join(c.name for c in categories[:5])}")
    return out


def _segment_values(ids: np.ndarray, seg_ids: np.ndarray, values: np.ndarray, default: int) -> np.ndarray:
    """Per pixel: ``values`` of its segment id (int64; ``default`` for ids not in ``seg_ids``)."""
    seg_ids, values = np.asarray(seg_ids, np.int64), np.asarray(values, np.int64)
    if len(seg_ids) == 0:
        return np.full(ids.shape, default, np.int64)
    order = np.argsort(seg_ids)
    seg_ids, values = seg_ids[order], values[order]
    ids = ids.astype(np.int64)
    pos = np.clip(np.searchsorted(seg_ids, ids), 0, len(seg_ids) - 1)
    return np.where(seg_ids[pos] == ids, values[pos], default)


def _label_map(ids: np.ndarray, segments: list[dict[str, Any]], lut: dict[int, int]) -> np.ndarray:
    """Per pixel: ``lut`` of its segment's category (int64; -1 for VOID, unknown ids and categories)."""
    return _segment_values(ids, [int(s["id"]) for s in segments],
                           [lut.get(int(s["category_id"]), -1) for s in segments], -1)


def _pixel_pass(pgt: gtmod.PanopticGT, pan_preds: dict, pred_ids: list[int], gt_map: dict[int, int],
                classes: list[gtmod.Category], vote_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(confusion (labels + 1) x (classes + 1) over the set, per-image IoU votes labels x classes)."""
    row = {c: i for i, c in enumerate(pred_ids)}
    col = {c.id: j for j, c in enumerate(classes)}
    lut = {g: col[k] for g, k in gt_map.items()}
    n_p, n_c = len(pred_ids), len(classes)
    conf = np.zeros((n_p + 1, n_c + 1), np.int64)
    votes = np.zeros((n_p, n_c), np.int64)
    for image_id, source in pgt.sources.items():
        ids, segments = gtmod.panoptic_image(source)
        gt_lab = _label_map(ids, segments, lut)
        if image_id in pan_preds:
            png, segs = pan_preds[image_id]
            pred_lab = _label_map(gtmod.read_panoptic_png(png), segs, row)
        else:
            pred_lab = np.full(ids.shape, -1, np.int64)
        c = semantic.confusion(pred_lab, gt_lab, n_p, n_c)
        conf += c
        inter = c[:n_p, :n_c].astype(np.float64)
        union = c.sum(axis=1)[:n_p, None] + c.sum(axis=0)[None, :n_c] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            votes += ((inter > 0) & (inter / np.where(union > 0, union, 1) > vote_iou)).astype(np.int64)
    return conf, votes


def _semantic_scores(conf: np.ndarray, assignment: np.ndarray, classes: list[gtmod.Category]) -> dict[str, Any]:
    """PixelAcc / mIoU (x100) of a label -> class assignment (unmatched labels' pixels are errors)."""
    body = conf[:-1, :len(classes)].astype(np.float64)
    tp, fp, fn = semantic.iou_stats(body, assignment, len(classes))
    return semantic.iou_scores(tp, fp, fn, body.sum(), [c.name for c in classes])


def _pred_ids(pred_cats: list[dict[str, Any]]) -> tuple[list[int], set[int]]:
    ids = sorted(int(c["id"]) for c in pred_cats)
    if not ids:
        raise UserError("the Cityscapes protocols need the predicted categories (panoptic.json `categories`)")
    return ids, {int(c["id"]) for c in pred_cats if c.get("isthing", 0)}


@dataclass
class _SegmentCounts:
    """One image as segment tables + their pixel counts (the CUPS protocols need nothing else)."""

    inter: np.ndarray  # (GT entries x predicted entries) pixel counts; the last entry of each is VOID
    gt_cls: np.ndarray  # class index per GT entry (-1 VOID)
    gt_inst: np.ndarray  # instance id per GT entry (segment id; 0 for crowd regions)
    pred_cat: np.ndarray  # predicted category id per entry (-1 VOID)
    pred_seg: np.ndarray  # predicted segment id per entry (0 VOID)


def _cups_counts(task: tuple) -> _SegmentCounts:
    """Segment tables and pixel counts of one (GT source, predicted PNG or None, segments, GT class lut)."""
    gt_source, pred_png, pred_segments, gt_col = task
    gt_ids, gt_segments = gtmod.panoptic_image(gt_source)
    n_g = len(gt_segments)
    g_idx = _segment_values(gt_ids, [int(s["id"]) for s in gt_segments], np.arange(n_g), n_g)
    gt_cls = np.array([gt_col.get(int(s["category_id"]), -1) for s in gt_segments] + [-1], np.int64)
    # crowd regions: instance 0 of their class, as CUPS reads Cityscapes' instanceIds (no crowd flag)
    gt_inst = np.array([0 if s.get("iscrowd", 0) else int(s["id"]) for s in gt_segments] + [0], np.int64)
    if pred_png is None:
        pred_ids, pred_segments = np.zeros(gt_ids.shape, np.int64), []
    else:
        pred_ids = gtmod.read_panoptic_png(pred_png)
    if pred_ids.shape != gt_ids.shape:
        raise UserError(f"{pred_png}: prediction size {pred_ids.shape} != ground-truth size {gt_ids.shape}")
    n_p = len(pred_segments)
    p_seg = np.array([int(s["id"]) for s in pred_segments], np.int64)
    p_idx = _segment_values(pred_ids, p_seg, np.arange(n_p), -1)
    unlisted = (p_idx < 0) & (pred_ids != 0)
    if unlisted.any():
        raise UserError(f"{pred_png}: predicted segment id {int(pred_ids[unlisted][0])} is in the PNG but not in "
                        "segments_info")
    p_idx[p_idx < 0] = n_p
    inter = np.bincount((g_idx * (n_p + 1) + p_idx).ravel(), minlength=(n_g + 1) * (n_p + 1))
    pred_cat = np.array([int(s["category_id"]) for s in pred_segments] + [-1], np.int64)
    return _SegmentCounts(inter.reshape(n_g + 1, n_p + 1), gt_cls, gt_inst, pred_cat,
                          np.concatenate([p_seg, [0]]))


def _cups_pass(pgt: gtmod.PanopticGT, pan_preds: dict, gt_col: dict[int, int], workers: int) -> list[_SegmentCounts]:
    """``_cups_counts`` of every GT image (images without a prediction: all VOID), in ``workers`` processes."""
    tasks = [(src, *(pan_preds.get(i) or (None, [])), gt_col) for i, src in pgt.sources.items()]
    missing = sum(1 for i in pgt.sources if i not in pan_preds)
    if missing:
        log.warning("%d of %d images have no panoptic prediction: evaluated as VOID", missing, len(tasks))
    workers = max(1, min(int(workers), len(tasks) or 1))
    if workers == 1:
        return [_cups_counts(t) for t in tasks]
    with ProcessPoolExecutor(workers, mp_context=panoptic.mp_context()) as pool:
        return list(pool.map(_cups_counts, tasks, chunksize=max(1, len(tasks) // (workers * 8))))


def cups(n: int, adhere_thing_stuff: bool = True) -> Callable[..., dict[str, Any]]:
    """CUPS's metric against the ``n``-class set (``cups_metric``; ``adhere_thing_stuff``: CUPS's
    ``VALIDATION.ADHERE_THING_STUFF``, True by default there and here)."""
    def run(pgt: gtmod.PanopticGT, pan_preds: dict, pred_cats: list[dict[str, Any]],
            thing_map: dict[int, int], workers: int = 1) -> dict[str, Any]:
        classes = class_set(n)
        col = {c.id: j for j, c in enumerate(classes)}
        gt_col = {g: col[k] for g, k in gt_class_map(pgt.categories, classes).items()}
        ids, things = _pred_ids(pred_cats)
        # CUPS's label order: stuff pseudo-classes, then thing pseudo-classes (it breaks ties so)
        pred_ids = [k for k in ids if k not in things] + [k for k in ids if k in things]
        row = {k: r for r, k in enumerate(pred_ids)}
        images = _cups_pass(pgt, pan_preds, gt_col, workers)
        cost = np.zeros((len(pred_ids), len(classes)), np.int64)  # label x class, both known
        rows = []
        for im in images:
            unknown = sorted(set(im.pred_cat[:-1].tolist()) - set(row))
            if unknown:
                raise UserError(f"predicted segment(s) with category_id {unknown} not listed in the prediction "
                                "json's `categories`")
            r = np.array([row.get(int(c), -1) for c in im.pred_cat], np.int64)
            gi, pj = np.nonzero((im.gt_cls[:, None] >= 0) & (r[None, :] >= 0))
            np.add.at(cost, (r[pj], im.gt_cls[gi]), im.inter[gi, pj])
            rows.append(r)
        thing_rows = np.array([k in things for k in pred_ids], bool)
        thing_cols = np.array([c.isthing for c in classes], bool)
        pq_assign = (cups_metric.assign_separated(cost, thing_rows, thing_cols) if adhere_thing_stuff
                     else cups_metric.assign(cost))
        is_stuff = [not c.isthing for c in classes]
        stats = panoptic.PQStats.zeros(len(classes))
        for im, r in zip(images, rows):
            p_cls = np.where(r >= 0, pq_assign[np.maximum(r, 0)], -1)
            p_inst = np.where(np.isin(im.pred_cat, list(things)), im.pred_seg, 0)
            stats += cups_metric.segment_stats(im.inter, im.gt_cls, im.gt_inst, p_cls, p_inst, is_stuff)
        pq = panoptic.summarize(stats, classes)
        pq["images"] = len(images)
        pq["images_without_prediction"] = sum(1 for i in pgt.sources if i not in pan_preds)
        sem_assign = cups_metric.assign(cost)
        names = [c.name for c in classes]
        return {"protocol": registry.PROTOCOLS[f"cityscapes/cups{n}"].describe(),
                "panoptic": pq, "semantic": cups_metric.semantic_scores(cost, sem_assign, classes),
                "mapping": {str(k): names[j] for k, j in zip(pred_ids, pq_assign.tolist()) if j >= 0},
                "semantic_mapping": {str(k): names[j] for k, j in zip(pred_ids, sem_assign.tolist()) if j >= 0}}
    return run


def cups_strict(n: int) -> Callable[..., dict[str, Any]]:
    """The stricter CUPS variant against the ``n``-class set (joint one-to-one Hungarian, panopticapi PQ)."""
    def run(pgt: gtmod.PanopticGT, pan_preds: dict, pred_cats: list[dict[str, Any]],
            thing_map: dict[int, int], workers: int = 1) -> dict[str, Any]:
        classes = class_set(n)
        gt_map = gt_class_map(pgt.categories, classes)
        pred_ids, _ = _pred_ids(pred_cats)
        conf, _ = _pixel_pass(pgt, pan_preds, pred_ids, gt_map, classes, 0.0)
        assignment = matching.hungarian_assign(conf[:-1, :-1])
        pred_map = {pred_ids[r]: classes[c].id for r, c in enumerate(assignment) if c >= 0}
        pq = panoptic.pq_compute(pgt.sources, pan_preds, classes, gt_map, pred_map, workers=workers,
                             pred_categories=pred_ids)
        return {"protocol": registry.PROTOCOLS[f"cityscapes/cups{n}_strict"].describe(),
                "panoptic": pq, "semantic": _semantic_scores(conf, assignment, classes),
                "mapping": {str(k): next(c.name for c in classes if c.id == v) for k, v in pred_map.items()}}
    return run


def u2seg(pgt: gtmod.PanopticGT, pan_preds: dict, pred_cats: list[dict[str, Any]], thing_map: dict[int, int],
          workers: int = 1, vote_iou: float = 0.15) -> dict[str, Any]:
    """U2Seg's Cityscapes panoptic protocol (8 things + 11 stuff)."""
    classes = class_set(19)
    gt_map = gt_class_map(pgt.categories, classes)
    pred_ids, things = _pred_ids(pred_cats)
    pred_map = {k: gt_map[v] for k, v in thing_map.items() if k in things and v in gt_map
                and next(c.isthing for c in classes if c.id == gt_map[v])}
    _, votes = _pixel_pass(pgt, pan_preds, pred_ids, gt_map, classes, vote_iou)
    stuff_cols = [j for j, c in enumerate(classes) if not c.isthing]
    for r, k in enumerate(pred_ids):
        if k not in things:
            v = votes[r, stuff_cols]
            if v.max() > 0:
                pred_map[k] = classes[stuff_cols[int(np.argmax(v))]].id
    pq = panoptic.pq_compute(pgt.sources, pan_preds, classes, gt_map, pred_map, workers=workers,
                             pred_categories=pred_ids)
    names = {c.id: c.name for c in classes}
    return {"protocol": registry.PROTOCOLS["cityscapes/u2seg"].describe(vote_iou=vote_iou),
            "panoptic": pq, "mapping": {str(k): names[v] for k, v in pred_map.items()}}


# runner of each Cityscapes protocol record (u2seg.registry.PROTOCOLS)
PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "cityscapes/u2seg": u2seg,
    "cityscapes/cups27": cups(27),
    "cityscapes/cups19": cups(19),
    "cityscapes/cups27_strict": cups_strict(27),
    "cityscapes/cups19_strict": cups_strict(19),
}
