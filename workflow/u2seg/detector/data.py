"""Training data: pseudo-labels (COCO instances + semantic PNGs) -> augmented samples -> model inputs.

A sample is one image with its instance masks (N, H, W), thing labels 0..K-1 (``category_id - 1``)
and its semantic target (H, W) uint8 (0 = thing, 1..stuff = stuff, 255 = void).
Augmentation: detectron2's ``ResizeShortestEdge`` (short side drawn from ``min_sizes``, long side
capped at ``max_size``) + horizontal flip, then optional CutLER copy-paste within the batch (docs/method.md §7.2).
Batches are a pure function of (seed, iteration), so a resumed run sees exactly the same data.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from u2seg.coco_format import decode_mask
from u2seg.errors import UserError
from u2seg.images import load_rgb
from u2seg.manifest import image_path, image_stem, load_manifest
from u2seg.params import STUFF_CLUSTERS

log = logging.getLogger(__name__)

IGNORE = 255


@dataclass
class Sample:
    """One image with its targets (numpy, host memory)."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    masks: np.ndarray  # bool (N, H, W)
    labels: np.ndarray  # int64 (N,), 0..K-1
    semantic: np.ndarray  # uint8 (H, W)
    image_id: int = 0

    @property
    def boxes(self) -> np.ndarray:
        """Boxes (N, 4) x1, y1, x2, y2 of the masks (x2 = last column + 1, as COCO's w = x2 - x1)."""
        return masks_to_boxes(self.masks)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (N, 4) float32 (x1, y1, x2 + 1, y2 + 1) of binary masks; zeros for empty masks."""
    out = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.any(m, axis=1), np.any(m, axis=0)
        if not rows.any():
            continue
        y0, y1 = np.flatnonzero(rows)[[0, -1]]
        x0, x1 = np.flatnonzero(cols)[[0, -1]]
        out[i] = (x0, y0, x1 + 1, y1 + 1)
    return out


def drop_empty(sample: Sample) -> Sample:
    """Remove instances whose mask has no pixel left."""
    if sample.masks.shape[0] == 0:
        return sample
    keep = sample.masks.reshape(sample.masks.shape[0], -1).any(axis=1)
    if keep.all():
        return sample
    return Sample(sample.image, sample.masks[keep], sample.labels[keep], sample.semantic, sample.image_id)


# ------------------------------------------------------------------------------------ dataset
class PseudoLabelDataset:
    """Images of a COCO instances json (pseudo-labels) with their semantic PNGs and manifest paths."""

    def __init__(self, instances_json: str | Path, manifest_path: str | Path, semantic_dir: str | Path | None,
                 num_classes: int, num_stuff: int = STUFF_CLUSTERS, max_side: int = 20000):
        self.num_classes = num_classes
        self.num_stuff = num_stuff
        self.max_side = max_side
        self.instances_path = Path(instances_json)  # (the resume fingerprint digests what these name)
        self.manifest_path = Path(manifest_path)
        manifest = load_manifest(manifest_path)
        self.manifest = manifest
        by_id = {int(im["id"]): im for im in manifest["images"]}
        with open(instances_json) as fh:
            coco = json.load(fh)
        self.categories: list[dict[str, Any]] = list(coco.get("categories") or [])
        images = coco.get("images") or []
        if not images:
            raise UserError(f"{instances_json}: no images to train on")
        self.images: list[dict[str, Any]] = []
        for im in images:
            entry = by_id.get(int(im["id"]))
            if entry is None:
                raise UserError(f"{instances_json}: image id {im['id']} is not in the manifest {manifest_path}")
            self.images.append(entry)
        self.anns: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in self.images}
        for ann in coco.get("annotations", []):
            cat = int(ann["category_id"])
            if not 1 <= cat <= num_classes:
                raise UserError(
                    f"{instances_json}: category_id {cat} outside 1..K={num_classes}; the pseudo-labels were made "
                    "with another clustering.k than the detector's num_classes")
            if ann.get("iscrowd", 0):
                continue
            if int(ann["image_id"]) in self.anns:
                self.anns[int(ann["image_id"])].append(ann)
        self.semantic_dir = Path(semantic_dir) if semantic_dir else None
        missing = 0
        if self.semantic_dir is not None:
            missing = sum(not (self.semantic_dir / f"{image_stem(im)}.png").is_file() for im in self.images)
        if missing:
            log.warning("%d of %d images have no semantic PNG in %s: their semantic target is void (255)",
                        missing, len(self.images), self.semantic_dir)
        n_ann = sum(len(v) for v in self.anns.values())
        log.info("dataset: %d images, %d instances, K=%d", len(self.images), n_ann, num_classes)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        """The full-resolution sample ``index``."""
        im = self.images[index]
        image = load_rgb(image_path(self.manifest, im), max_side=self.max_side)
        h, w = image.shape[:2]
        anns = self.anns[int(im["id"])]
        masks = np.zeros((len(anns), h, w), dtype=bool)
        for i, ann in enumerate(anns):
            m = decode_mask(ann["segmentation"], h, w)
            if m.shape != (h, w):
                raise UserError(f"annotation {ann.get('id')} of image {im['id']}: mask {m.shape} vs image {(h, w)}")
            masks[i] = m
        labels = np.array([int(a["category_id"]) - 1 for a in anns], dtype=np.int64)
        semantic = np.full((h, w), IGNORE, dtype=np.uint8)
        if self.semantic_dir is not None:
            path = self.semantic_dir / f"{image_stem(im)}.png"
            if path.is_file():
                sem = np.asarray(Image.open(path))
                if sem.shape != (h, w):
                    raise UserError(f"{path}: semantic PNG is {sem.shape[1]}x{sem.shape[0]}, image is {w}x{h}")
                bad = (sem != IGNORE) & (sem > self.num_stuff)
                if bad.any():
                    raise UserError(f"{path}: semantic labels above stuff.k={self.num_stuff} (found {sem[bad].max()})")
                semantic = sem.astype(np.uint8)
        return drop_empty(Sample(image, masks, labels, semantic, int(im["id"])))


# ------------------------------------------------------------------------------------ augmentation
def output_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) of detectron2's ``ResizeShortestEdge``: short side -> ``short``, long side capped at
    ``max_size``, each rounded half up (the same float operations as detectron2, so the same sizes)."""
    size = short * 1.0
    scale = size / min(h, w)
    if h < w:
        new_h, new_w = size, scale * w
    else:
        new_h, new_w = scale * h, size
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> ``size`` = (h, w) with PIL bilinear, as detectron2's ``ResizeTransform`` does
    (PIL's bilinear filter widens with the scale when shrinking, unlike OpenCV's INTER_LINEAR)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))  # (writable copy)


def resize_labels(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a stack (N, H, W) or a single (H, W) label/mask array."""
    if arr.shape[-2:] == size:
        return arr
    squeeze = arr.ndim == 2
    stack = arr[None] if squeeze else arr
    if stack.shape[0] == 0:
        return np.zeros((0,) + size, dtype=arr.dtype)
    t = torch.from_numpy(np.ascontiguousarray(stack).astype(np.uint8))[None].float()
    out = F.interpolate(t, size=size, mode="nearest-exact")[0].to(torch.uint8).numpy().astype(arr.dtype)
    return out[0] if squeeze else out


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize image (bilinear), masks and semantic map (nearest) to ``size`` = (h, w)."""
    h, w = size
    if sample.image.shape[:2] == (h, w):
        return sample
    image = resize_image(sample.image, (h, w))
    return drop_empty(Sample(image, resize_labels(sample.masks, size), sample.labels,
                             resize_labels(sample.semantic, size), sample.image_id))


def hflip(sample: Sample) -> Sample:
    """Horizontal flip of image and targets."""
    return Sample(np.ascontiguousarray(sample.image[:, ::-1]), np.ascontiguousarray(sample.masks[:, :, ::-1]),
                  sample.labels, np.ascontiguousarray(sample.semantic[:, ::-1]), sample.image_id)


def augment(sample: Sample, rng: np.random.Generator, min_sizes: list[int], max_size: int,
            flip: bool = True) -> Sample:
    """Multi-scale resize (short side drawn from ``min_sizes``) + random horizontal flip."""
    short = int(min_sizes[int(rng.integers(len(min_sizes)))])
    sample = resize_sample(sample, output_size(*sample.image.shape[:2], short, max_size))
    if flip and rng.random() < 0.5:
        sample = hflip(sample)
    return sample


def copy_paste(target: Sample, source: Sample, rng: np.random.Generator, min_scale: float = 0.3,
               max_scale: float = 1.0, max_occlusion: float = 0.5) -> Sample:
    """Paste random instances of ``source`` onto ``target`` (CutLER copy-paste, method §7.2).

    1..n-1 source instances (1 if n = 1) are chosen; the source image and masks are rescaled by
    r ~ U(min_scale, max_scale) times the factor that fits them into the target, and placed at a
    random offset. A pasted object is dropped when it would hide at least ``max_occlusion`` of an
    existing target object. Target masks lose their occluded pixels (empty ones are dropped); the
    semantic target becomes 0 (thing) under pasted objects. Boxes follow from the masks.
    """
    n = source.masks.shape[0]
    if n == 0:
        return target
    count = 1 if n == 1 else int(rng.integers(1, n))
    chosen = np.sort(rng.choice(n, size=count, replace=False))
    th, tw = target.image.shape[:2]
    sh, sw = source.image.shape[:2]
    r = float(rng.uniform(min_scale, max_scale))
    fit = min(th / sh, tw / sw)
    ph, pw = max(1, min(th, int(round(sh * fit * r)))), max(1, min(tw, int(round(sw * fit * r))))
    y0 = int(rng.integers(0, th - ph + 1))
    x0 = int(rng.integers(0, tw - pw + 1))
    src_img = cv2.resize(source.image, (pw, ph), interpolation=cv2.INTER_LINEAR)
    src_masks = resize_labels(source.masks[chosen], (ph, pw))
    pasted = np.zeros((count, th, tw), dtype=bool)
    pasted[:, y0:y0 + ph, x0:x0 + pw] = src_masks
    keep = pasted.reshape(count, -1).any(axis=1)
    if target.masks.shape[0] and keep.any():
        t_flat = target.masks.reshape(target.masks.shape[0], -1).astype(np.float32)
        p_flat = pasted.reshape(count, -1).astype(np.float32)
        inter = p_flat @ t_flat.T  # (count, n_target)
        t_area = np.maximum(t_flat.sum(axis=1), 1.0)
        keep &= ~((inter / t_area[None]) >= max_occlusion).any(axis=1)
    if not keep.any():
        return target
    pasted, labels = pasted[keep], source.labels[chosen][keep]
    union = pasted.any(axis=0)
    image = target.image.copy()
    canvas = np.zeros_like(image)
    canvas[y0:y0 + ph, x0:x0 + pw] = src_img
    image[union] = canvas[union]
    semantic = target.semantic.copy()
    semantic[union] = 0
    old_masks = target.masks & ~union[None]
    out = Sample(image, np.concatenate([old_masks, pasted]), np.concatenate([target.labels, labels]),
                 semantic, target.image_id)
    return drop_empty(out)


# ------------------------------------------------------------------------------------ batches
@dataclass
class BatchConfig:
    """How training batches are drawn and augmented."""

    batch_size: int = 2
    seed: int = 0
    min_sizes: list[int] = field(default_factory=lambda: [640, 672, 704, 736, 768, 800])
    max_size: int = 1333
    flip: bool = True
    copy_paste: bool = False
    copy_paste_rate: float = 1.0
    copy_paste_min_scale: float = 0.3
    copy_paste_max_scale: float = 1.0


class IterationBatches(torch.utils.data.Dataset):
    """Map-style dataset over iterations: item ``it`` = this rank's augmented samples of batch ``it``.

    The global sample order is a chain of seeded permutations (one per epoch); image ``j`` of batch
    ``it`` goes to rank ``j % world``. Every random draw is seeded by (seed, iteration, slot).
    """

    def __init__(self, dataset: PseudoLabelDataset, cfg: BatchConfig, rank: int = 0, world: int = 1):
        if cfg.batch_size % world:
            raise UserError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")
        self.dataset = dataset
        self.cfg = cfg
        self.rank = rank
        self.world = world
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2**62

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.dataset))}
        return self._perms[epoch]

    def indices(self, iteration: int) -> list[int]:
        """Dataset indices of the global batch ``iteration``."""
        n, b = len(self.dataset), self.cfg.batch_size
        out = []
        for pos in range(iteration * b, (iteration + 1) * b):
            out.append(int(self._perm(pos // n)[pos % n]))
        return out

    def __getitem__(self, iteration: int) -> list[Sample]:
        cfg = self.cfg
        slots = list(range(self.rank, cfg.batch_size, self.world))
        idx = self.indices(iteration)
        samples = []
        for slot in slots:
            rng = np.random.default_rng([cfg.seed, iteration, slot])
            samples.append(augment(self.dataset.load(idx[slot]), rng, cfg.min_sizes, cfg.max_size, cfg.flip))
        if cfg.copy_paste:
            rng = np.random.default_rng([cfg.seed, iteration, 1_000_003 + self.rank])
            sources = samples[::-1]
            out = []
            for target, source in zip(samples, sources):
                if rng.random() < cfg.copy_paste_rate:
                    target = copy_paste(target, source, rng, cfg.copy_paste_min_scale, cfg.copy_paste_max_scale)
                out.append(target)
            samples = out
        return samples


def to_model_inputs(samples: list[Sample], device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    """Images (float 0..255, (3, H, W)) and targets (boxes, labels, masks, sem_seg) on ``device``."""
    images, targets = [], []
    for s in samples:
        images.append(torch.from_numpy(s.image).permute(2, 0, 1).to(device, non_blocking=True).float())
        targets.append({
            "boxes": torch.from_numpy(s.boxes).to(device),
            "labels": torch.from_numpy(s.labels.astype(np.int64)).to(device),
            "masks": torch.from_numpy(s.masks.astype(np.uint8)).to(device),
            "sem_seg": torch.from_numpy(s.semantic.astype(np.int64)).to(device),
        })
    return images, targets
