"""Test-time augmentation (``u2seg.detector.tta``) against CUPS's ``PanopticFPNWithTTA`` on identical inputs.

The fixture ``data/cups_tta_reference.npz`` was recorded by ``benchmarks/cups_tta_reference.py`` (CUPS
78fc273 + detectron2, seeded random weights, three coco-mini crops); here the same weights are rebuilt from
the seed without detectron2 (checked against the recorded per-tensor sums) and our TTA is compared with
CUPS's outputs. Tolerances (docs/tta.md; measured: boxes 2e-4 px, scores 6e-7, mask probabilities 2.5e-4
= the float16 storage, semantic probabilities 6e-7, every mask, arg-max and panoptic pixel equal): boxes
1e-3 px, scores 1e-5, mask probabilities 5e-4, semantic probabilities 1e-5 at the sampled pixels; classes
and segments equal, pasted masks IoU >= 0.995, semantic arg-max and panoptic map >= 99.99 % of pixels.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tests.conftest import COCO_MINI, require_shared
from tests.detector.d2_env import randomize_
from u2seg.detector.d2_export import export_state_dict
from u2seg.detector.d2_import import convert_state_dict, fit_norm_buffers
from u2seg.detector.model import build_model
from u2seg.detector.params import ModelConfig, TTAParams
from u2seg.detector.predict import fuse_panoptic, postprocess_image
from u2seg.detector.tta import augmentation_sizes, merge_detections, tta_predict

FIXTURE = Path(__file__).parent / "data" / "cups_tta_reference.npz"


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE)
    return data, json.loads(str(data["meta"]))


def cups_model(data, meta):
    """Our model with the fixture's weights: detectron2 names from ``export_state_dict``, seeded as the
    recording script seeded CUPS's model, imported back."""
    cfg = ModelConfig(num_classes=meta["k"], num_stuff=meta["s"], backbone="resnet50", backbone_weights=None,
                      norm="frozen_bn", fpn_norm="frozen_bn", pixel_mean=meta["pixel_mean"],
                      pixel_std=meta["pixel_std"], rpn_nms_thresh=meta["rpn_nms_thresh"])
    model = build_model(cfg, load_pretrained=False)
    d2 = export_state_dict(model.state_dict(), norm="BN")
    floats = sorted(k for k, v in d2.items() if v.is_floating_point())
    assert floats == [str(n) for n in data["weight_names"]]  # CUPS's model has exactly these tensors
    randomize_(SimpleNamespace(state_dict=lambda: d2), seed=meta["seed"])
    for k in floats:
        if "cls_score" in k:
            d2[k].mul_(meta["cls_score_scale"])
    sums = np.array([float(d2[k].double().sum()) for k in floats])
    abs_sums = np.array([float(d2[k].double().abs().sum()) for k in floats])
    np.testing.assert_allclose(sums, data["weight_sums"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(abs_sums, data["weight_abs_sums"], rtol=1e-6)
    state, unused = convert_state_dict(d2)
    assert not unused
    fit_norm_buffers(state, model.state_dict())
    model.load_state_dict(state, strict=True)
    model.eval().set_test_params(meta["confidence"], meta["nms_thresh"], meta["detections_per_image"])
    return model


def load_crop(meta, rel: str) -> torch.Tensor:
    from PIL import Image

    rgb = np.asarray(Image.open(require_shared(COCO_MINI) / rel).convert("RGB"))[:meta["height"], :meta["width"]]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0


def test_augmentation_sizes_are_cups_min_sizes():
    params = TTAParams(base_size=256)
    augs = augmentation_sizes(256, 384, params)
    assert [(a.size, a.flip) for a in augs] == [((128, 192), False), ((128, 192), True), ((192, 288), False),
                                               ((192, 288), True), ((256, 384), False), ((256, 384), True)]
    # base None: the image's short side; the long side capped at max_size
    augs = augmentation_sizes(300, 200, TTAParams(scales=[2.0], flip=False, max_size=500))
    assert [a.size for a in augs] == [(500, 333)]


def test_merge_detections_threshold_nms_topk():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 70, 70], [-5, 0, 200, 10.]])
    scores = torch.tensor([0.9, 0.8, 0.85, 0.6, 0.7])
    labels = torch.tensor([0, 0, 1, 0, 2])
    b, s, lab = merge_detections(boxes, scores, labels, (60, 100), 0.65, 0.5, 100)
    # box 1 suppressed by box 0 (same class, IoU 0.82), box 2 kept (other class), box 3 below 0.65
    assert s.tolist() == pytest.approx([0.9, 0.85, 0.7]) and lab.tolist() == [0, 1, 2]
    assert b[2].tolist() == [0, 0, 100, 10]  # clipped to the image
    assert merge_detections(boxes, scores, labels, (60, 100), 0.65, 0.5, 1)[1].tolist() == pytest.approx([0.9])


@pytest.mark.slow
def test_tta_equals_cups(reference):
    data, meta = reference
    model = cups_model(data, meta)
    params = TTAParams(scales=meta["scales"], flip=meta["flip"], score_thresh=meta["tta_threshold"],
                       max_size=meta["max_size"], base_size=meta["height"])
    hw = (meta["height"], meta["width"])
    assert [a.size[0] for a in augmentation_sizes(*hw, params)][::2] == meta["min_sizes"]
    for n, rel in enumerate(meta["images"]):
        with torch.no_grad():
            raw = tta_predict(model, [load_crop(meta, rel)], params)[0]
        np.testing.assert_allclose(raw["mask_probs"].numpy(), data[f"{n}/mask_probs"].astype(np.float32), atol=5e-4)
        pred = postprocess_image(raw, hw, hw)
        assert len(pred.scores) == len(data[f"{n}/scores"]) > 0
        np.testing.assert_allclose(pred.boxes, data[f"{n}/boxes"], atol=1e-3)
        np.testing.assert_allclose(pred.scores, data[f"{n}/scores"], atol=1e-5)
        np.testing.assert_array_equal(pred.labels, data[f"{n}/classes"])
        for i, counts in enumerate(data[f"{n}/mask_rles"]):
            ref = {"size": list(hw), "counts": str(counts).encode("ascii")}
            ours = mask_utils.encode(np.asfortranarray(pred.mask(i).full().astype(np.uint8)))
            assert mask_utils.iou([ours], [ref], [0])[0, 0] >= 0.995 or mask_utils.area(ref) == 0
        sem = raw["sem_seg"]
        ys, xs = data[f"{n}/sem_yx"]
        np.testing.assert_allclose(sem[:, ys, xs].numpy(), data[f"{n}/sem_samples"], atol=1e-5)
        np.testing.assert_allclose(sem.double().mean(dim=(1, 2)).numpy(), data[f"{n}/sem_mean"], atol=1e-6)
        assert (pred.semantic == data[f"{n}/sem_argmax"]).mean() >= 0.9999
        pan, segments = fuse_panoptic(pred.mask, pred.scores, pred.labels, pred.semantic, hw, meta["k"],
                                      meta["tta_threshold"], 0.5, 4096)
        ref_segments = meta["segments"][n]
        assert [(s["isthing"], s["category_id"]) for s in segments] == [
            (int(r["isthing"]), r["category_id"] + 1 if r["isthing"] else meta["k"] + r["category_id"])
            for r in ref_segments]
        assert (pan == data[f"{n}/panoptic"]).mean() >= 0.9999


def test_predict_images_with_tta_runs_every_view_and_fuses_at_the_tta_threshold(monkeypatch):
    """``predict_images`` with ``tta``: the original image, 2 x len(scales) views (sizes from ``min_size``),
    the same result as ``tta_predict`` + ``postprocess_image``; fusion at ``tta_score_thresh``."""
    from tests.detector.synth import tiny_model_config
    from u2seg.detector import predict as predict_mod
    from u2seg.detector.params import PredictConfig

    torch.manual_seed(0)
    model = build_model(tiny_model_config(), load_pretrained=False).eval()
    rgb = (np.random.default_rng(0).random((70, 100, 3)) * 255).astype(np.uint8)
    cfg = PredictConfig(min_size=64, max_size=96, score_thresh=0.0, tta=True, tta_scales=[0.5, 1.0],
                        tta_score_thresh=0.05)
    sizes = []
    detect = model.detect

    def spy(image_list, feats, with_masks=True):
        sizes.extend(image_list.image_sizes)
        assert not with_masks  # the masks come from the merged boxes
        return detect(image_list, feats, with_masks)

    monkeypatch.setattr(model, "detect", spy)
    [(i, pred)] = list(predict_mod.predict_images(model, [rgb], cfg, torch.device("cpu"), progress=False))
    # scale 1 = min_size 64 (long side 91 < tta_max_size), each view and its flip
    assert sizes == [(32, 46), (32, 46), (64, 91), (64, 91)]
    image = torch.from_numpy(rgb).permute(2, 0, 1).float()
    raw = tta_predict(model, [image], cfg.tta_params())[0]
    direct = postprocess_image(raw, (70, 100), (70, 100))
    assert pred.image_hw == (70, 100) and len(pred.scores) > 0 and (pred.scores > 0.05).all()
    np.testing.assert_array_equal(pred.boxes, direct.boxes)
    np.testing.assert_array_equal(pred.semantic, direct.semantic)
    assert raw["sem_seg"].sum(dim=0).sub(1).abs().max() < 1e-5  # averaged probabilities
    assert predict_mod.fusion_score_thresh(cfg) == 0.05
    assert predict_mod.fusion_score_thresh(PredictConfig(tta=False)) == PredictConfig.instance_score_thresh


def test_predict_and_segment_cli_with_tta(tmp_path):
    """``u2seg predict --tta`` and ``u2seg segment --tta`` write the same outputs, unlike plain ``predict``."""
    from tests.detector.synth import make_dataset
    from tests.segment.conftest import SETTINGS, save_tiny_model
    from u2seg.cli import main as cli_main

    data = make_dataset(tmp_path / "data", n_images=2)
    model = save_tiny_model(tmp_path / "model.pth")
    tta = ["--tta", "--tta-scales", "0.5", "1.0", "--tta-score-thresh", "0.0"]
    runs = {"plain": ["predict"], "tta": ["predict", *tta]}
    for name, argv in runs.items():
        assert cli_main([*argv, "--weights", str(model), "--manifest", str(data["manifest"]),
                         "--out-dir", str(tmp_path / name), *SETTINGS]) == 0
    assert cli_main(["segment", str(data["images"]), "--model", str(model), "--out-dir", str(tmp_path / "seg"),
                     "--no-overlays", *tta, *SETTINGS]) == 0
    read = {n: json.loads((tmp_path / n / "instances_results.json").read_text()) for n in ("plain", "tta", "seg")}
    pan = {n: json.loads((tmp_path / n / "panoptic.json").read_text())["annotations"] for n in ("tta", "seg")}
    assert read["tta"] and read["seg"] == read["tta"] and pan["seg"] == pan["tta"]
    assert read["tta"] != read["plain"]
    summary = json.loads((tmp_path / "tta" / "summary.json").read_text())
    assert summary["config"]["tta"] is True and summary["config"]["tta_scales"] == [0.5, 1.0]
