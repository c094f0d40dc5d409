"""A seeded STEGO checkpoint and seeded test images, built from numpy's ``default_rng`` only (the same bytes
on every machine and torch / timm version), for the STEGO inference fixture (tests/pseudo/data/README.md).

The recording script (run by hand, outside the repository) imports this module so that STEGO's own code
and the project see the same weights and images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: The fixture's model: a 2-block ViT (patch 8, 64 channels, 1 head), a 6-d code, 5 clusters.
EMBED, DEPTH, PATCH, DIM, K, GRID = 64, 2, 8, 6, 5, 28


def seeded_state_dict(seed: int = 0, embed: int = EMBED, depth: int = DEPTH, patch: int = PATCH, dim: int = DIM,
                      k: int = K, grid: int = GRID) -> dict[str, np.ndarray]:
    """LitUnsupervisedSegmenter-shaped ``state_dict`` (float32 arrays): DINO ViT ``net.model.*``, head
    ``net.cluster1/2``, ``cluster_probe``; patch embedding and head large enough that the image matters."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int, std: float = 0.02, mean: float = 0.0) -> np.ndarray:
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    sd = {"net.model.cls_token": rand(1, 1, embed), "net.model.pos_embed": rand(1, grid * grid + 1, embed, std=0.1),
          "net.model.patch_embed.proj.weight": rand(embed, 3, patch, patch, std=0.1),
          "net.model.patch_embed.proj.bias": rand(embed)}
    for b in range(depth):
        p = f"net.model.blocks.{b}."
        sd.update({p + "norm1.weight": rand(embed, std=0.1, mean=1.0), p + "norm1.bias": rand(embed),
                   p + "attn.qkv.weight": rand(3 * embed, embed, std=0.2), p + "attn.qkv.bias": rand(3 * embed),
                   p + "attn.proj.weight": rand(embed, embed, std=0.1), p + "attn.proj.bias": rand(embed),
                   p + "norm2.weight": rand(embed, std=0.1, mean=1.0), p + "norm2.bias": rand(embed),
                   p + "mlp.fc1.weight": rand(4 * embed, embed, std=0.1), p + "mlp.fc1.bias": rand(4 * embed),
                   p + "mlp.fc2.weight": rand(embed, 4 * embed, std=0.05), p + "mlp.fc2.bias": rand(embed)})
    sd.update({"net.model.norm.weight": rand(embed, std=0.1, mean=1.0), "net.model.norm.bias": rand(embed),
               "net.cluster1.0.weight": rand(dim, embed, 1, 1, std=0.3), "net.cluster1.0.bias": rand(dim, std=0.1),
               "net.cluster2.0.weight": rand(embed, embed, 1, 1, std=0.2), "net.cluster2.0.bias": rand(embed),
               "net.cluster2.2.weight": rand(dim, embed, 1, 1, std=0.2), "net.cluster2.2.bias": rand(dim),
               "cluster_probe.clusters": rand(k, dim, std=1.0), "linear_probe.weight": rand(k, dim, 1, 1),
               "linear_probe.bias": rand(k)})
    return sd


def write_seeded_checkpoint(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A Lightning-like checkpoint file (torch.save) of :func:`seeded_state_dict`; returns the arrays."""
    import torch

    sd = seeded_state_dict(seed)
    torch.save({"epoch": 0, "global_step": 1, "state_dict": {k: torch.from_numpy(v) for k, v in sd.items()},
                "hyper_parameters": {"n_classes": K}}, path)
    return sd


def seeded_image(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth RGB uint8 image with a few flat rectangles (regions the labels can follow)."""
    rng = np.random.default_rng(1000 + seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([128 + 100 * np.sin(6 * xx * rng.uniform(0.5, 2) + c + 4 * yy * rng.uniform(0.5, 2))
                    for c in range(3)], axis=-1)
    for _ in range(4):
        y0, x0 = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
        img[y0:y0 + int(rng.integers(8, height // 2)), x0:x0 + int(rng.integers(8, width // 2))] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


#: (seed, height, width) of the fixture images: landscape, portrait, small square.
FIXTURE_IMAGES = [(0, 72, 112), (1, 120, 80), (2, 60, 60)]
