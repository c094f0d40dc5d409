"""Test-time augmentation: CUPS's ``PanopticFPNWithTTA`` (cups/model/modeling/meta_arch/panoptic_fpn_tta.py).

    from u2seg.detector.tta import tta_predict
    results = tta_predict(model, images, TTAParams())   # images: list of float (3, H, W) tensors, 0..255 RGB
    pred = postprocess_image(results[0], (H, W), (H, W))  # the usual post-processing (input size = image size)

``tta_predict(model, images, params) -> list[dict]`` gives per image, at the image's own size:
``boxes`` (N, 4) float32 x0 y0 x1 y1, ``scores`` (N,), ``labels`` (N,) int64 (0..K-1), ``mask_probs``
(N, 28, 28) and, with a semantic head, ``sem_seg`` (S + 1, H, W): the averaged softmax PROBABILITIES
(not logits; their arg-max is the semantic map, CUPS's pseudo-labels threshold them per class).

Per image, as CUPS (docs/tta.md lists the intended differences):
  1. augmentations: for every scale s, the image resized (torch bilinear, align_corners False: detectron2's
     ``ResizeTransform`` of a float image) to short side ``int(base * s)`` (``ResizeShortestEdge``, long
     side capped at ``max_size``; base = ``params.base_size`` or the image's short side), then its
     horizontal flip when ``flip``; run ``batch_size`` at a time (CUPS: 2) with the model's own test
     thresholds (score, NMS, top-k);
  2. boxes mapped back to the image (un-flip, un-scale), pooled over augmentations and merged as
     detectron2's ``fast_rcnn_inference_single_image``: score > ``score_thresh``, clipped, per-class
     NMS at the model's NMS threshold, top ``detections_per_image``;
  3. masks: the merged boxes mapped into every augmentation, the mask head run on them there (the
     backbone features of step 1 are reused: CUPS runs the backbone again on the same input, the
     same numbers), flipped masks flipped back, the (28 x 28) probabilities averaged;
  4. semantic logits of each augmentation flipped back, resized bilinearly to the image, softmax,
     averaged.
Panoptic fusion then uses ``score_thresh`` as its instance threshold (CUPS passes
``TEST.INSTANCE_SCORE_THRESH``), overlap 0.5 and stuff area 4096 as the plain path.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops

from u2seg.detector.data import output_size
from u2seg.detector.model import PanopticCascadeRCNN
from u2seg.detector.params import TTAParams

log = logging.getLogger(__name__)

__all__ = ["TTAParams", "View", "tta_predict", "augmentation_sizes", "merge_detections"]


@dataclass
class View:
    """One augmented view: its input size and whether it is flipped."""

    size: tuple[int, int]
    flip: bool


def augmentation_sizes(h: int, w: int, params: TTAParams) -> list[View]:
    """The augmented views of an (h, w) image, in CUPS's order (each scale, then its flip)."""
    base = params.base_size or min(h, w)
    augs = []
    for s in params.scales:
        size = output_size(h, w, int(base * s), params.max_size)
        augs.append(View(size, False))
        if params.flip:
            augs.append(View(size, True))
    return augs


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """(3, H, W) float -> ``size`` (torch bilinear, align_corners False, no antialias)."""
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def _to_original(boxes: Tensor, aug: View, hw: tuple[int, int]) -> Tensor:
    """Boxes of an augmented view -> the image's coordinates (inverse flip, then inverse resize)."""
    nh, nw = aug.size
    b = boxes.float().clone()
    if aug.flip:
        b = torch.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], dim=1)
    b[:, 0::2] = b[:, 0::2] * (hw[1] * 1.0 / nw)
    b[:, 1::2] = b[:, 1::2] * (hw[0] * 1.0 / nh)
    return b


def _to_augmented(boxes: Tensor, aug: View, hw: tuple[int, int]) -> Tensor:
    """Boxes of the image -> an augmented view's coordinates (resize, then flip)."""
    nh, nw = aug.size
    b = boxes.float().clone()
    b[:, 0::2] = b[:, 0::2] * (nw * 1.0 / hw[1])
    b[:, 1::2] = b[:, 1::2] * (nh * 1.0 / hw[0])
    if aug.flip:
        b = torch.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], dim=1)
    return b


def merge_detections(boxes: Tensor, scores: Tensor, labels: Tensor, hw: tuple[int, int], score_thresh: float,
                     nms_thresh: float, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """detectron2's ``fast_rcnn_inference_single_image`` of pooled detections (one class each): finite
    rows, boxes clipped to ``hw``, score > ``score_thresh``, per-class NMS, the ``topk`` best."""
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    boxes = torch.stack([boxes[:, 0].clamp(0, hw[1]), boxes[:, 1].clamp(0, hw[0]),
                         boxes[:, 2].clamp(0, hw[1]), boxes[:, 3].clamp(0, hw[0])], dim=1)
    keep = scores > score_thresh
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    order = box_ops.batched_nms(boxes, scores, labels, nms_thresh)
    if topk >= 0:
        order = order[:topk]
    return boxes[order], scores[order], labels[order]


def _batches(n: int, size: int) -> list[range]:
    return [range(a, min(a + size, n)) for a in range(0, n, size)]


@torch.no_grad()
def tta_predict_one(model: PanopticCascadeRCNN, image: Tensor, params: TTAParams) -> dict[str, Tensor]:
    """:func:`tta_predict` of one (3, H, W) float image."""
    hw = (int(image.shape[-2]), int(image.shape[-1]))
    augs = augmentation_sizes(*hw, params)
    views: list[Tensor] = []
    for a in augs:  # a flipped view follows the unflipped view of its scale
        views.append(views[-1].flip(-1) if a.flip else _resize(image, a.size))
    # 1. every view: features (kept for the mask pass) and detections
    cached: list[tuple[object, OrderedDict[str, Tensor], range]] = []
    all_boxes, all_scores, all_labels = [], [], []
    for idx in _batches(len(augs), params.batch_size):
        image_list = model.preprocess([views[i] for i in idx])
        feats = model.features(image_list.tensors)
        dets = model.detect(image_list, feats, with_masks=False)
        for i, d in zip(idx, dets):
            all_boxes.append(_to_original(d["boxes"], augs[i], hw))
            all_scores.append(d["scores"].float())
            all_labels.append(d["labels"])
        cached.append((image_list, feats, idx))
    del views
    # 2. merge
    rh = model.roi_heads
    boxes, scores, labels = merge_detections(torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels),
                                             hw, params.score_thresh, rh.nms_thresh, rh.detections_per_image)
    # 3. masks on the merged boxes in every view, 4. semantic probabilities
    masks: list[Tensor] = []
    sem_sum: Tensor | None = None
    for image_list, feats, idx in cached:
        roi_feats = [feats[k] for k in ("p2", "p3", "p4", "p5")]
        probs = rh.mask_probs(roi_feats, [_to_augmented(boxes, augs[i], hw) for i in idx], [labels for _ in idx])
        masks.extend(p.flip(-1) if augs[i].flip else p for i, p in zip(idx, probs))
        logits = model.semantic_logits(image_list, feats)
        for i, s in zip(idx, logits or []):
            s = s.flip(-1) if augs[i].flip else s
            p = F.interpolate(s[None], size=hw, mode="bilinear", align_corners=False)[0].softmax(dim=0)
            sem_sum = p if sem_sum is None else sem_sum + p
    del cached
    out = {"boxes": boxes, "scores": scores, "labels": labels,
           "mask_probs": torch.stack(masks).mean(dim=0) if masks else boxes.new_zeros((0, 28, 28))}
    if sem_sum is not None:
        out["sem_seg"] = sem_sum / len(augs)
    return out


@torch.no_grad()
def tta_predict(model: PanopticCascadeRCNN, images: list[Tensor], params: TTAParams) -> list[dict[str, Tensor]]:
    """CUPS's test-time augmentation of each (3, H, W) float image (the model's pixel scale, on its device):
    a list of dicts (module docstring) that :func:`u2seg.detector.predict.postprocess_image` takes with
    input size = original size. The model must be in eval mode; its test thresholds apply per view."""
    params.validate()
    return [tta_predict_one(model, im, params) for im in images]
