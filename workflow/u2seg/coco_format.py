"""COCO instance and panoptic format helpers (one source of truth for RLE, ids and boxes)."""
from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode a binary (H, W) mask as compressed COCO RLE with ascii counts and size [h, w]."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    rle["size"] = [int(rle["size"][0]), int(rle["size"][1])]
    return rle


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode an RLE (compressed or uncompressed) or polygon segmentation to a bool (H, W) mask."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight [x, y, w, h] box of a binary mask (all zeros for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def instance_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int,
                        score: float | None = None) -> dict[str, Any]:
    """A COCO instance annotation whose area and bbox are computed from the RLE itself."""
    rle = encode_mask(mask)
    coded = dict(rle, counts=rle["counts"].encode("ascii"))
    ann: dict[str, Any] = {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": int(category_id),
        "iscrowd": 0,
        "area": int(mask_utils.area(coded)),
        "bbox": [float(v) for v in mask_utils.toBbox(coded)],
        "segmentation": rle,
    }
    if score is not None:
        ann["score"] = float(score)
    return ann


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Panoptic id map (H, W) -> RGB uint8 (H, W, 3) with id = R + 256 G + 256^2 B."""
    ids = np.asarray(ids, dtype=np.int64)
    rgb = np.zeros(ids.shape + (3,), dtype=np.uint8)
    rem = ids.copy()
    for c in range(3):
        rgb[..., c] = rem % 256
        rem //= 256
    return rgb


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> panoptic id map int64 (H, W)."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def instances_json(images: list[dict], annotations: list[dict], categories: list[dict],
                   info: dict | None = None) -> dict[str, Any]:
    """Assemble a COCO instances dict."""
    return {
        "info": info or {"description": "u2seg"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
