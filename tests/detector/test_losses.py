"""DropLoss (CutLER, docs/method.md §7.2): proposals whose predicted box has IoU <= 0.01 with every GT lose their
classification loss; the mean still counts them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from u2seg.detector.losses import classification_loss, drop_loss_weights, unique_boxes
from u2seg.detector.model import build_model

from .synth import tiny_model_config
from .test_model import _batch


def test_drop_loss_weights_threshold():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    pred = torch.tensor([
        [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> dropped
        [9.5, 0.0, 19.5, 10.0],  # IoU 5 / 195 = 0.0256 > 0.01 -> kept
        [9.9, 0.0, 19.9, 10.0],  # IoU 1 / 199 = 0.005 <= 0.01 -> dropped
        [0.0, 0.0, 10.0, 10.0],  # IoU 1 -> kept
    ])
    w = drop_loss_weights(pred, gt, thresh=0.01)
    assert w.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert drop_loss_weights(pred, torch.zeros(0, 4)).tolist() == [0.0] * 4


def test_drop_loss_zeroes_classification_loss_of_dropped_proposals():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([2, 0, 2, 1])
    weights = torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss = classification_loss(logits, labels, weights)
    ce = F.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(loss, (ce[1] + ce[3]) / 4)  # denominator counts the dropped proposals
    loss.backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[2].abs().sum() == 0
    assert logits.grad[1].abs().sum() > 0 and logits.grad[3].abs().sum() > 0
    assert torch.allclose(classification_loss(logits, labels), ce.mean())


def test_unique_boxes_keeps_first_occurrences_in_order():
    b = torch.tensor([[5.0, 5, 6, 6], [0, 0, 1, 1], [5, 5, 6, 6], [2, 2, 3, 3]])
    assert unique_boxes(b).tolist() == [[5, 5, 6, 6], [0, 0, 1, 1], [2, 2, 3, 3]]
    assert unique_boxes(b, limit=2).tolist() == [[5, 5, 6, 6], [0, 0, 1, 1]]


def test_droploss_switch_in_the_cascade():
    images, targets = _batch()
    fractions = {}
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_model_config(droploss=on, droploss_thresh=0.01))
        torch.manual_seed(1)
        losses = model(images, targets)
        fractions[on] = [s["kept_fraction"] for s in model.roi_heads.stage_stats]
        if on:
            assert losses["loss_cls_stage0"] < off_loss  # noqa: F821 (set by the first iteration)
        else:
            off_loss = losses["loss_cls_stage0"]  # noqa: F841 (used by the second iteration)
    assert fractions[False] == [1.0, 1.0, 1.0]
    assert all(f < 1.0 for f in fractions[True])  # random proposals far from every GT box are dropped
