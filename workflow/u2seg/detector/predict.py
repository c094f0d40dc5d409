"""Inference: COCO results (bbox + segm), panoptic PNG + json (docs/method.md §7.3 fusion), semantic PNGs.

Categories follow the pseudo-labels: things 1..K (= label + 1), stuff K+1..K+S (semantic class c -> K + c).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from pycocotools import mask as mask_utils
import torch.nn.functional as F
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import id2rgb
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import output_size, resize_image
from u2seg.detector.model import ModelConfig, PanopticCascadeRCNN, build_model
from u2seg.detector.params import PredictConfig  # noqa: F401 (re-exported)
from u2seg.detector.tta import tta_predict
from u2seg.device import resolve_device
from u2seg.errors import UserError
from u2seg.images import load_rgb
from u2seg.manifest import image_path, image_stem, load_manifest
from u2seg.progress import ProgressLog

log = logging.getLogger(__name__)


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
# Full-size outputs are built one mask at a time, on each mask's box: memory is a few bytes per pixel of
# the image (the panoptic id map, one semantic channel, one mask's box), never (masks x H x W) or
# (classes x H x W); measured per-pixel figures in rules/common.smk (PREDICT_*) and docs/benchmarks.md.
PASTE_CHUNK_PIXELS = 1 << 20  # pixels of one grid_sample call when pasting a mask (rows of its box)
BAND_PIXELS = 1 << 22  # pixels of one row band of the full-size panoptic / semantic outputs


@dataclass
class MaskCrop:
    """A binary mask of an ``image_hw`` image stored on its box: ``mask`` covers rows y0.. and columns x0.."""

    y0: int
    x0: int
    mask: np.ndarray  # bool (box height, box width)
    image_hw: tuple[int, int]

    def full(self) -> np.ndarray:
        """The (H, W) bool mask."""
        out = np.zeros(self.image_hw, dtype=bool)
        out[self.y0:self.y0 + self.mask.shape[0], self.x0:self.x0 + self.mask.shape[1]] = self.mask
        return out


def paste_mask(mask_prob: torch.Tensor, box: torch.Tensor, image_hw: tuple[int, int],
               threshold: float = 0.5, chunk_pixels: int = PASTE_CHUNK_PIXELS) -> MaskCrop:
    """detectron2's ``paste_masks_in_image`` for one (M, M) probability map, on its box only.

    Every image pixel centre (x + 0.5, y + 0.5) is mapped into the box, [x0, x1] -> [-1, 1], and the
    M x M mask is sampled there bilinearly (``grid_sample``, align_corners=False, zeros outside);
    a pixel is in the mask when the sample is >= ``threshold``. The mask is sampled only on its box
    widened by one pixel (floor - 1 .. ceil + 1, as detectron2 on CPU): outside it a sample is < 0.5.
    Rows are sampled in chunks of about ``chunk_pixels`` (each pixel is sampled on its own: same result).
    """
    h, w = image_hw
    box = box.float()
    x0i = max(int(torch.floor(box[0]).item()) - 1, 0)
    y0i = max(int(torch.floor(box[1]).item()) - 1, 0)
    x1i = min(int(torch.ceil(box[2]).item()) + 1, w)
    y1i = min(int(torch.ceil(box[3]).item()) + 1, h)
    if x1i <= x0i or y1i <= y0i:
        return MaskCrop(0, 0, np.zeros((0, 0), dtype=bool), image_hw)
    prob = mask_prob.float()[None, None]
    ys = torch.arange(y0i, y1i, device=prob.device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0i, x1i, device=prob.device, dtype=torch.float32) + 0.5
    ys = (ys - box[1]) / (box[3] - box[1]) * 2 - 1
    xs = (xs - box[0]) / (box[2] - box[0]) * 2 - 1
    out = np.zeros((y1i - y0i, x1i - x0i), dtype=bool)
    step = max(1, chunk_pixels // xs.numel())
    for a in range(0, ys.numel(), step):
        band = ys[a:a + step]
        grid = torch.stack([xs[None, :].expand(band.numel(), xs.numel()),
                            band[:, None].expand(band.numel(), xs.numel())], dim=2)[None]
        out[a:a + band.numel()] = (F.grid_sample(prob, grid, align_corners=False)[0, 0] >= threshold).cpu().numpy()
    return MaskCrop(y0i, x0i, out, image_hw)


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """detectron2's ``paste_masks_in_image``: (N, M, M) probabilities -> (N, H, W) bool masks
    (:func:`paste_mask` of each; for small images and tests: it holds N x H x W)."""
    out = np.zeros((mask_probs.shape[0], *image_hw), dtype=bool)
    for i in range(mask_probs.shape[0]):
        crop = paste_mask(mask_probs[i], boxes[i], image_hw, threshold)
        out[i, crop.y0:crop.y0 + crop.mask.shape[0], crop.x0:crop.x0 + crop.mask.shape[1]] = crop.mask
    return torch.from_numpy(out).to(mask_probs.device)


def semantic_argmax(logits: torch.Tensor, image_hw: tuple[int, int]) -> np.ndarray:
    """``sem_seg_postprocess`` + arg-max: (S, h, w) logits resized bilinearly to ``image_hw`` (align_corners
    False) -> uint8 (H, W) class map, one class channel at a time (a running max: the first maximal class
    wins, as ``argmax``), so that only one full-size channel is held."""
    best = best_val = None
    for c in range(logits.shape[0]):
        v = F.interpolate(logits[None, c:c + 1], size=image_hw, mode="bilinear", align_corners=False)[0, 0]
        if best is None:
            best_val, best = v, torch.zeros(image_hw, dtype=torch.uint8, device=v.device)
            continue
        better = v > best_val
        best[better] = c
        torch.maximum(best_val, v, out=best_val)
        del v, better
    return best.cpu().numpy()


@dataclass
class Prediction:
    """One image's post-processed detections at its original size; masks are pasted on demand
    (:meth:`mask`), one at a time, so that a huge image never holds (N, H, W)."""

    boxes: np.ndarray  # (N, 4) float32 x0 y0 x1 y1, clipped to the image
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64
    mask_probs: torch.Tensor  # (N, M, M)
    image_hw: tuple[int, int]
    threshold: float
    semantic: np.ndarray | None  # uint8 (H, W) or None

    def mask(self, i: int) -> MaskCrop:
        """Mask ``i`` pasted on its box (:func:`paste_mask`)."""
        return paste_mask(self.mask_probs[i], torch.from_numpy(self.boxes[i]), self.image_hw, self.threshold)


def postprocess_image(result: dict[str, torch.Tensor], input_hw: tuple[int, int], orig_hw: tuple[int, int],
                      mask_threshold: float = 0.5) -> Prediction:
    """detectron2's ``detector_postprocess`` + ``sem_seg_postprocess``: boxes scaled to the original
    image and clipped, detections whose box became empty dropped, masks pasted there on demand (bool,
    p >= ``mask_threshold``), semantic logits resized bilinearly and arg-maxed (uint8)."""
    h, w = orig_hw
    sy, sx = h / input_hw[0], w / input_hw[1]
    boxes = result["boxes"].float().clone()
    boxes[:, 0::2] *= sx
    boxes[:, 1::2] *= sy
    boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=h)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    semantic = semantic_argmax(result["sem_seg"], (h, w)) if "sem_seg" in result else None
    return Prediction(boxes[keep].cpu().numpy(), result["scores"][keep].float().cpu().numpy(),
                      result["labels"][keep].cpu().numpy().astype(np.int64), result["mask_probs"][keep],
                      (h, w), mask_threshold, semantic)


def postprocess(result: dict[str, torch.Tensor], input_hw: tuple[int, int], orig_hw: tuple[int, int],
                mask_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """:func:`postprocess_image` with every mask pasted: a dict of boxes, scores, labels, masks
    (N, H, W) and semantic (for small images and tests)."""
    pred = postprocess_image(result, input_hw, orig_hw, mask_threshold)
    masks = np.zeros((len(pred.scores), *orig_hw), dtype=bool)
    for i in range(len(pred.scores)):
        crop = pred.mask(i)
        masks[i, crop.y0:crop.y0 + crop.mask.shape[0], crop.x0:crop.x0 + crop.mask.shape[1]] = crop.mask
    out = {"boxes": pred.boxes, "scores": pred.scores, "labels": pred.labels, "masks": masks}
    if pred.semantic is not None:
        out["semantic"] = pred.semantic
    return out


def crop_rle(crop: MaskCrop) -> dict[str, Any]:
    """Compressed COCO RLE (ascii counts, size [h, w]) of the full-size mask of ``crop``, computed on
    the full-height columns of its box only (same string as ``encode_mask`` of :meth:`MaskCrop.full`)."""
    h, w = crop.image_hw
    ch, cw = crop.mask.shape
    counts: list[int] = [h * w] if cw == 0 else []
    if cw:
        cols = np.zeros((cw, h), dtype=bool)  # column-major order of the box's columns
        cols[:, crop.y0:crop.y0 + ch] = crop.mask.T
        flat = cols.ravel()
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        counts = ([0] if flat[0] else []) + runs  # runs alternate zeros, ones, ... starting with zeros
        counts[0] += crop.x0 * h
        tail = (w - crop.x0 - cw) * h
        if tail:
            if len(counts) % 2:  # the last run is zeros
                counts[-1] += tail
            else:
                counts.append(tail)
    rle = mask_utils.frPyObjects({"counts": counts, "size": [h, w]}, h, w)
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def _tight_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns of the tight box of a bool mask (None when empty), without listing its pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _bbox(mask: np.ndarray, y_off: int = 0, x_off: int = 0) -> list[float]:
    """[x, y, w, h] of a bool mask (as ``mask_bbox``; zeros when empty), offset by (x_off, y_off)."""
    box = _tight_box(mask)
    if box is None:
        return [0.0, 0.0, 0.0, 0.0]
    ys, xs = box
    return [float(xs.start + x_off), float(ys.start + y_off), float(xs.stop - xs.start), float(ys.stop - ys.start)]


def fuse_panoptic(mask_of: Callable[[int], MaskCrop | None], scores: np.ndarray, labels: np.ndarray,
                  semantic: np.ndarray | None, image_hw: tuple[int, int], num_classes: int,
                  instance_score_thresh: float = 0.5, overlap_thresh: float = 0.5,
                  stuff_area_thresh: int = 4096) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """detectron2's panoptic combination (method §7.3) -> (segment id map int32 (H, W), segments_info).

    Instances by descending score until score < ``instance_score_thresh``; an instance is skipped
    when more than ``overlap_thresh`` of its mask is already taken, else its free part is added.
    Then every semantic class c >= 1 on still-free pixels becomes one stuff segment (category K + c)
    if its area is at least ``stuff_area_thresh``. Thing category = label + 1. ``mask_of(i)`` gives
    instance i on a box that holds it (or None when empty); each is asked for once, in score order.
    """
    h, w = image_hw
    pan = np.zeros(image_hw, dtype=np.int32)
    segments: list[dict[str, Any]] = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < instance_score_thresh:
            break
        crop = mask_of(int(i))
        area = 0 if crop is None else int(crop.mask.sum())
        if area == 0:
            continue
        mask = crop.mask
        pan_crop = pan[crop.y0:crop.y0 + mask.shape[0], crop.x0:crop.x0 + mask.shape[1]]  # a view
        taken = mask & (pan_crop > 0)
        if taken.sum() / area > overlap_thresh:
            continue
        free = mask & (pan_crop == 0)
        if not free.any():
            continue
        seg_id = len(segments) + 1
        pan_crop[free] = seg_id
        segments.append({"id": seg_id, "category_id": int(labels[i]) + 1, "iscrowd": 0, "isthing": 1,
                         "score": float(scores[i]), "area": int(free.sum()), "bbox": _bbox(free, crop.y0, crop.x0)})
    if semantic is not None:
        # stuff regions of different classes are disjoint: one free map serves them all; areas by row bands
        step = max(1, BAND_PIXELS // max(w, 1))
        areas = np.zeros(256, dtype=np.int64)
        for a in range(0, h, step):
            band = semantic[a:a + step][pan[a:a + step] == 0]
            areas += np.bincount(band, minlength=256)[:256]
        for c in np.flatnonzero(areas):  # ascending, as np.unique
            area = int(areas[c])
            if c == 0 or area < stuff_area_thresh:
                continue
            region = (semantic == c) & (pan == 0)
            seg_id = len(segments) + 1
            pan[region] = seg_id
            segments.append({"id": seg_id, "category_id": num_classes + int(c), "iscrowd": 0, "isthing": 0,
                             "area": area, "bbox": _bbox(region)})
            del region
    return pan, segments


def panoptic_fusion(masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, semantic: np.ndarray | None,
                    num_classes: int, instance_score_thresh: float = 0.5, overlap_thresh: float = 0.5,
                    stuff_area_thresh: int = 4096) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`fuse_panoptic` of full (N, H, W) masks (each taken on its tight box)."""
    def mask_of(i: int) -> MaskCrop | None:
        box = _tight_box(masks[i])
        if box is None:
            return None
        return MaskCrop(box[0].start, box[1].start, masks[i][box], masks.shape[1:])
    return fuse_panoptic(mask_of, scores, labels, semantic, masks.shape[1:], num_classes,
                         instance_score_thresh, overlap_thresh, stuff_area_thresh)


# ------------------------------------------------------------------------------------ running
def _rgb(source: Any) -> np.ndarray:
    """The RGB uint8 array of an image source (a file through :func:`u2seg.images.load_rgb`)."""
    if isinstance(source, np.ndarray):
        return source if source.flags.writeable else source.copy()
    return load_rgb(source)


class _ImageSet(torch.utils.data.Dataset):
    """Images (files or arrays) loaded and resized for the test scale."""

    def __init__(self, sources: list[Any], cfg: PredictConfig):
        self.sources = sources
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, tuple[int, int]]:
        rgb = _rgb(self.sources[i])
        h, w = rgb.shape[:2]
        # (test-time augmentation resizes the original image to each of its scales itself)
        resized = rgb if self.cfg.tta else resize_image(rgb, output_size(h, w, self.cfg.min_size, self.cfg.max_size))
        return i, torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1), (h, w)


def _identity(item: Any) -> Any:
    return item


# Images read ahead of the oldest one not yet yielded, in batches of predict.batch_size: past this, that
# image's bucket runs as a smaller batch (bounds the images and predictions held for the output order).
LOOKAHEAD_BATCHES = 8


def padded_shape(hw: tuple[int, int], size_divisibility: int) -> tuple[int, int]:
    """The (H, W) a resized image of size ``hw`` is zero-padded to when it is alone in a forward pass."""
    d = max(int(size_divisibility), 1)
    return -(-int(hw[0]) // d) * d, -(-int(hw[1]) // d) * d


def shape_batches(items: Iterable[tuple[int, Any]], batch_size: int, lookahead: int) -> Iterator[list[Any]]:
    """Group ``(key, item)`` pairs, indexed 0, 1, ... in arrival order, into batches of one key each.

    A bucket per key fills in arrival order and runs when it holds ``batch_size`` items. When more than
    ``lookahead`` items have arrived since the oldest item not yet batched, that item's bucket runs as
    it is (a smaller batch); at the end the leftover buckets run, oldest first. Every batch holds items
    of one key only, each item is in exactly one batch, and items of a key keep their order.
    """
    buckets: dict[Any, list[tuple[int, Any]]] = {}
    pending: dict[int, Any] = {}  # arrival number -> key, of the items still in a bucket (ascending)
    for n, (key, item) in enumerate(items):
        bucket = buckets.setdefault(key, [])
        bucket.append((n, item))
        pending[n] = key
        if len(bucket) >= batch_size:
            yield _take(buckets, pending, key)
        while pending and n - next(iter(pending)) >= lookahead:
            yield _take(buckets, pending, pending[next(iter(pending))])
    while pending:
        yield _take(buckets, pending, pending[next(iter(pending))])


def _take(buckets: dict[Any, list[tuple[int, Any]]], pending: dict[int, Any], key: Any) -> list[Any]:
    """Remove and return the items of bucket ``key``."""
    bucket = buckets.pop(key)
    for n, _ in bucket:
        del pending[n]
    return [item for _, item in bucket]


def predict_images(model: PanopticCascadeRCNN, sources: list[Any], cfg: PredictConfig, device: torch.device,
                   progress: bool = True, what: str = "predict") -> Iterator[tuple[int, Prediction]]:
    """Yield (index, post-processed prediction) for every image source (file or RGB array), in order.

    A forward pass of ``cfg.batch_size`` images pads them to one size, and the padding changes the RPN's
    proposals (anchors are clipped to the padded image); so only images with the same padded shape
    (:func:`padded_shape`) are batched together (:func:`shape_batches`), and every image's result is its
    one-image result, whatever the batch size and the order of the images. With ``cfg.tta``, CUPS's
    test-time augmentation (:func:`u2seg.detector.tta.tta_predict`).
    """
    model.set_test_params(cfg.score_thresh, cfg.nms_thresh, cfg.detections_per_image)
    tta = cfg.tta_params() if cfg.tta else None
    loader = torch.utils.data.DataLoader(_ImageSet(sources, cfg), batch_size=None, shuffle=False,
                                         num_workers=cfg.workers, collate_fn=_identity)
    d = model.cfg.size_divisibility
    keyed = ((padded_shape(t.shape[-2:], d), (i, t, orig)) for i, t, orig in loader)
    batch_size = max(int(cfg.batch_size), 1)
    use_amp = device.type == "cuda"
    prog = ProgressLog(log, what, len(sources), "img", period=30.0)
    done: dict[int, Prediction] = {}
    next_out = 0
    with tqdm(total=len(sources), desc=what, disable=not progress, mininterval=5.0) as bar:
        for batch in shape_batches(keyed, batch_size, LOOKAHEAD_BATCHES * batch_size):
            images = [t.to(device).float() for _, t, _ in batch]
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                results = model(images) if tta is None else tta_predict(model, images, tta)
            for (i, t, orig), res in zip(batch, results):
                done[i] = postprocess_image(res, tuple(t.shape[-2:]), orig, cfg.mask_threshold)
            bar.update(len(batch))
            prog.update(len(batch))
            while next_out in done:
                yield next_out, done.pop(next_out)
                next_out += 1
    if done:  # every index is yielded above (sources are numbered 0..n-1)
        raise RuntimeError(f"predictions left over: {sorted(done)[:5]}")


def predict_manifest(model: PanopticCascadeRCNN, manifest: dict[str, Any], cfg: PredictConfig,
                     device: torch.device, progress: bool = True,
                     what: str = "predict") -> Iterator[tuple[dict[str, Any], Prediction]]:
    """Yield (manifest image, post-processed prediction) for every image, in manifest order."""
    images = manifest["images"]
    for i, pred in predict_images(model, [image_path(manifest, im) for im in images], cfg, device, progress, what):
        yield images[i], pred


@dataclass
class ImageOutputs:
    """One image's outputs in the written formats: COCO results (bbox + RLE segm), panoptic id map + segments."""

    results: list[dict[str, Any]]  # COCO instance results, one per detection (detection order)
    panoptic: np.ndarray  # int32 (H, W) segment ids, 0 = void
    segments: list[dict[str, Any]]  # COCO panoptic segments_info
    semantic: np.ndarray | None  # uint8 (H, W) or None


def fusion_score_thresh(cfg: PredictConfig) -> float:
    """The panoptic fusion's instance threshold: ``instance_score_thresh``, or with TTA its detection
    threshold ``tta_score_thresh`` (CUPS's TTA model fuses at ``TEST.INSTANCE_SCORE_THRESH``)."""
    return cfg.tta_score_thresh if cfg.tta else cfg.instance_score_thresh


def image_outputs(pred: Prediction, image_id: int, num_classes: int, cfg: PredictConfig) -> ImageOutputs:
    """Panoptic fusion + COCO results of one prediction; each mask is pasted once (RLE-encoded, then fused)."""
    rles: list[dict[str, Any] | None] = [None] * len(pred.scores)

    def mask_of(i: int) -> MaskCrop:
        crop = pred.mask(i)
        rles[i] = crop_rle(crop)
        return crop

    pan, segments = fuse_panoptic(mask_of, pred.scores, pred.labels, pred.semantic, pred.image_hw, num_classes,
                                  fusion_score_thresh(cfg), cfg.overlap_thresh, cfg.stuff_area_thresh)
    results = []
    for i, (box, score, label) in enumerate(zip(pred.boxes, pred.scores, pred.labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        results.append({"image_id": image_id, "category_id": int(label) + 1,
                        "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                        "score": round(float(score), 5),
                        "segmentation": rles[i] if rles[i] is not None else crop_rle(pred.mask(i))})
    return ImageOutputs(results, pan, segments, pred.semantic)


def write_predictions(model: PanopticCascadeRCNN, obj: dict[str, Any], manifest: dict[str, Any],
                      out_dir: str | Path, cfg: PredictConfig, device: torch.device, weights: str | Path,
                      progress: bool = True,
                      on_image: Callable[[dict[str, Any], Prediction, ImageOutputs], None] | None = None,
                      what: str = "predict") -> dict[str, Any]:
    """Predict every manifest image and write ``instances_results.json``, ``panoptic.json`` + ``panoptic/``,
    ``semantic/``, ``summary.json``; ``on_image(image, prediction, outputs)`` is called once per image;
    ``what`` names the progress lines."""
    k = int(obj["model_config"]["num_classes"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    has_sem = model.sem_head is not None
    with atomic_path(out / "panoptic", directory=True) as pan_dir, \
            atomic_path(out / "semantic", directory=True) as sem_dir:
        for im, pred in predict_manifest(model, manifest, cfg, device, progress, what):
            outputs = image_outputs(pred, int(im["id"]), k, cfg)
            results.extend(outputs.results)
            stem = image_stem(im)
            _save_png(pan_dir / f"{stem}.png", _pan_rgb(outputs.panoptic))
            if pred.semantic is not None:
                _save_png(sem_dir / f"{stem}.png", pred.semantic)
            annotations.append({"image_id": int(im["id"]), "file_name": f"{stem}.png",
                                "segments_info": outputs.segments})
            if on_image is not None:
                on_image(im, pred, outputs)
            del outputs
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


def run_predict(weights: str | Path, manifest_path: str | Path, out_dir: str | Path, cfg: PredictConfig,
                progress: bool = True) -> dict[str, Any]:
    """Write ``instances_results.json``, ``panoptic.json`` + ``panoptic/``, ``semantic/``, ``summary.json``."""
    device = resolve_device(cfg.device, local_rank=0)
    model, obj = load_model(weights, device)
    return write_predictions(model, obj, load_manifest(manifest_path), out_dir, cfg, device, weights, progress)


def _pan_rgb(pan: np.ndarray) -> np.ndarray:
    """``id2rgb`` of a panoptic id map, by row bands (its int64 temporaries stay small)."""
    rgb = np.empty(pan.shape + (3,), dtype=np.uint8)
    step = max(1, BAND_PIXELS // max(pan.shape[1], 1))
    for a in range(0, pan.shape[0], step):
        rgb[a:a + step] = id2rgb(pan[a:a + step])
    return rgb


def _save_png(path: Path, array: np.ndarray) -> None:
    """Plain PNG write inside an already-atomic folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
