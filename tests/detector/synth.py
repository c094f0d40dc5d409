"""Tiny synthetic pseudo-labels on disk (images, manifest, instances json, semantic PNGs) for tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from u2seg.coco_format import instance_annotation
from u2seg.detector.model import ModelConfig

K = 3
STUFF = 4


def tiny_model_config(**overrides) -> ModelConfig:
    """A small, fast model (random backbone) with the real architecture."""
    cfg = dict(num_classes=K, num_stuff=STUFF, backbone_weights=None, fpn_channels=32, box_fc_dim=64,
               mask_conv_dim=16, sem_conv_dim=16, sem_norm_groups=4, roi_batch_per_image=32,
               rpn_batch_per_image=64, rpn_pre_nms_topk_train=100, rpn_post_nms_topk_train=50,
               rpn_pre_nms_topk_test=100, rpn_post_nms_topk_test=50, anchor_sizes=[8, 16, 32, 64, 128])
    cfg.update(overrides)
    return ModelConfig(**cfg)


def make_dataset(root: Path, n_images: int = 3, h: int = 64, w: int = 96, seed: int = 0) -> dict[str, Path]:
    """Write images/, manifest.json, instances.json and semantic/ under ``root``; return their paths."""
    rng = np.random.default_rng(seed)
    img_dir, sem_dir = root / "images", root / "semantic"
    img_dir.mkdir(parents=True, exist_ok=True)
    sem_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        img[h // 2:] += 80  # two "stuff" regions: top and bottom halves
        sem = np.ones((h, w), dtype=np.uint8)
        sem[h // 2:] = 2
        sem[:2] = 255  # a void strip
        for j in range(2 + i % 2):
            bh, bw = int(rng.integers(12, 28)), int(rng.integers(14, 36))
            y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            mask = np.zeros((h, w), dtype=bool)
            mask[y0:y0 + bh, x0:x0 + bw] = True
            img[mask] = rng.integers(120, 255, size=3, dtype=np.uint8)
            sem[mask] = 0
            anns.append(instance_annotation(mask, len(anns) + 1, i + 1, 1 + (i + j) % K))
        name = f"img_{i:02d}.png"
        Image.fromarray(img).save(img_dir / name)
        Image.fromarray(sem).save(sem_dir / f"img_{i:02d}.png")
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    manifest = {"dataset": {"kind": "images"}, "root": str(img_dir), "images": images, "annotations": None}
    (root / "manifest.json").write_text(json.dumps(manifest))
    cats = [{"id": c + 1, "name": f"cluster_{c}"} for c in range(K)]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return {"manifest": root / "manifest.json", "instances": root / "instances.json", "semantic": sem_dir,
            "images": img_dir}


def stage_ingested(workdir: Path, n_images: int = 2) -> dict[str, Path]:
    """Synthetic data under ``workdir/data`` plus a finished ingest of it as dataset `samples` in
    ``workdir/results`` (manifest + skipped list), so that a dry run resolves the whole DAG."""
    import shutil

    data = make_dataset(workdir / "data", n_images=n_images)
    ds_dir = workdir / "results" / "samples"
    ds_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(data["manifest"], ds_dir / "manifest.json")
    (ds_dir / "skipped.json").write_text("[]")
    return data
