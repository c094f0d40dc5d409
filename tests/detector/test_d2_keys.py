"""The detectron2 <-> u2seg name table (u2seg.detector.d2_keys): one table, both directions."""
from __future__ import annotations

import pytest

from u2seg.detector.d2_keys import (MODEL_RULES, RESNET_RULES, d2_resnet_key_to_timm, d2_to_u2seg,
                                    timm_resnet_key_to_d2, u2seg_to_d2)

PAIRS = [  # detectron2 name, u2seg name
    ("backbone.bottom_up.stem.conv1.weight", "backbone.body.conv1.weight"),
    ("backbone.bottom_up.stem.conv1.norm.running_var", "backbone.body.bn1.running_var"),
    ("backbone.bottom_up.res2.0.conv1.weight", "backbone.body.layer1.0.conv1.weight"),
    ("backbone.bottom_up.res5.2.conv3.norm.bias", "backbone.body.layer4.2.bn3.bias"),
    ("backbone.bottom_up.res3.0.shortcut.weight", "backbone.body.layer2.0.downsample.0.weight"),
    ("backbone.bottom_up.res4.0.shortcut.norm.num_batches_tracked",
     "backbone.body.layer3.0.downsample.1.num_batches_tracked"),
    ("backbone.fpn_lateral2.weight", "fpn.inner_blocks.0.0.weight"),
    ("backbone.fpn_lateral3.norm.running_mean", "fpn.inner_blocks.1.1.running_mean"),
    ("backbone.fpn_output4.bias", "fpn.layer_blocks.2.0.bias"),
    ("backbone.fpn_output5.norm.bias", "fpn.layer_blocks.3.1.bias"),
    ("proposal_generator.rpn_head.conv.weight", "rpn.head.conv.0.0.weight"),
    ("proposal_generator.rpn_head.objectness_logits.bias", "rpn.head.cls_logits.bias"),
    ("proposal_generator.rpn_head.anchor_deltas.weight", "rpn.head.bbox_pred.weight"),
    ("roi_heads.box_head.2.fc1.weight", "roi_heads.box_heads.2.fc1.weight"),
    ("roi_heads.box_predictor.1.cls_score.bias", "roi_heads.box_predictors.1.cls_score.bias"),
    ("roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head.0.0.weight"),
    ("roi_heads.mask_head.deconv.bias", "roi_heads.mask_predictor.conv5_mask.bias"),
    ("roi_heads.mask_head.predictor.weight", "roi_heads.mask_predictor.mask_fcn_logits.weight"),
    ("sem_seg_head.p3.0.norm.weight", "sem_head.scale_heads.p3.0.norm.weight"),
    ("sem_seg_head.predictor.bias", "sem_head.predictor.bias"),
]


@pytest.mark.parametrize("d2, ours", PAIRS)
def test_both_directions(d2, ours):
    assert d2_to_u2seg(d2) == ours
    assert u2seg_to_d2(ours) == d2


def test_every_rule_is_exercised_and_unknown_keys_map_to_none():
    rules = RESNET_RULES + MODEL_RULES
    used = {i for d2, _ in PAIRS for i, rule in enumerate(rules)
            if rule.convert(d2.removeprefix("backbone.bottom_up."), to_ours=True) is not None}
    assert used == set(range(len(rules)))
    for key in ("pixel_mean", "roi_heads.box_head.0.fc1.scale", "backbone.bottom_up.stem.fc.weight",
                "backbone.fpn_lateral2.norm.weight.extra"):
        assert d2_to_u2seg(key) is None
    assert u2seg_to_d2("backbone.body.fc.weight") is None
    assert d2_resnet_key_to_timm("res2.0.conv1.weight") == "layer1.0.conv1.weight"
    assert timm_resnet_key_to_d2("layer4.1.downsample.1.running_mean") == "res5.1.shortcut.norm.running_mean"
