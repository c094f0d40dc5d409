"""Record CUPS's test-time augmentation (``PanopticFPNWithTTA``, visinf/cups 78fc273) on coco-mini images as the
fixture ``tests/detector/data/cups_tta_reference.npz`` that ``tests/detector/test_tta.py`` compares
``u2seg.detector.tta.tta_predict`` with (docs/tta.md).

Run by hand, outside ``make test`` (needs detectron2 and CUPS's code with its dependencies on the path):

  PYTHONPATH=/path/to/cups:<torchmetrics, pytorch_lightning, kornia, yacs ...>:workflow:. \\
      python benchmarks/cups_tta_reference.py [--out tests/detector/data/cups_tta_reference.npz]
      python benchmarks/cups_tta_reference.py --padded-check   # CUPS vs u2seg where views are padded

The model: CUPS's ``panoptic_cascade_mask_r_cnn(use_tta=True)`` config (``Panoptic-Cascade-Mask-R-CNN.yaml``,
R50, BN on CPU as CUPS sets it there, CUPS's pixel statistics of 0..1 images) with ``K`` thing and ``S + 1``
semantic classes, built on CPU, weights seeded with ``tests.detector.d2_env.randomize_``, classifiers x ``CLS_SCORE_SCALE`` (the test rebuilds
the same weights from the seed without detectron2 and checks them against the per-tensor sums stored here).
Inputs: the top-left ``HEIGHT x WIDTH`` crop of each image, float RGB / 255 (CUPS's images), ``height`` /
``width`` = the crop (no pre-resize); base size ``HEIGHT`` (CUPS: ``DATA.CROP_RESOLUTION[0]``), so every
augmented view is a multiple of 32 (docs/tta.md: CUPS flips and resizes the padded semantic map).
Recorded per image: merged boxes, scores, classes, the averaged mask probabilities (float16), the
pasted masks (COCO RLE), the averaged semantic probabilities (arg-max map, channel means, values at
``SAMPLES`` seeded pixels) and the panoptic map + segments.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
OUT = REPO / "tests" / "detector" / "data" / "cups_tta_reference.npz"

SEED = 13
K, S = 3, 4  # thing clusters, stuff clusters (semantic head: S + 1 classes, 0 = things)
IMAGES = ("val2017/000000005001.jpg", "val2017/000000030213.jpg", "val2017/000000025986.jpg")
HEIGHT, WIDTH = 256, 384
SCALES = (0.5, 0.75, 1.0)  # CUPS's MODEL.TTA_SCALES
CLS_SCORE_SCALE = 0.2  # the seeded classifiers scaled down: scores 0.7 .. 0.85, tens of detections per view
CONFIDENCE = 0.72  # MODEL.INFERENCE_CONFIDENCE_THRESHOLD: each view's detection threshold
TTA_THRESHOLD = 0.77  # MODEL.TTA_INFERENCE_CONFIDENCE_THRESHOLD: the merge (and fusion) threshold
SAMPLES = 1000  # pixels where the semantic probabilities are recorded
PIXEL_MEAN, PIXEL_STD = [0.4850, 0.4560, 0.4060], [0.2290, 0.2240, 0.2250]  # Panoptic-Cascade-Mask-R-CNN.yaml


def load_crop(path: Path) -> torch.Tensor:
    """(3, HEIGHT, WIDTH) float RGB in 0..1 of the image's top-left crop."""
    rgb = np.asarray(Image.open(path).convert("RGB"))[:HEIGHT, :WIDTH]
    assert rgb.shape[:2] == (HEIGHT, WIDTH), f"{path}: smaller than {HEIGHT} x {WIDTH}"
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0


def build_cups_tta():
    """CUPS's TTA model as ``panoptic_cascade_mask_r_cnn(use_tta=True, load_dino=False)`` configures it, on CPU."""
    import cups
    from cups.model.modeling import PanopticFPNWithTTA
    from cups.model.modeling.meta_arch import build_model
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_file(str(Path(cups.__file__).parent / "model" / "Panoptic-Cascade-Mask-R-CNN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"  # (CUPS on CPU)
    cfg.MODEL.FPN.NORM = "BN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = K
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = S + 1
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = CONFIDENCE
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = CONFIDENCE
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHT = None
    cfg.TEST.INSTANCE_SCORE_THRESH = TTA_THRESHOLD
    cfg.MODEL.ROI_HEADS.USE_DROPLOSS = False
    cfg.TEST.AUG.MIN_SIZES = tuple(int(HEIGHT * s) for s in SCALES)
    cfg.freeze()
    model = build_model(cfg).eval()
    return cfg, model, PanopticFPNWithTTA(cfg, model)


def seeded_cups_tta(height: int, width: int):
    """(cfg, model, TTA model) with the fixture's seeded weights, base size ``height``."""
    from tests.detector.d2_env import randomize_

    global HEIGHT, WIDTH
    HEIGHT, WIDTH = height, width
    cfg, model, tta = build_cups_tta()
    randomize_(model, seed=SEED)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "cls_score" in name:
                t.mul_(CLS_SCORE_SCALE)
    return cfg, model, tta


def padded_check(height: int = 250, width: int = 370) -> None:
    """Print how far u2seg's TTA is from CUPS's when the views are not multiples of 32 (docs/tta.md:
    CUPS flips and resizes the padded semantic map): instances, semantic probabilities, arg-max."""
    from tests.detector.test_tta import cups_model
    from u2seg.detector.params import TTAParams
    from u2seg.detector.predict import postprocess_image
    from u2seg.detector.tta import tta_predict

    cfg, _, tta = seeded_cups_tta(height, width)
    image = load_crop(COCO_MINI / IMAGES[0])
    with torch.no_grad():
        ref = tta([{"image": image, "height": height, "width": width}])[0]
        data = np.load(OUT)
        model = cups_model(data, json.loads(str(data["meta"])))
        raw = tta_predict(model, [image], TTAParams(scales=list(SCALES), score_thresh=TTA_THRESHOLD, base_size=height))[0]
    pred = postprocess_image(raw, (height, width), (height, width))
    boxes = ref["instances"].pred_boxes.tensor.numpy()
    print(json.dumps({"size": [height, width], "min_sizes": list(cfg.TEST.AUG.MIN_SIZES),
                      "instances": [len(boxes), len(pred.scores)],
                      "box_max_diff": float(np.abs(boxes - pred.boxes).max()) if len(boxes) == len(pred.boxes) else None,
                      "semantic_prob_max_diff": float((ref["sem_seg"] - raw["sem_seg"]).abs().max()),
                      "semantic_argmax_equal": float((ref["sem_seg"].argmax(0).numpy() == pred.semantic).mean())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--padded-check", action="store_true",
                        help="compare with u2seg on a 250 x 370 crop (views not multiples of 32) instead of recording")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.padded_check:
        padded_check()
        return
    from pycocotools import mask as mask_utils

    cfg, model, tta = seeded_cups_tta(HEIGHT, WIDTH)
    state = {k: v for k, v in sorted(model.state_dict().items()) if v.is_floating_point()}
    out: dict[str, np.ndarray] = {
        "weight_names": np.array(list(state)), "weight_sums": np.array([float(v.double().sum()) for v in state.values()]),
        "weight_abs_sums": np.array([float(v.double().abs().sum()) for v in state.values()]),
    }
    meta = {"seed": SEED, "cls_score_scale": CLS_SCORE_SCALE, "k": K, "s": S, "images": list(IMAGES), "height": HEIGHT, "width": WIDTH,
            "scales": list(SCALES), "min_sizes": list(cfg.TEST.AUG.MIN_SIZES), "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": bool(cfg.TEST.AUG.FLIP), "confidence": CONFIDENCE, "tta_threshold": TTA_THRESHOLD,
            "nms_thresh": cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "rpn_nms_thresh": cfg.MODEL.RPN.NMS_THRESH, "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD,
            "cups": "visinf/cups 78fc273", "segments": []}
    with torch.no_grad():
        for n, rel in enumerate(IMAGES):
            image = load_crop(COCO_MINI / rel)
            captured = []
            reduce_masks = tta._reduce_pred_masks
            tta._reduce_pred_masks = lambda outputs, tfms: captured.append(reduce_masks(outputs, tfms)) or captured[-1]
            res = tta([{"image": image, "height": HEIGHT, "width": WIDTH}])[0]
            tta._reduce_pred_masks = reduce_masks
            inst = res["instances"]
            masks = inst.pred_masks.numpy().astype(bool)
            rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode("ascii") for m in masks]
            pan, segments = res["panoptic_seg"]
            out[f"{n}/boxes"] = inst.pred_boxes.tensor.numpy().astype(np.float32)
            out[f"{n}/scores"] = inst.scores.numpy().astype(np.float32)
            out[f"{n}/classes"] = inst.pred_classes.numpy().astype(np.int64)
            out[f"{n}/mask_rles"] = np.array(rles)
            out[f"{n}/mask_probs"] = captured[0][:, 0].numpy().astype(np.float16)  # before the empty-box filter
            sem = res["sem_seg"]
            out[f"{n}/sem_argmax"] = sem.argmax(dim=0).numpy().astype(np.uint8)
            out[f"{n}/sem_mean"] = sem.double().mean(dim=(1, 2)).numpy()
            gen = np.random.default_rng(n)
            ys, xs = gen.integers(0, HEIGHT, SAMPLES), gen.integers(0, WIDTH, SAMPLES)
            out[f"{n}/sem_yx"] = np.stack([ys, xs]).astype(np.int32)
            out[f"{n}/sem_samples"] = sem[:, ys, xs].numpy().astype(np.float32)
            out[f"{n}/panoptic"] = pan.numpy().astype(np.int32)
            meta["segments"].append([{k: (float(v) if isinstance(v, float) else int(v)) for k, v in s.items()}
                                     for s in segments])
            print(f"{rel}: {len(inst)} instances, scores {inst.scores.min().item() if len(inst) else 0:.3} .. "
                  f"{inst.scores.max().item() if len(inst) else 0:.3}, {len(segments)} segments")
    out["meta"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
