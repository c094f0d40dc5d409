"""Detector losses: classification with CutLER's DropLoss (docs/method.md §7.2) and helpers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou


def unique_boxes(boxes: Tensor, limit: int = 100) -> Tensor:
    """The first ``limit`` distinct rows of ``boxes`` (N, 4), in their original order."""
    if boxes.shape[0] == 0:
        return boxes
    uniq, inverse = torch.unique(boxes, dim=0, return_inverse=True)
    positions = torch.arange(boxes.shape[0], device=boxes.device)
    first = torch.full((uniq.shape[0],), boxes.shape[0], dtype=torch.long, device=boxes.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return boxes[first.sort().values[:limit]]


def drop_loss_weights(pred_boxes: Tensor, gt_boxes: Tensor, thresh: float = 0.01, max_gt: int = 100) -> Tensor:
    """DropLoss weights of one image: 0 where a predicted box's max IoU with the GT is <= ``thresh``.

    ``pred_boxes`` (N, 4) are the boxes the stage regresses from its proposals (x1, y1, x2, y2);
    ``gt_boxes`` (G, 4) the image's pseudo-label boxes (the first ``max_gt`` distinct ones are used,
    as CutLER does). Returns float weights (N,) in {0, 1}, without gradient.
    """
    pred_boxes = pred_boxes.detach().float()
    if pred_boxes.shape[0] == 0:
        return pred_boxes.new_zeros((0,))
    gt = unique_boxes(gt_boxes.detach().float(), max_gt)
    if gt.shape[0] == 0:
        return pred_boxes.new_zeros((pred_boxes.shape[0],))
    max_iou = box_iou(pred_boxes, gt).max(dim=1).values
    return (max_iou > thresh).to(pred_boxes.dtype)


def classification_loss(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy averaged over all sampled proposals.

    With DropLoss ``weights`` the per-proposal losses are multiplied by the weights while the
    denominator still counts the dropped proposals (CutLER's definition).
    """
    if labels.numel() == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if weights is None:
        return ce.mean()
    return (ce * weights.to(ce.dtype)).sum() / ce.numel()


def box_regression_loss(deltas: Tensor, target_deltas: Tensor, num_sampled: int) -> Tensor:
    """L1 loss over foreground proposals, normalised by the number of sampled proposals (detectron2)."""
    if deltas.shape[0] == 0:
        return deltas.sum() * 0.0
    return F.l1_loss(deltas.float(), target_deltas.float(), reduction="sum") / max(num_sampled, 1)
