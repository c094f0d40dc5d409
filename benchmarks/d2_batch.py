"""`u2seg predict`'s inference at several batch sizes vs detectron2's DefaultPredictor (one image at a time).

U2Seg's config (``u2seg_R50_300.yaml``, K = 300) with seeded random weights (detectron2's model saved by
DetectionCheckpointer, imported with ``u2seg import-d2``), test size 800 / 1333, CPU float32. Default
images: three coco-mini val images of mixed orientation (a portrait and a landscape that pad to
1344 x 1344 together, then a 4:3 landscape). Per batch size and image: detections of detectron2 found
among ours (same class, box IoU > 0.99) and the share of pixels with the same panoptic category
(things 1..K, stuff K + c, void 0). Run it on another checkout's code with ``PYTHONPATH=<that>/workflow:.``.

Needs detectron2 installed (the parity tests install it: ``pytest tests/detector/test_d2_parity.py``).

  PYTHONPATH=workflow:. python benchmarks/d2_batch.py [--batch-sizes 1 2 3] [--images A.jpg B.jpg ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VAL = REPO.parent / "shared" / "data" / "coco-mini" / "val2017"
IMAGES = ("000000125952.jpg", "000000051712.jpg", "000000005001.jpg")  # 358x640, 640x368, 640x480


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of two (N, 4) / (M, 4) x0 y0 x1 y1 box arrays."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, nargs="+", default=[VAL / n for n in IMAGES])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--k", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model as d2_build_model

    from tests.detector.d2_env import randomize_, u2seg_d2_cfg
    from u2seg.detector.d2_import import import_checkpoint
    from u2seg.detector.params import PredictConfig
    from u2seg.detector.predict import image_outputs, load_model, predict_images

    torch.manual_seed(0)
    cfg = u2seg_d2_cfg(args.k, args.min_size, args.max_size)
    d2_model = d2_build_model(cfg).eval()
    randomize_(d2_model, seed=13)
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(d2_model, save_dir=tmp).save("model_final")
        cfg.MODEL.WEIGHTS = str(Path(tmp) / "model_final.pth")
        predictor = DefaultPredictor(cfg)
        import_checkpoint(Path(tmp) / "model_final.pth", Path(tmp) / "u2seg.pth")
        model, _ = load_model(Path(tmp) / "u2seg.pth", torch.device("cpu"))
    k = args.k
    reference = []
    with torch.no_grad():
        for path in args.images:
            out = predictor(read_image(str(path), format="BGR"))
            inst = out["instances"]
            seg, info = out["panoptic_seg"]
            cat = np.zeros(seg.shape, dtype=np.int64)
            for s in info:
                cat[seg.numpy() == s["id"]] = s["category_id"] + 1 if s["isthing"] else k + s["category_id"]
            reference.append((inst.pred_boxes.tensor.numpy(), inst.pred_classes.numpy() + 1, cat))
    report: dict = {"images": [p.name for p in args.images], "k": k, "size": [args.min_size, args.max_size], "batch_sizes": {}}
    for bs in args.batch_sizes:
        pcfg = dataclasses.replace(PredictConfig(), batch_size=bs, device="cpu", min_size=args.min_size,
                                   max_size=args.max_size)
        per_image = []
        for i, pred in predict_images(model, [str(p) for p in args.images], pcfg, torch.device("cpu"), False):
            outputs = image_outputs(pred, i, k, pcfg)
            d2_boxes, d2_cls, d2_cat = reference[i]
            iou = box_iou(d2_boxes, pred.boxes) if len(pred.boxes) else np.zeros((len(d2_boxes), 0))
            found = int((((d2_cls[:, None] == pred.labels[None, :] + 1) & (iou > 0.99)).any(axis=1)).sum())
            cat = np.zeros(outputs.panoptic.shape, dtype=np.int64)
            for s in outputs.segments:
                cat[outputs.panoptic == s["id"]] = s["category_id"]
            per_image.append({"image": args.images[i].name, "found": found, "detections_d2": len(d2_boxes),
                              "detections": len(pred.boxes), "same_pixels": int((cat == d2_cat).sum()),
                              "pixels": int(cat.size)})
        found, total = sum(r["found"] for r in per_image), sum(r["detections_d2"] for r in per_image)
        same, pixels = sum(r["same_pixels"] for r in per_image), sum(r["pixels"] for r in per_image)
        report["batch_sizes"][bs] = {
            "found": f"{found}/{total}", "panoptic_pixels_same": round(100 * same / pixels, 4),
            "per_image_pixels_same": [round(100 * r["same_pixels"] / r["pixels"], 4) for r in per_image],
            "per_image_found": [f"{r['found']}/{r['detections_d2']}" for r in per_image]}
        print(json.dumps({bs: report["batch_sizes"][bs]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
