"""Cityscapes evaluation protocols (a dataset opts in with ``datasets.<name>.protocols``).

GT: a COCO panoptic json + PNGs whose categories are Cityscapes labels, recognised by name (as
cityscapesScripts' ``csCreatePanopticImgs`` writes them, or ``u2seg cityscapes-panoptic``); GT
categories outside a protocol's class set are VOID. Class sets (cityscapesScripts' label table):

* 19 classes: the ``trainId`` classes, 8 things (person, rider, car, truck, bus, train, motorcycle,
  bicycle) + 11 stuff (road, sidewalk, building, wall, fence, pole, traffic light, traffic sign,
  vegetation, terrain, sky).
* 27 classes: label ids 7..33 (the 19 plus parking, rail track, guard rail, bridge, tunnel,
  polegroup as stuff and caravan, trailer as things), STEGO's / CUPS's Cityscapes-27.

Protocols (PQ with panopticapi's rules; predicted segments of unmapped labels are VOID):

``cityscapes/u2seg``   U2Seg's Cityscapes panoptic (8 things + 11 stuff): thing clusters by the
                       ``instance/majority`` mapping (cluster -> GT thing class), stuff clusters by
                       per-image votes (IoU > 0.15 of whole-image masks, as ``semantic/u2seg16``),
                       most-voted stuff class.
``cityscapes/cups27``  CUPS: every predicted label (thing and stuff pseudo-classes) matched one-to-one
``cityscapes/cups19``  to the 27 / 19 classes by a Hungarian assignment maximising the pixel overlap
                       over the whole set; PQ, PixelAcc and mIoU under that assignment (unmatched
                       labels VOID for PQ, their pixels errors for mIoU). Predicted segments are
                       scored as they are (a thing pseudo-class matched to a stuff class keeps its
                       instance segments).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from u2seg import registry
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.evaluation import matching, panoptic, semantic

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


def _label_map(ids: np.ndarray, segments: list[dict[str, Any]], lut: dict[int, int]) -> np.ndarray:
    """Per pixel: ``lut`` of its segment's category (int64; -1 for VOID, unknown ids and categories)."""
    seg_ids = np.array([int(s["id"]) for s in segments], np.int64)
    labels = np.array([lut.get(int(s["category_id"]), -1) for s in segments], np.int64)
    if len(seg_ids) == 0:
        return np.full(ids.shape, -1, np.int64)
    order = np.argsort(seg_ids)
    seg_ids, labels = seg_ids[order], labels[order]
    ids = ids.astype(np.int64)
    pos = np.clip(np.searchsorted(seg_ids, ids), 0, len(seg_ids) - 1)
    return np.where(seg_ids[pos] == ids, labels[pos], -1)


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
    n_c = len(classes)
    body = conf[:-1, :n_c].astype(np.float64)
    tp, fp = np.zeros(n_c), np.zeros(n_c)
    for r, c in enumerate(assignment):
        if c >= 0:
            tp[c] += body[r, c]
            fp[c] += body[r].sum() - body[r, c]
    fn = body.sum(axis=0) - tp
    denom = tp + fp + fn
    valid = denom > 0
    iou = np.where(valid, tp / np.where(valid, denom, 1), np.nan)
    total = body.sum()
    return {"pixel_acc": float(100 * tp.sum() / total) if total else None,
            "miou": float(100 * np.nanmean(iou)) if valid.any() else None,
            "per_class_iou": {classes[c].name: float(100 * iou[c]) for c in range(n_c) if valid[c]},
            "pixels": int(total)}


def _pred_ids(pred_cats: list[dict[str, Any]]) -> tuple[list[int], set[int]]:
    ids = sorted(int(c["id"]) for c in pred_cats)
    if not ids:
        raise UserError("the Cityscapes protocols need the predicted categories (panoptic.json `categories`)")
    return ids, {int(c["id"]) for c in pred_cats if c.get("isthing", 0)}


def cups(n: int) -> Callable[..., dict[str, Any]]:
    """The CUPS protocol against the ``n``-class set."""
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
        return {"protocol": registry.PROTOCOLS[f"cityscapes/cups{n}"].describe(),
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
}
