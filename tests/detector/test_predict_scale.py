"""Huge images in `u2seg predict`: full-size outputs built one mask at a time, on its box.

The bounded paths give the same results as the whole-image ones, and the peak memory of a predict
process grows by at most the declared bytes per pixel (rules/common.smk, PREDICT_B_PER_PIXEL).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import u2seg
from tests.conftest import REPO
from tests.detector.synth import K, tiny_model_config
from u2seg.coco_format import encode_mask
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.model import build_model
from u2seg.detector.predict import MaskCrop, crop_rle, fuse_panoptic, panoptic_fusion, paste_mask, semantic_argmax


def test_crop_rle_equals_full_mask_encoding():
    rng = np.random.default_rng(0)
    h, w = 37, 53
    cases = [(0, 0, rng.random((h, w)) > 0.5), (5, 7, np.ones((4, 3), bool)), (0, 0, np.ones((h, w), bool)),
             (30, 50, rng.random((7, 3)) > 0.3), (3, 0, np.zeros((5, 6), bool)), (0, 0, np.zeros((0, 0), bool)),
             (10, 20, rng.random((1, 33)) > 0.5), (0, 52, np.ones((h, 1), bool))]
    for y0, x0, m in cases:
        crop = MaskCrop(y0, x0, m, (h, w))
        assert crop_rle(crop) == encode_mask(crop.full()), (y0, x0, m.shape)


def test_paste_in_row_chunks_equals_one_call():
    torch.manual_seed(0)
    probs = torch.rand(28, 28)
    for box in ([3.2, 4.7, 60.1, 44.9], [0.0, 0.0, 80.0, 50.0], [70.5, 40.2, 79.9, 49.6]):
        whole = paste_mask(probs, torch.tensor(box), (50, 80), chunk_pixels=1 << 30)
        chunked = paste_mask(probs, torch.tensor(box), (50, 80), chunk_pixels=7)
        assert (whole.y0, whole.x0) == (chunked.y0, chunked.x0) and np.array_equal(whole.mask, chunked.mask)
        assert whole.mask.any()


def test_semantic_argmax_per_channel_equals_whole_argmax():
    torch.manual_seed(0)
    logits = torch.randint(0, 3, (6, 13, 17)).float()  # many ties: the first maximal class must win
    logits[:, :4] = torch.randn(6, 4, 17)
    whole = F.interpolate(logits[None], size=(61, 47), mode="bilinear", align_corners=False)[0].argmax(0)
    assert np.array_equal(semantic_argmax(logits, (61, 47)), whole.to(torch.uint8).numpy())


def test_fusion_on_paste_boxes_equals_fusion_on_full_masks():
    rng = np.random.default_rng(1)
    h, w, n = 60, 70, 12
    masks = np.zeros((n, h, w), bool)
    crops = []
    for i in range(n):
        y0, x0 = int(rng.integers(0, 40)), int(rng.integers(0, 50))
        y1, x1 = y0 + int(rng.integers(2, 20)), x0 + int(rng.integers(2, 20))
        masks[i, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
        a, b = max(y0 - 2, 0), max(x0 - 3, 0)  # a box wider than the mask, as pasting gives
        crops.append(MaskCrop(a, b, masks[i, a:y1 + 2, b:x1 + 1], (h, w)))
    scores, labels = rng.random(n), rng.integers(0, K, n)
    semantic = rng.integers(0, 4, (h, w)).astype(np.uint8)
    asked = []
    pan_a, seg_a = panoptic_fusion(masks, scores, labels, semantic, K, 0.2, 0.5, 50)
    pan_b, seg_b = fuse_panoptic(lambda i: asked.append(i) or crops[i], scores, labels, semantic, (h, w), K,
                                 0.2, 0.5, 50)
    assert np.array_equal(pan_a, pan_b) and seg_a == seg_b
    assert any(s["isthing"] for s in seg_a) and any(not s["isthing"] for s in seg_a)
    assert len(asked) == len(set(asked)) == int((scores >= 0.2).sum())  # each mask pasted once


def _declared_bytes_per_pixel() -> float:
    """PREDICT_B_PER_PIXEL of rules/common.smk (a line ``NAME, NAME, ... = value, value, ...``)."""
    for line in (REPO / "rules" / "common.smk").read_text().splitlines():
        names, _, values = line.partition("=")
        names = [n.strip() for n in names.split(",")]
        if "PREDICT_B_PER_PIXEL" in names:
            return float(values.split("#")[0].split(",")[names.index("PREDICT_B_PER_PIXEL")])
    raise AssertionError("PREDICT_B_PER_PIXEL not found in rules/common.smk")


def _predict_peak_mb(tmp: Path, model: Path, h: int, w: int) -> float:
    """Peak RSS (MiB) of one `u2seg predict` process on one h x w JPEG (every detection fused)."""
    rng = np.random.default_rng(0)
    img_dir = tmp / f"images_{h}x{w}"
    img_dir.mkdir()
    Image.fromarray(rng.integers(0, 255, (h // 50, w // 50, 3), dtype=np.uint8)).resize((w, h)).save(
        img_dir / "a.jpg", quality=90)
    manifest = tmp / f"manifest_{h}x{w}.json"
    manifest.write_text(json.dumps({"dataset": {"kind": "images"}, "root": str(img_dir), "annotations": None,
                                    "images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}]}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(u2seg.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = tmp / f"out_{h}x{w}"
    proc = subprocess.Popen([sys.executable, "-m", "u2seg", "predict", "--weights", str(model), "--manifest",
                             str(manifest), "--out-dir", str(out), "--min-size", "224", "--max-size", "320",
                             "--instance-score-thresh", "0.05", "--threads", "1", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert Image.open(out / "panoptic" / "a.png").size == (w, h)
    assert json.loads((out / "summary.json").read_text())["detections"] > 0
    return usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.slow  # two `u2seg predict` processes, one on a 3000 x 2000 image (~45 s on 2 cores)
def test_predict_memory_per_pixel_within_declared(tmp_path):
    """A 3000 x 2000 image costs at most PREDICT_B_PER_PIXEL more than a 200 x 150 one (the
    whole-image pasting held N x H x W masks: about 130 B/pixel with this model's 100 detections)."""
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = tmp_path / "m.pth"
    ckpt.save_model(model, build_model(cfg, load_pretrained=False).state_dict(), cfg.to_dict(),
                    [{"id": c + 1, "name": f"c{c}"} for c in range(K)])
    small = _predict_peak_mb(tmp_path, model, 150, 200)
    big = _predict_peak_mb(tmp_path, model, 2000, 3000)
    per_pixel = (big - small) * 2**20 / (2000 * 3000 - 150 * 200)
    print(f"predict peak RSS {small:.0f} MiB at 200x150, {big:.0f} MiB at 3000x2000: {per_pixel:.1f} B/pixel")
    assert per_pixel < _declared_bytes_per_pixel()
