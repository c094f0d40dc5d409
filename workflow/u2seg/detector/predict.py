"""Inference: COCO results (bbox + segm), panoptic PNG + json (spec 7.3 fusion), semantic PNGs.

Categories follow the pseudo-labels: things 1..K (= label + 1), stuff K+1..K+S (semantic class c -> K + c).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import encode_mask, id2rgb, mask_bbox
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import output_size, resize_image
from u2seg.detector.model import ModelConfig, PanopticCascadeRCNN, build_model
from u2seg.detector.train import resolve_device
from u2seg.errors import UserError
from u2seg.images import load_rgb
from u2seg.manifest import image_path, image_stem, load_manifest
from u2seg.progress import ProgressLog

log = logging.getLogger(__name__)


@dataclass
class PredictConfig:
    """Inference settings (defaults: detectron2 / U2Seg test settings, spec 7.1 and 7.3)."""

    min_size: int = 800
    max_size: int = 1333
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    instance_score_thresh: float = 0.5  # panoptic fusion: instances below this score are not painted
    overlap_thresh: float = 0.5  # panoptic fusion: skip an instance when more of it than this is taken
    stuff_area_thresh: int = 4096  # panoptic fusion: minimum stuff segment area (pixels)
    batch_size: int = 1
    workers: int = 0
    device: str = "auto"


def load_model(path: str | Path, device: torch.device) -> tuple[PanopticCascadeRCNN, dict[str, Any]]:
    """Rebuild a model from a model file (its stored config) in eval mode."""
    obj = ckpt.load_model_file(path)
    cfg_dict = dict(obj["model_config"], backbone_weights=None)
    model = build_model(ModelConfig.from_dict(cfg_dict), load_pretrained=False)
    own = model.state_dict()
    missing = [k for k in own if k not in obj["model"] and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{path}: weights missing for {missing[:5]}")
    model.load_state_dict({k: v for k, v in obj["model"].items() if k in own}, strict=False)
    return model.to(device).eval(), obj


def categories(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Things 1..K (names from the model file) then stuff K+1..K+S."""
    cfg = obj["model_config"]
    k, s = int(cfg["num_classes"]), int(cfg["num_stuff"])
    names = {int(c["id"]): c.get("name", f"cluster_{int(c['id']) - 1}") for c in obj.get("categories", [])}
    things = [{"id": i + 1, "name": names.get(i + 1, f"cluster_{i}"), "isthing": 1, "supercategory": "thing"}
              for i in range(k)]
    stuff = [{"id": k + c, "name": f"stuff_{c}", "isthing": 0, "supercategory": "stuff"} for c in range(1, s + 1)]
    return things + stuff


# ------------------------------------------------------------------------------------ post-processing
def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """detectron2's ``paste_masks_in_image``: (N, M, M) probabilities -> (N, H, W) bool masks.

    Every image pixel centre (x + 0.5, y + 0.5) is mapped into its box, [x0, x1] -> [-1, 1], and the
    M x M mask is sampled there bilinearly (``grid_sample``, align_corners=False, zeros outside);
    a pixel is in the mask when the sample is >= ``threshold``. Each mask is sampled only on its box
    widened by one pixel (floor - 1 .. ceil + 1, as detectron2 on CPU): outside it a sample is < 0.5.
    """
    h, w = image_hw
    n = mask_probs.shape[0]
    out = torch.zeros((n, h, w), dtype=torch.bool, device=mask_probs.device)
    if n == 0:
        return out
    probs = mask_probs.float()[:, None]
    boxes = boxes.float()
    for i in range(n):
        box = boxes[i]
        x0i = max(int(torch.floor(box[0]).item()) - 1, 0)
        y0i = max(int(torch.floor(box[1]).item()) - 1, 0)
        x1i = min(int(torch.ceil(box[2]).item()) + 1, w)
        y1i = min(int(torch.ceil(box[3]).item()) + 1, h)
        if x1i <= x0i or y1i <= y0i:
            continue
        ys = torch.arange(y0i, y1i, device=probs.device, dtype=torch.float32) + 0.5
        xs = torch.arange(x0i, x1i, device=probs.device, dtype=torch.float32) + 0.5
        ys = (ys - box[1]) / (box[3] - box[1]) * 2 - 1
        xs = (xs - box[0]) / (box[2] - box[0]) * 2 - 1
        gx = xs[None, :].expand(ys.numel(), xs.numel())
        gy = ys[:, None].expand(ys.numel(), xs.numel())
        grid = torch.stack([gx, gy], dim=2)[None]
        sampled = F.grid_sample(probs[i:i + 1], grid, align_corners=False)[0, 0]
        out[i, y0i:y1i, x0i:x1i] = sampled >= threshold
    return out


def postprocess(result: dict[str, torch.Tensor], input_hw: tuple[int, int], orig_hw: tuple[int, int],
                mask_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """detectron2's ``detector_postprocess`` + ``sem_seg_postprocess``: boxes scaled to the original
    image and clipped, detections whose box became empty dropped, masks pasted there (bool, p >=
    ``mask_threshold``), semantic logits resized bilinearly and arg-maxed (uint8)."""
    h, w = orig_hw
    sy, sx = h / input_hw[0], w / input_hw[1]
    boxes = result["boxes"].float().clone()
    boxes[:, 0::2] *= sx
    boxes[:, 1::2] *= sy
    boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=h)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    boxes = boxes[keep]
    masks = paste_masks(result["mask_probs"][keep], boxes, (h, w), mask_threshold).cpu().numpy()
    out = {"boxes": boxes.cpu().numpy(), "scores": result["scores"][keep].float().cpu().numpy(),
           "labels": result["labels"][keep].cpu().numpy().astype(np.int64), "masks": masks}
    if "sem_seg" in result:
        logits = F.interpolate(result["sem_seg"][None], size=(h, w), mode="bilinear", align_corners=False)[0]
        out["semantic"] = logits.argmax(0).to(torch.uint8).cpu().numpy()
    return out


def panoptic_fusion(masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, semantic: np.ndarray | None,
                    num_classes: int, instance_score_thresh: float = 0.5, overlap_thresh: float = 0.5,
                    stuff_area_thresh: int = 4096) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """detectron2's panoptic combination (spec 7.3) -> (segment id map int32 (H, W), segments_info).

    Instances by descending score until score < ``instance_score_thresh``; an instance is skipped
    when more than ``overlap_thresh`` of its mask is already taken, else its free part is added.
    Then every semantic class c >= 1 on still-free pixels becomes one stuff segment (category K + c)
    if its area is at least ``stuff_area_thresh``. Thing category = label + 1.
    """
    pan = np.zeros(masks.shape[1:], dtype=np.int32)  # masks: (N, H, W), N may be 0
    segments: list[dict[str, Any]] = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < instance_score_thresh:
            break
        rows = np.flatnonzero(masks[i].any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(masks[i].any(axis=0))
        crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # the mask's box: same result
        mask, pan_crop = masks[i][crop], pan[crop]  # (pan_crop is a view: painting it paints pan)
        area = int(mask.sum())
        taken = mask & (pan_crop > 0)
        if taken.sum() / area > overlap_thresh:
            continue
        free = mask & (pan_crop == 0)
        if not free.any():
            continue
        seg_id = len(segments) + 1
        pan_crop[free] = seg_id
        x, y, bw, bh = mask_bbox(free)
        segments.append({"id": seg_id, "category_id": int(labels[i]) + 1, "iscrowd": 0, "isthing": 1,
                         "score": float(scores[i]), "area": int(free.sum()),
                         "bbox": [x + float(cols[0]), y + float(rows[0]), bw, bh]})
    if semantic is not None:
        free = pan == 0  # stuff regions of different classes are disjoint: one free map serves them all
        areas = np.bincount(semantic[free], minlength=1)
        for c in np.flatnonzero(areas):  # ascending, as np.unique
            area = int(areas[c])
            if c == 0 or area < stuff_area_thresh:
                continue
            region = (semantic == c) & free
            seg_id = len(segments) + 1
            pan[region] = seg_id
            segments.append({"id": seg_id, "category_id": num_classes + int(c), "iscrowd": 0, "isthing": 0,
                             "area": area, "bbox": mask_bbox(region)})
    return pan, segments


# ------------------------------------------------------------------------------------ running
class _ImageSet(torch.utils.data.Dataset):
    """Manifest images loaded and resized for the test scale."""

    def __init__(self, manifest: dict[str, Any], cfg: PredictConfig):
        self.manifest = manifest
        self.images = manifest["images"]
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[dict[str, Any], torch.Tensor, tuple[int, int]]:
        im = self.images[i]
        rgb = load_rgb(image_path(self.manifest, im))
        h, w = rgb.shape[:2]
        resized = resize_image(rgb, output_size(h, w, self.cfg.min_size, self.cfg.max_size))
        return im, torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1), (h, w)


def _collate(items: list[Any]) -> list[Any]:
    return items


def predict_manifest(model: PanopticCascadeRCNN, manifest: dict[str, Any], cfg: PredictConfig,
                     device: torch.device, progress: bool = True) -> Iterator[tuple[dict[str, Any], dict]]:
    """Yield (manifest image, post-processed prediction) for every image, in manifest order."""
    model.set_test_params(cfg.score_thresh, cfg.nms_thresh, cfg.detections_per_image)
    loader = torch.utils.data.DataLoader(_ImageSet(manifest, cfg), batch_size=cfg.batch_size, shuffle=False,
                                         num_workers=cfg.workers, collate_fn=_collate)
    use_amp = device.type == "cuda"
    prog = ProgressLog(log, "predict", len(manifest["images"]), "img", period=30.0)
    with tqdm(total=len(manifest["images"]), desc="predict", disable=not progress, mininterval=5.0) as bar:
        for batch in loader:
            images = [t.to(device).float() for _, t, _ in batch]
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                results = model(images)
            for (im, t, orig), res in zip(batch, results):
                yield im, postprocess(res, tuple(t.shape[-2:]), orig, cfg.mask_threshold)
            bar.update(len(batch))
            prog.update(len(batch))


def run_predict(weights: str | Path, manifest_path: str | Path, out_dir: str | Path, cfg: PredictConfig,
                progress: bool = True) -> dict[str, Any]:
    """Write ``instances_results.json``, ``panoptic.json`` + ``panoptic/``, ``semantic/``, ``summary.json``."""
    device = resolve_device(cfg.device)
    model, obj = load_model(weights, device)
    k = int(obj["model_config"]["num_classes"])
    manifest = load_manifest(manifest_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    has_sem = model.sem_head is not None
    with atomic_path(out / "panoptic", directory=True) as pan_dir, \
            atomic_path(out / "semantic", directory=True) as sem_dir:
        for im, pred in predict_manifest(model, manifest, cfg, device, progress):
            image_id = int(im["id"])
            for box, score, label, mask in zip(pred["boxes"], pred["scores"], pred["labels"], pred["masks"]):
                x0, y0, x1, y1 = (float(v) for v in box)
                results.append({"image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                "score": round(float(score), 5), "segmentation": encode_mask(mask)})
            semantic = pred.get("semantic")
            pan, segments = panoptic_fusion(pred["masks"], pred["scores"], pred["labels"], semantic, k,
                                            cfg.instance_score_thresh, cfg.overlap_thresh, cfg.stuff_area_thresh)
            stem = image_stem(im)
            _save_png(pan_dir / f"{stem}.png", id2rgb(pan))
            if semantic is not None:
                _save_png(sem_dir / f"{stem}.png", semantic)
            annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
    seconds = time.perf_counter() - t0
    write_json(out / "instances_results.json", results)
    images = [{k2: im[k2] for k2 in ("id", "file_name", "width", "height")} for im in manifest["images"]]
    write_json(out / "panoptic.json", {"info": {"description": "u2seg predictions", "weights": str(weights)},
                                       "images": images, "annotations": annotations,
                                       "categories": categories(obj)})
    summary = {"images": len(images), "detections": len(results), "semantic_head": has_sem,
               "seconds": round(seconds, 1), "seconds_per_image": round(seconds / max(len(images), 1), 3),
               "device": str(device), "weights": str(weights), "config": cfg.__dict__}
    write_json(out / "summary.json", summary, indent=2)
    log.info("predicted %d images: %d detections (%.2f s/image)", len(images), len(results),
             summary["seconds_per_image"])
    return summary


def _save_png(path: Path, array: np.ndarray) -> None:
    """Plain PNG write inside an already-atomic folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
