"""The MaskCut pipeline: fast == dense masks, CRF, hole filling, resizing, RLE round trip."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import COCO_MINI, require_shared
from tests.maskcut.synthetic import blob_features, box_mask
from u2seg.coco_format import decode_mask, instance_annotation
from u2seg.maskcut.algorithm import (MaskCutParams, maskcut_batch, maskcut_image, patch_masks_batch, pixel_masks,
                                     refine_masks, resize_mask, upsample_nearest)
from u2seg.maskcut.bipartition import mask_iou
from u2seg.crf import CRFParams, ImageCRF, mask_unary

BOXES = [(1, 1, 6, 5), (7, 6, 11, 11)]  # (y0, x0, y1, x1) on a 12 x 12 grid


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """12 x 12 features with two objects and the matching 96 x 96 image (stride 8)."""
    feats = blob_features(12, 12, BOXES, noise=0.3)
    img = np.full((96, 96, 3), 120, np.uint8)
    img[8:48, 8:40] = (220, 40, 40)
    img[56:88, 48:88] = (40, 40, 220)
    return feats, img


def test_two_objects_end_to_end_non_square():
    feats, img = _scene()
    height, width = 60, 150
    masks = maskcut_image(feats, img, (height, width), MaskCutParams())
    assert len(masks) == 2
    for m, (y0, x0, y1, x1) in zip(masks, BOXES):
        assert m.shape == (height, width) and m.dtype == bool
        want = np.zeros((height, width), bool)
        want[y0 * height // 12:y1 * height // 12, x0 * width // 12:x1 * width // 12] = True
        assert mask_iou(m, want) > 0.95
    assert not (masks[0] & masks[1]).any()


@pytest.mark.parametrize("rule", ["faithful", "sign_invariant"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_and_dense_masks_equal_synthetic(rule, seed):
    boxes = [(2, 3, 10, 9), (12, 12, 21, 22), (15, 1, 22, 7)]
    feats = blob_features(24, 24, boxes, noise=0.9, seed=seed)
    base = MaskCutParams(foreground_rule=rule)
    fast = patch_masks_batch(feats[None], base.with_(solver="fast"))[0]
    dense = patch_masks_batch(feats[None], base.with_(solver="dense"))[0]
    assert any(m.any() for m in fast)
    for a, b in zip(fast, dense):
        assert a.sum() == b.sum() == 0 or mask_iou(a, b) >= 0.99


def test_fast_and_dense_masks_equal_real_features():
    """efficientnet_lite2 features (float16, as in a shard) of two COCO photos, 20 x 20 patch grid."""
    root = require_shared(COCO_MINI)
    import torch

    from u2seg.backbones import build_backbone
    from u2seg.images import load_rgb

    files = sorted((root / "val2017").glob("*.jpg"))[:2]
    backbone = build_backbone("efficientnet_lite2")
    with torch.inference_mode():
        dense_feats, _ = backbone(backbone.preprocess([load_rgb(f) for f in files], 320))
    feats = dense_feats.numpy().astype(np.float16)
    out = {s: patch_masks_batch(feats, MaskCutParams(solver=s)) for s in ("fast", "dense")}
    assert sum(m.any() for masks in out["fast"] for m in masks) >= 2
    for fast_masks, dense_masks in zip(out["fast"], out["dense"]):
        for a, b in zip(fast_masks, dense_masks):
            assert a.sum() == b.sum() == 0 or mask_iou(a, b) >= 0.99


def test_image_without_acceptable_mask_gives_zero_masks():
    feats = blob_features(12, 12, [(5, 5, 7, 7)], noise=0.2)
    patch = patch_masks_batch(feats[None], MaskCutParams())[0]
    assert patch[0].sum() == 4  # the N-cut finds the small object ...
    flat = np.full((96, 96, 3), 128, np.uint8)  # ... but the image has no such object: the CRF erases it
    assert maskcut_image(feats, flat, (50, 70), MaskCutParams()) == []
    assert maskcut_batch(feats[None], [flat], [(50, 70)], MaskCutParams()) == [[]]


def test_rejections_and_disjoint_pixel_masks():
    feats = blob_features(12, 12, [(2, 2, 6, 6)], noise=0.2)
    # the 2nd cut re-finds the painted object (IoU 1 with the previous) -> rejected (all False);
    # the 3rd finds it again, now against an empty previous mask: kept at patch level (CutLER) ...
    patch = patch_masks_batch(feats[None], MaskCutParams())[0]
    assert [int(m.sum()) for m in patch] == [16, 0, 16]
    # ... and removed at pixel level, where every earlier mask is subtracted
    pix = pixel_masks(patch, 48)
    assert [int(m.sum()) for m in pix] == [16 * 16, 0, 0]
    # area rule: a 2nd mask of <= 1 % of the patches is rejected
    feats = blob_features(20, 20, [(2, 2, 12, 12), (15, 15, 17, 17)], noise=0.2)
    tiny = patch_masks_batch(feats[None], MaskCutParams(min_area_fraction=0.02))[0]
    assert tiny[0].sum() == 100 and tiny[1].sum() == 0


def test_crf_reuse_equals_fresh_crf_and_hole_filling():
    _, img = _scene()
    crf = ImageCRF(img, CRFParams())
    a = np.zeros((96, 96), bool)
    a[8:48, 8:40] = True
    b = np.zeros((96, 96), bool)
    b[56:88, 48:88] = True
    first = crf.refine(a)
    second = crf.refine(b)
    np.testing.assert_array_equal(second, ImageCRF(img, CRFParams()).refine(b))
    np.testing.assert_array_equal(first, crf.refine(a))
    assert mask_iou(first, a) > 0.9
    u = mask_unary(np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(np.exp(-u[:, 1]), [1 / (1 + np.e), np.e / (1 + np.e)])  # p_fg = 0.731 inside
    ring = np.zeros((96, 96), bool)
    ring[20:70, 20:70] = True
    ring[35:55, 35:55] = False
    (filled,) = refine_masks(None, [ring], MaskCutParams(crf=CRFParams(enabled=False)))
    assert filled[45, 45] and filled.sum() == 50 * 50


def test_crf_iou_filter():
    _, img = _scene()
    loose = np.zeros((96, 96), bool)
    loose[0:60, 0:60] = True  # the red box plus much grey: the CRF shrinks it to the red box
    refined = ImageCRF(img, CRFParams()).refine(loose)
    assert 0.2 < mask_iou(refined, loose) < 0.5
    (dropped,) = refine_masks(img, [loose], MaskCutParams(min_crf_iou=0.5))
    assert not dropped.any()
    (kept,) = refine_masks(img, [loose], MaskCutParams(min_crf_iou=0.2))
    assert mask_iou(kept, img[..., 0] > 200) > 0.9


def test_resize_keeps_width_and_height_apart():
    m = np.zeros((96, 96), bool)
    m[:48, :24] = True  # top-left: half the height, a quarter of the width
    out = resize_mask(m, width=200, height=100)
    assert out.shape == (100, 200)
    assert out[:50, :50].mean() > 0.95 and not out[55:, :].any() and not out[:, 55:].any()
    up = upsample_nearest(np.array([[1, 0, 0]], bool), 2, 6)
    np.testing.assert_array_equal(up, [[1, 1, 0, 0, 0, 0]] * 2)


def test_rle_round_trip_non_square():
    rng = np.random.default_rng(0)
    for height, width in [(37, 53), (64, 21)]:
        mask = np.zeros((height, width), bool)
        mask[3:height - 5, 2:width // 2] = True
        mask &= rng.random((height, width)) > 0.2
        ann = instance_annotation(mask, 7, 42, 1)
        assert ann["segmentation"]["size"] == [height, width]
        assert isinstance(ann["segmentation"]["counts"], str)
        np.testing.assert_array_equal(decode_mask(ann["segmentation"], height, width), mask)
        ys, xs = np.nonzero(mask)
        assert ann["area"] == mask.sum()
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_params_validation():
    from u2seg.errors import UserError

    with pytest.raises(UserError, match="solver"):
        MaskCutParams(solver="arpack")
    with pytest.raises(UserError, match="tau"):
        MaskCutParams(tau=1.5)
    p = MaskCutParams.from_dict({"tau": 0.2, "crf": {"enabled": False}})
    assert p.tau == 0.2 and not p.crf.enabled
    with pytest.raises(UserError, match="unknown"):
        MaskCutParams.from_dict({"tau": 0.2, "bogus": 1})
    assert box_mask(4, 4, (0, 0, 2, 2)).sum() == 4
