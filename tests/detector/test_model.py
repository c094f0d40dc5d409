"""Model: forward/backward on CPU, cascade IoU thresholds, inference outputs, config validation."""
from __future__ import annotations

import pytest
import torch

from u2seg.detector.model import ModelConfig, build_model
from u2seg.errors import UserError

from .synth import K, STUFF, tiny_model_config


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 96, generator=g) * 255, torch.rand(3, 56, 80, generator=g) * 255]
    masks0 = torch.zeros(2, 64, 96, dtype=torch.uint8)
    masks0[0, 8:30, 10:40] = 1
    masks0[1, 30:60, 50:90] = 1
    masks1 = torch.zeros(1, 56, 80, dtype=torch.uint8)
    masks1[0, 5:50, 5:30] = 1
    sem0 = torch.randint(0, STUFF + 1, (64, 96), generator=g)
    sem1 = torch.full((56, 80), 255)
    sem1[:20] = 3
    targets = [
        {"boxes": torch.tensor([[10.0, 8, 40, 30], [50, 30, 90, 60]]), "labels": torch.tensor([0, K - 1]),
         "masks": masks0, "sem_seg": sem0},
        {"boxes": torch.tensor([[5.0, 5, 30, 50]]), "labels": torch.tensor([1]), "masks": masks1, "sem_seg": sem1},
    ]
    return images, targets


def test_forward_backward_cpu_all_heads_get_gradients():
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    expected = {"loss_objectness", "loss_rpn_box_reg", "loss_mask", "loss_sem_seg"}
    expected |= {f"loss_{kind}_stage{s}" for kind in ("cls", "box_reg") for s in range(3)}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("backbone.body.conv_stem.weight", "fpn.inner_blocks.0.0.weight", "rpn.head.cls_logits.weight",
                 "roi_heads.box_heads.0.fc1.weight", "roi_heads.box_heads.2.fc2.weight",
                 "roi_heads.box_predictors.1.cls_score.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight",
                 "sem_head.predictor.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_cascade_stages_use_increasing_iou_thresholds():
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    model.train()
    images, targets = _batch()
    model(images, targets)
    stats = model.roi_heads.stage_stats
    assert [s["iou_thresh"] for s in stats] == [0.5, 0.6, 0.7]
    assert [m.high_threshold for m in model.roi_heads.matchers] == [0.5, 0.6, 0.7]
    for s in stats:
        assert s["num_fg"] > 0  # GT boxes are appended as proposals, so each stage has positives
        assert s["min_fg_iou"] >= s["iou_thresh"]
        if s["num_fg"] < s["num"]:
            assert s["max_bg_iou"] < s["iou_thresh"]


def test_inference_outputs_at_input_size():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(score_thresh_test=0.0, detections_per_image=7)).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for r, im in zip(out, images):
        n = r["boxes"].shape[0]
        assert 0 < n <= 7
        assert r["scores"].shape == (n,) and r["labels"].shape == (n,)
        assert int(r["labels"].max()) < K and int(r["labels"].min()) >= 0
        assert r["mask_probs"].shape == (n, 28, 28)
        assert float(r["mask_probs"].min()) >= 0 and float(r["mask_probs"].max()) <= 1
        assert r["sem_seg"].shape == (STUFF + 1,) + tuple(im.shape[-2:])
        assert float(r["boxes"][:, 2].max()) <= im.shape[-1] and float(r["boxes"][:, 3].max()) <= im.shape[-2]


def test_model_without_semantic_head_trains():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(num_stuff=0))
    assert model.sem_head is None
    images, targets = _batch()
    losses = model(images, targets)
    assert "loss_sem_seg" not in losses
    sum(losses.values()).backward()


def test_empty_targets_image_is_background_only():
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    images, targets = _batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "masks": torch.zeros(0, 56, 80, dtype=torch.uint8), "sem_seg": torch.full((56, 80), 255)}
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("bad", [dict(num_classes=0), dict(norm="gn"), dict(anchor_sizes=[32, 64]),
                                 dict(cascade_ious=[0.5, 0.6])])
def test_config_validation(bad):
    with pytest.raises(UserError):
        ModelConfig(**dict(dict(backbone_weights=None), **bad))


def test_efficientnet_lite2_imagenet_weights_load_into_features_backbone():
    from u2seg.backbones import load_efficientnet_lite2_state_dict
    from u2seg.detector.model import TimmBackbone

    backbone = TimmBackbone("efficientnet_lite2", "frozen_bn", "imagenet")
    ref = load_efficientnet_lite2_state_dict()
    own = backbone.body.state_dict()
    assert torch.equal(own["conv_stem.weight"], ref["conv_stem.weight"])
    assert torch.equal(own["blocks.6.0.conv_pwl.weight"], ref["blocks.6.0.conv_pwl.weight"])
    assert torch.equal(own["bn1.running_var"], ref["bn1.running_var"])  # frozen BN keeps the statistics
    assert backbone.channels == [24, 48, 120, 352]
