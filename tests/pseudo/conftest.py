"""Synthetic pseudo-label inputs: images, manifest, feature shards and MaskCut fragments."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from u2seg.coco_format import instance_annotation
from u2seg.features import write_shard

# (height, width) of the synthetic images: non-square both ways to catch width/height swaps
SIZES = [(40, 64), (56, 32), (48, 48), (36, 60), (64, 40)]
GRID = 6  # dense grid 6 x 6
CHANNELS = 8
SHARD_SIZE = 2


@dataclass
class Synthetic:
    root: Path
    manifest: Path
    features: Path
    masks: Path
    images: list[dict]
    n_instances: int


def _masks_for(index: int, h: int, w: int) -> list[np.ndarray]:
    """Two or three rectangles per image; image 2 has none (stuff-only)."""
    if index == 2:
        return []
    out = []
    boxes = [(0.1, 0.1, 0.6, 0.7), (0.5, 0.4, 0.95, 0.9), (0.2, 0.5, 0.4, 0.8)][: 2 + index % 2]
    for y0, x0, y1, x1 in boxes:
        m = np.zeros((h, w), dtype=bool)
        m[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = True
        out.append(m)
    return out


def make_synthetic(root: Path, seed: int = 0) -> Synthetic:
    """Write 5 images (3 shards of 2), their manifest, feature shards and MaskCut fragments."""
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    images = []
    for i, (h, w) in enumerate(SIZES):
        arr = np.zeros((h, w, 3), dtype=np.uint8)
        arr[: h // 2] = (200, 60, 40)
        arr[h // 2:] = (30, 90, 200)
        Image.fromarray(arr).save(img_dir / f"img_{i}.png")
        images.append({"id": 100 + i, "file_name": f"img_{i}.png", "width": w, "height": h})
    manifest = {"dataset": {"kind": "images", "root": str(img_dir)}, "root": str(img_dir), "images": images,
                "annotations": None}
    (root / "manifest.json").write_text(json.dumps(manifest))
    feat_dir, mask_dir = root / "features", root / "maskcut"
    feat_dir.mkdir()
    mask_dir.mkdir()
    n_inst = 0
    ann_id = 1
    for s in range(0, len(images), SHARD_SIZE):
        shard_imgs = images[s:s + SHARD_SIZE]
        # two stuff "materials": top half direction e0, bottom half direction e1, plus noise
        dense = rng.normal(0, 0.1, size=(len(shard_imgs), CHANNELS, GRID, GRID)).astype(np.float32)
        dense[:, 0, : GRID // 2] += 1.0
        dense[:, 1, GRID // 2:] += 1.0
        glob = rng.normal(size=(len(shard_imgs), 16)).astype(np.float32)
        write_shard(feat_dir / f"shard_{s // SHARD_SIZE:05d}.zarr", dense, glob,
                    np.array([im["id"] for im in shard_imgs]),
                    np.array([[im["height"], im["width"]] for im in shard_imgs]),
                    {"backbone": "synthetic", "input_size": GRID * 8, "stride": 8,
                     "shard_index": s // SHARD_SIZE, "shard_size": SHARD_SIZE})
        anns = []
        for j, im in enumerate(shard_imgs):
            for m in _masks_for(s + j, im["height"], im["width"]):
                anns.append(instance_annotation(m, ann_id, im["id"], 1))
                ann_id += 1
        n_inst += len(anns)
        frag = {"images": shard_imgs, "annotations": anns, "categories": [{"id": 1, "name": "fg"}]}
        (mask_dir / f"shard_{s // SHARD_SIZE:05d}.json").write_text(json.dumps(frag))
    return Synthetic(root, root / "manifest.json", feat_dir, mask_dir, images, n_inst)


@pytest.fixture
def synthetic(tmp_path: Path) -> Synthetic:
    return make_synthetic(tmp_path / "data")
