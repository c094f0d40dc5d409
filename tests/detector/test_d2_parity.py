"""Parity with real detectron2 (built from ../shared/vendor): U2Seg's config (``u2seg_R50_300.yaml`` with
K = 8), seeded random weights saved by ``DetectionCheckpointer``, imported with ``u2seg import-d2``, on
real coco-mini val images at test size 480 (P6 of a 480-px side has 8 cells: padded size // grid = 60,
detectron2's stride 64, so the anchor check is meaningful).

Stage by stage, each stage gets detectron2's own input (tolerances in the asserts), then end to end
from the same image files: ``u2seg predict`` vs detectron2's ``DefaultPredictor``.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import COCO_MINI, require_shared
from tests.detector.d2_env import detectron2, randomize_, u2seg_d2_cfg  # noqa: F401 (fixture)
from u2seg.cli import main as cli_main
from u2seg.detector.d2_import import import_checkpoint
from u2seg.detector.data import output_size, resize_image
from u2seg.detector.predict import load_model, padded_shape, panoptic_fusion, paste_masks, postprocess

K = 8
MIN_SIZE, MAX_SIZE = 480, 800
IMAGES = ("000000005001.jpg", "000000010764.jpg", "000000025603.jpg")
# a portrait (pads to 800 x 448 at 480 / 800), two 640 x 480 (480 x 640: one batch) and a 640 x 368 landscape
MIXED = ("000000125952.jpg", "000000005001.jpg", "000000051712.jpg", "000000025603.jpg")
FEATURE_RTOL = 1e-4  # max |diff| / max |value| of a feature map or logit tensor


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12))


@pytest.fixture(scope="module")
def pair(detectron2, tmp_path_factory):  # noqa: F811
    """(detectron2 model, its config, u2seg model, u2seg model file, checkpoint path)."""
    require_shared(COCO_MINI)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = u2seg_d2_cfg(K, MIN_SIZE, MAX_SIZE)
    d2_model = build_model(cfg).eval()
    randomize_(d2_model, seed=13)
    out = tmp_path_factory.mktemp("d2")
    DetectionCheckpointer(d2_model, save_dir=str(out)).save("model_final")  # what d2 training writes
    cfg.MODEL.WEIGHTS = str(out / "model_final.pth")
    model_file = out / "u2seg.pth"
    report = import_checkpoint(out / "model_final.pth", model_file)
    assert report["num_batches_tracked_dropped"] > 0  # SyncBN buffers of a real checkpoint handled
    model, _ = load_model(model_file, torch.device("cpu"))
    return d2_model, cfg, model, model_file, out / "model_final.pth"


def _d2_input(path: Path, cfg):
    """detectron2's test-time input of one file (read_image + ResizeShortestEdge, PIL bilinear)."""
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    rgb = utils.read_image(str(path), format="RGB")
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(rgb).apply_image(rgb)
    return rgb, resized


@pytest.fixture(scope="module")
def stage_inputs(pair):
    """One image through detectron2's preprocessing, backbone and RPN (the inputs of each later stage)."""
    d2_model, cfg, model, _, _ = pair
    path = require_shared(COCO_MINI) / "val2017" / IMAGES[0]
    rgb, resized = _d2_input(path, cfg)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    with torch.no_grad():
        images = d2_model.preprocess_image([{"image": tensor}])
        feats = d2_model.backbone(images.tensor)
        proposals, _ = d2_model.proposal_generator(images, feats)
    return {"rgb": rgb, "resized": resized, "tensor": tensor, "images": images, "feats": feats,
            "proposals": proposals}


def test_resize_is_detectron2s(stage_inputs):
    rgb, resized = stage_inputs["rgb"], stage_inputs["resized"]
    ours = resize_image(np.asarray(Image.open(require_shared(COCO_MINI) / "val2017" / IMAGES[0]).convert("RGB")),
                        output_size(*rgb.shape[:2], MIN_SIZE, MAX_SIZE))
    assert ours.shape == resized.shape
    assert np.array_equal(ours, resized)  # bit-identical (PIL bilinear, same output size)


def test_stages_match_detectron2(pair, stage_inputs):
    d2_model, _, model, _, _ = pair
    images, feats, proposals = stage_inputs["images"], stage_inputs["feats"], stage_inputs["proposals"]
    with torch.no_grad():
        # preprocessing: normalisation + padding to 32
        ours_list = model.preprocess([stage_inputs["tensor"]])
        assert torch.equal(ours_list.tensors, images.tensor)
        # backbone + FPN (P2..P6)
        ours = model.features(images.tensor)
        for name in ("p2", "p3", "p4", "p5", "p6"):
            assert ours[name].shape == feats[name].shape
            assert rel_diff(ours[name], feats[name]) < FEATURE_RTOL, name
        print(f"\nfeatures: max relative difference {max(rel_diff(ours[n], feats[n]) for n in feats):.2e}")
        # anchors: exactly detectron2's DefaultAnchorGenerator (strides 4..64, unrounded)
        levels = [feats[f] for f in ("p2", "p3", "p4", "p5", "p6")]
        d2_anchors = d2_model.proposal_generator.anchor_generator(levels)
        our_anchors = model.rpn.anchor_generator(ours_list, levels)[0]
        assert torch.equal(our_anchors, torch.cat([a.tensor for a in d2_anchors]))
        assert feats["p6"].shape[-1] * 64 != images.tensor.shape[-1] or \
            feats["p6"].shape[-2] * 64 != images.tensor.shape[-2]  # padded size // grid != 64 here
        # RPN proposals from detectron2's features
        d2_feats = OrderedDict((k, feats[k]) for k in ("p2", "p3", "p4", "p5", "p6"))
        our_props, _ = model._rpn(ours_list, d2_feats)
        d2_boxes = proposals[0].proposal_boxes.tensor
        assert our_props[0].shape == d2_boxes.shape
        same_rows = float(((our_props[0] - d2_boxes).abs().max(dim=1).values < 1e-3).float().mean())
        gap = (d2_boxes[:, None] - our_props[0][None]).abs().max(dim=2).values
        found = float((gap.min(dim=1).values < 1e-2).float().mean())
        print(f"\nRPN: {same_rows:.2%} of proposals equal at the same rank (1e-3 px), "
              f"{found:.2%} of detectron2's anywhere among ours (1e-2 px)")
        assert same_rows >= 0.95 and found >= 0.99  # float32 rounding (~1e-4 px) reorders near-tied NMS
        # cascade stages from detectron2's proposals: logits, deltas, decoded boxes
        roi = [feats[k] for k in ("p2", "p3", "p4", "p5")]
        stage_props = proposals
        boxes = [d2_boxes]
        for s in range(3):
            if s > 0:
                stage_props = d2_model.roi_heads._create_proposals_from_boxes(
                    prev, [images.image_sizes[0]])  # noqa: F821 (`prev`: the stage before)
                boxes = [stage_props[0].proposal_boxes.tensor]
            d2_logits, d2_deltas = d2_model.roi_heads._run_stage(roi, stage_props, s)
            logits, deltas = model.roi_heads._run_stage(s, roi, boxes)
            assert rel_diff(logits, d2_logits) < FEATURE_RTOL, f"stage {s} logits"
            print(f"stage {s}: logits {rel_diff(logits, d2_logits):.2e}, deltas {rel_diff(deltas, d2_deltas):.2e}")
            assert rel_diff(deltas, d2_deltas) < FEATURE_RTOL, f"stage {s} deltas"
            prev = d2_model.roi_heads.box_predictor[s].predict_boxes((d2_logits, d2_deltas), stage_props)
            ours_dec = model.roi_heads.box_coders[s].decode_single(deltas.float(), boxes[0].float())
            assert float((ours_dec - prev[0]).abs().max()) < 1e-2, f"stage {s} boxes"
        # final detections (scores averaged over stages, NMS, top 100) and mask probabilities
        d2_inst, _ = d2_model.roi_heads(images, feats, proposals)
        d2_inst = d2_inst[0]
        res = model.roi_heads.forward_test(roi, [d2_boxes], images.image_sizes)[0]
        assert len(d2_inst) > 20
        print(f"detections: {len(d2_inst)}, scores max |diff| {float((res['scores'] - d2_inst.scores).abs().max()):.2e}, "
              f"boxes {float((res['boxes'] - d2_inst.pred_boxes.tensor).abs().max()):.2e} px, mask probs "
              f"{float((res['mask_probs'] - d2_inst.pred_masks[:, 0]).abs().max()):.2e}")
        assert torch.equal(res["labels"], d2_inst.pred_classes)
        assert float((res["scores"] - d2_inst.scores).abs().max()) < 1e-5
        assert float((res["boxes"] - d2_inst.pred_boxes.tensor).abs().max()) < 1e-2
        assert float((res["mask_probs"] - d2_inst.pred_masks[:, 0]).abs().max()) < 1e-4
        # semantic logits
        d2_sem, _ = d2_model.sem_seg_head(feats)
        assert rel_diff(model.sem_head(feats), d2_sem) < FEATURE_RTOL
        print(f"semantic logits: {rel_diff(model.sem_head(feats), d2_sem):.2e}")


def test_pasting_and_panoptic_fusion_match_detectron2(pair, stage_inputs):
    """On identical raw outputs: detector_postprocess + sem_seg_postprocess + panoptic combination."""
    from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
    from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess

    d2_model, _, _, _, _ = pair
    images, feats, proposals = stage_inputs["images"], stage_inputs["feats"], stage_inputs["proposals"]
    h, w = stage_inputs["rgb"].shape[:2]
    with torch.no_grad():
        inst, _ = d2_model.roi_heads(images, feats, proposals)
        sem, _ = d2_model.sem_seg_head(feats)
    inst = inst[0]
    raw = {"boxes": inst.pred_boxes.tensor.clone(), "scores": inst.scores, "labels": inst.pred_classes,
           "mask_probs": inst.pred_masks[:, 0], "sem_seg": sem[0][:, : images.image_sizes[0][0], : images.image_sizes[0][1]]}
    d2_post = detector_postprocess(inst, h, w)  # (scales inst.pred_boxes in place)
    d2_sem = sem_seg_postprocess(sem[0], images.image_sizes[0], h, w).argmax(dim=0)
    ours = postprocess(raw, images.image_sizes[0], (h, w))
    assert np.array_equal(ours["masks"], d2_post.pred_masks.numpy())  # pasting bit-identical
    assert np.allclose(ours["boxes"], d2_post.pred_boxes.tensor.numpy(), atol=1e-4)
    assert (ours["semantic"] == d2_sem.numpy()).mean() > 0.9999
    # the pasting alone, on the same boxes and probabilities, and its mean mask area
    from detectron2.layers.mask_ops import paste_masks_in_image

    pasted = paste_masks(inst.pred_masks[:, 0], d2_post.pred_boxes.tensor, (h, w))
    assert torch.equal(pasted, paste_masks_in_image(inst.pred_masks[:, 0], d2_post.pred_boxes, (h, w)))
    # panoptic combination on the same inputs
    d2_pan, d2_segs = combine_semantic_and_instance_outputs(d2_post, torch.from_numpy(ours["semantic"]).long(),
                                                            0.5, 4096, 0.5)
    pan, segs = panoptic_fusion(ours["masks"], ours["scores"], ours["labels"], ours["semantic"], K)
    assert np.array_equal(pan, d2_pan.numpy())
    assert [(s["id"], s["category_id"]) for s in segs] == [
        (s["id"], s["category_id"] + 1 if s["isthing"] else K + s["category_id"]) for s in d2_segs]
    assert any(s["isthing"] for s in d2_segs) and any(not s["isthing"] for s in d2_segs)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


@pytest.mark.parametrize("names,batch_size", [(IMAGES, 1), (MIXED, 3)], ids=["landscape-b1", "mixed-b3"])
def test_end_to_end_predict_matches_detectron2(pair, tmp_path, names, batch_size):
    """The same files through `u2seg predict` (imported checkpoint) and detectron2's DefaultPredictor (one
    image at a time); batched, on mixed orientations: only images of one padded shape share a batch."""
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor

    _, cfg, _, model_file, _ = pair
    root = require_shared(COCO_MINI) / "val2017"
    images = []
    for i, name in enumerate(names):
        w, h = Image.open(root / name).size
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    shapes = [padded_shape(output_size(im["height"], im["width"], MIN_SIZE, MAX_SIZE), 32) for im in images]
    assert batch_size == 1 or 1 < len(set(shapes)) < len(shapes)  # mixed shapes, and some share a batch
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"root": str(root), "images": images}))
    out = tmp_path / "pred"
    assert cli_main(["predict", "--weights", str(model_file), "--manifest", str(manifest), "--out-dir", str(out),
                     "--min-size", str(MIN_SIZE), "--max-size", str(MAX_SIZE), "--device", "cpu",
                     "--batch-size", str(batch_size), "--no-progress"]) == 0
    results = json.loads((out / "instances_results.json").read_text())
    pan_json = json.loads((out / "panoptic.json").read_text())
    predictor = DefaultPredictor(cfg)
    found = total = 0
    same_pixels = all_pixels = 0
    for im, ann in zip(images, pan_json["annotations"]):
        d2_out = predictor(read_image(str(root / im["file_name"]), format="BGR"))
        inst = d2_out["instances"]
        d2_boxes = inst.pred_boxes.tensor.numpy()
        d2_cls = inst.pred_classes.numpy() + 1
        mine = [r for r in results if r["image_id"] == im["id"]]
        my_boxes = np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                             for r in mine]).reshape(-1, 4)
        my_cls = np.array([r["category_id"] for r in mine])
        iou = _box_iou(d2_boxes, my_boxes) if len(mine) else np.zeros((len(d2_boxes), 0))
        # IoU > 0.99, or every coordinate within the json's rounding (boxes a fraction of a pixel wide)
        near = np.abs(d2_boxes[:, None] - my_boxes[None]).max(axis=2) <= 0.011 if len(mine) else iou > 1
        same = (d2_cls[:, None] == my_cls[None, :]) & ((iou > 0.99) | near)
        found += int(same.any(axis=1).sum())
        total += len(d2_boxes)
        # panoptic: category per pixel (things 1..K, stuff K + c, void 0)
        d2_seg, d2_info = d2_out["panoptic_seg"]
        d2_cat = np.zeros(d2_seg.shape, dtype=np.int64)
        for s in d2_info:
            d2_cat[d2_seg.numpy() == s["id"]] = s["category_id"] + 1 if s["isthing"] else K + s["category_id"]
        rgb = np.asarray(Image.open(out / "panoptic" / ann["file_name"]), dtype=np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        my_cat = np.zeros(ids.shape, dtype=np.int64)
        for s in ann["segments_info"]:
            my_cat[ids == s["id"]] = s["category_id"]
        same_pixels += int((my_cat == d2_cat).sum())
        all_pixels += my_cat.size
    print(f"\nd2 parity end to end: {found}/{total} detections found (same class, IoU > 0.99 or within 0.01 px); "
          f"panoptic pixels with the same category {same_pixels / all_pixels:.5%}")
    assert total > 50
    assert found / total >= 0.99
    assert same_pixels / all_pixels >= 0.999
