"""Prediction results do not depend on the batch size: only images with the same padded shape share a
forward pass (a batch pads to its largest image, and the padding changes the RPN's proposals)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.detector.synth import tiny_model_config
from u2seg.detector.data import output_size, resize_image
from u2seg.detector.model import build_model
from u2seg.detector.params import PredictConfig
from u2seg.detector.predict import image_outputs, padded_shape, predict_images, shape_batches

K = 3
# (h, w) at test size 64 / 128, divisibility 32: padded to A = 64 x 128 (landscape), B = 128 x 64
# (portrait), C = 64 x 96; resized sizes differ within A and within B
SIZES = [(48, 80), (80, 48), (60, 70), (48, 90), (81, 50), (78, 48), (61, 72), (50, 83)]
CFG = PredictConfig(min_size=64, max_size=128, score_thresh=0.0, instance_score_thresh=0.05,
                    stuff_area_thresh=16, detections_per_image=50, device="cpu")


def test_padded_shape():
    assert padded_shape((64, 107), 32) == (64, 128)
    assert padded_shape((64, 128), 32) == (64, 128)
    assert padded_shape((107, 64), 32) == (128, 64)
    assert padded_shape((5, 7), 0) == (5, 7)


def test_shape_batches_one_key_per_batch_each_item_once():
    keys = list("ABACABBBCAAD")
    batches = list(shape_batches(((k, n) for n, k in enumerate(keys)), 2, lookahead=100))
    assert sorted(n for b in batches for n in b) == list(range(len(keys)))
    assert all(len({keys[n] for n in b}) == 1 and len(b) <= 2 for b in batches)
    assert all(b == sorted(b) for b in batches)
    # full buckets run as soon as they fill, the leftover buckets at the end, oldest first
    assert batches == [[0, 2], [1, 5], [6, 7], [3, 8], [4, 9], [10], [11]]


def test_shape_batches_lookahead_bounds_the_wait():
    keys = ["rare"] + ["common"] * 20
    batches = list(shape_batches(((k, n) for n, k in enumerate(keys)), 4, lookahead=6))
    assert batches[0] == [1, 2, 3, 4]  # the first full bucket
    assert batches[1] == [0]  # "rare" runs alone once 6 items arrived after it
    # without the bound it waits until the end
    assert list(shape_batches(((k, n) for n, k in enumerate(keys)), 4, lookahead=100))[-1] == [0]


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(num_classes=K), load_pretrained=False).eval()
    with torch.no_grad():  # spread scores (default init: about 0.3 for every box, near-ties everywhere)
        for name, t in model.state_dict().items():
            if "cls_score" in name:
                t.mul_(30.0)
    rng = np.random.default_rng(0)
    images = []
    for h, w in SIZES:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img[h // 3: 2 * h // 3, w // 4: 3 * w // 4] //= 3  # some structure
        images.append(img)
    return model, images


def _run(model, images, batch_size: int, workers: int = 0) -> list:
    cfg = dataclasses.replace(CFG, batch_size=batch_size, workers=workers)
    out = list(predict_images(model, images, cfg, torch.device("cpu"), progress=False))
    assert [i for i, _ in out] == list(range(len(images)))  # input order
    return [(p, image_outputs(p, i, K, cfg)) for i, p in out]


def _agree(a: dict, b: dict) -> bool:
    """The same detections (labels, boxes, scores, mask probabilities) up to float rounding: a batch of
    N images runs other conv / matmul kernels than one image (about 1e-6 relative on the features)."""
    return (len(a["scores"]) == len(b["scores"]) and torch.equal(a["labels"], b["labels"])
            and float((a["boxes"] - b["boxes"]).abs().max()) < 1e-3
            and float((a["scores"] - b["scores"]).abs().max()) < 1e-4
            and float((a["mask_probs"] - b["mask_probs"]).abs().max()) < 1e-4)


def _raw(pred) -> dict:
    return {"labels": torch.from_numpy(pred.labels), "boxes": torch.from_numpy(pred.boxes),
            "scores": torch.from_numpy(pred.scores), "mask_probs": pred.mask_probs}


def test_mixed_shapes_would_change_results(model_and_images):
    """The reason for the grouping: a landscape padded together with a portrait gets other detections."""
    model, images = model_and_images
    tensors = [torch.from_numpy(np.ascontiguousarray(resize_image(im, output_size(*im.shape[:2], CFG.min_size,
                                                                                  CFG.max_size))))
               .permute(2, 0, 1).float() for im in images[:2]]
    model.set_test_params(CFG.score_thresh, CFG.nms_thresh, CFG.detections_per_image)
    with torch.no_grad():
        mixed = model(tensors)
        alone = model(tensors[:1])
    assert len(alone[0]["scores"]) > 5  # the weights detect things
    assert not _agree(mixed[0], alone[0])


@pytest.mark.parametrize("batch_size,workers", [(2, 0), (3, 0), (3, 1)])
def test_batched_prediction_equals_one_image_prediction(model_and_images, batch_size, workers):
    model, images = model_and_images
    shapes = [padded_shape(output_size(h, w, CFG.min_size, CFG.max_size), 32) for h, w in SIZES]
    assert len(set(shapes)) == 3 and len(set(SIZES)) == len(SIZES)  # landscape, portrait, square-ish
    one = _run(model, images, 1)
    assert sum(len(p.scores) for p, _ in one) > 20 and all(o.segments for _, o in one)
    batched = _run(model, images, batch_size, workers)
    for (pa, oa), (pb, ob) in zip(one, batched):
        assert _agree(_raw(pa), _raw(pb))
        assert (pa.semantic == pb.semantic).mean() > 0.999
        assert (oa.panoptic == ob.panoptic).mean() > 0.999
        assert [s["category_id"] for s in oa.segments] == [s["category_id"] for s in ob.segments]
