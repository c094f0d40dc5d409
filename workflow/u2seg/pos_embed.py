"""ViT absolute position embeddings resampled to the input's patch grid the way each official
repository does it (the backbone record's ``pos_embed`` field names the rule).

* ``dino`` (facebookresearch/dino ``interpolate_pos_encoding``) and ``dinov2`` (facebookresearch/dinov2
  without registers: ``interpolate_offset=0.1``, ``interpolate_antialias=False``): the square source grid
  (M x M) is interpolated bicubically by *scale factors* ``(h0 + 0.1) / M`` and ``(w0 + 0.1) / M``
  (h0, w0: the input's patch grid), without antialiasing. The scale factors, not the output size, set
  the sampling positions, so the result differs from a resize to (h0, w0).
* ``dinov2_reg`` (DINOv2 with registers, released with ``interpolate_offset=0``,
  ``interpolate_antialias=True``): bicubic resize to the output size (h0, w0) with antialiasing.
* all three return the embedding unchanged when the input has exactly N patch tokens and a square
  image (``npatch == N and w == h`` in the official code, w and h in pixels), and resample otherwise
  (so a non-square input with h0 * w0 == N is still resampled);
* the CLS token's embedding is never resampled; register tokens have none.
* ``rope`` (DINOv3): rotary embeddings computed for any grid, no absolute embedding to resample;
  ``timm``: timm's own ``resample_abs_pos_embed`` (test backbones only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PosEmbedRule:
    """How an official repository resamples its patch position embeddings."""

    offset: float  # added to the target grid before dividing by the source grid; 0: resize to size
    antialias: bool


RULES: dict[str, PosEmbedRule] = {
    "dino": PosEmbedRule(offset=0.1, antialias=False),
    "dinov2": PosEmbedRule(offset=0.1, antialias=False),
    "dinov2_reg": PosEmbedRule(offset=0.0, antialias=True),
}
# record values that resample nothing themselves (rotary embeddings; timm's own resampling)
PASSTHROUGH = ("rope", "timm")
POS_EMBED_KINDS = (*RULES, *PASSTHROUGH)


def resample_patch_pos_embed(patch_pos: torch.Tensor, height: int, width: int, patch: int,
                             rule: PosEmbedRule) -> torch.Tensor:
    """The (1, h0 * w0, D) patch position embeddings for an input of ``height`` x ``width`` pixels.

    ``patch_pos``: (1, N, D) embeddings of the square pre-training grid (CLS excluded).
    """
    n, dim = patch_pos.shape[1], patch_pos.shape[2]
    h0, w0 = height // patch, width // patch
    if h0 * w0 == n and height == width:
        return patch_pos
    side = int(math.sqrt(n))
    if side * side != n:
        raise ValueError(f"position embeddings of {n} patches are not a square grid")
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if rule.offset:
        scale = (float(h0 + rule.offset) / side, float(w0 + rule.offset) / side)
        out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=rule.antialias)
    else:
        out = F.interpolate(grid, size=(h0, w0), mode="bicubic", antialias=rule.antialias)
    if tuple(out.shape[-2:]) != (h0, w0):
        raise ValueError(f"resampled grid {tuple(out.shape[-2:])} != patch grid {(h0, w0)}")
    return out.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim).to(patch_pos.dtype)
