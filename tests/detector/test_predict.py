"""Panoptic fusion (docs/method.md §7.3) and post-processing to the original image size."""
from __future__ import annotations

import numpy as np
import torch

from u2seg.detector.predict import panoptic_fusion, postprocess


def _box_mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_panoptic_fusion_rules():
    h, w, k = 100, 100, 5
    masks = np.stack([
        _box_mask(h, w, 0, 0, 50, 50),  # score 0.9 -> painted first
        _box_mask(h, w, 10, 10, 50, 50),  # 0.8: fully inside #0 -> overlap 1.0 > 0.5, skipped
        _box_mask(h, w, 40, 0, 80, 50),  # 0.7: 10/40 taken -> only its free part is added
        _box_mask(h, w, 80, 80, 100, 100),  # 0.3 < 0.5 -> stop
    ])
    scores = np.array([0.9, 0.8, 0.7, 0.3])
    labels = np.array([0, 1, 2, 3])
    semantic = np.zeros((h, w), dtype=np.uint8)
    semantic[50:, :] = 3  # 5000 px, 100..: free
    semantic[:50, 80:] = 2  # 1000 px < 4096 -> dropped
    pan, segs = panoptic_fusion(masks, scores, labels, semantic, k, 0.5, 0.5, 4096)
    assert [(s["category_id"], s["isthing"]) for s in segs] == [(1, 1), (3, 1), (k + 3, 0)]
    assert segs[0]["area"] == 2500 and segs[1]["area"] == 30 * 50
    assert (pan == segs[2]["id"]).sum() == 5000
    assert (pan[:50, 80:] == 0).all()  # small stuff region stays void
    assert segs[0]["score"] == 0.9 and segs[1]["bbox"] == [50.0, 0.0, 30.0, 50.0]


def test_postprocess_scales_to_original_size():
    res = {"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([2]), "mask_probs": torch.ones(1, 28, 28),
           "sem_seg": torch.zeros(4, 32, 48)}
    res["sem_seg"][3, :, 24:] = 5.0
    out = postprocess(res, (32, 48), (64, 96))
    assert out["boxes"].tolist() == [[20.0, 10.0, 60.0, 50.0]]
    assert out["masks"].shape == (1, 64, 96)
    ys, xs = np.nonzero(out["masks"][0])
    assert abs(xs.min() - 20) <= 1 and abs(xs.max() - 59) <= 1 and abs(ys.min() - 10) <= 1
    assert out["semantic"].shape == (64, 96) and out["semantic"][0, 95] == 3 and out["semantic"][0, 0] == 0
