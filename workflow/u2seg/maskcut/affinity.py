"""The MaskCut graph (docs/method.md §3.1): binarised cosine affinity between patch features.

Features are cast to float64 (shards store float16) and L2-normalised per patch. Only the
thresholded similarity S > tau matters, so it is computed with a float32 product and every pair
whose float32 value lies within a rounding-error bound of tau is recomputed in float64: the result
equals thresholding the float64 similarity, at about half the cost. Batched over a leading
dimension; any torch device.
"""
from __future__ import annotations

import numpy as np
import torch

# Unit roundoff of float32.
_U32 = 2.0 ** -24
# Pairs recomputed in float64 per chunk (bounds the gathered (pairs, C) temporaries).
_REFINE_CHUNK = 16384


def flatten_grid(features: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(..., C, h, w) grid -> float64 (..., C, h*w) in row-major patch order (token order of a ViT)."""
    t = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features))
    t = t.to(device=device, dtype=torch.float64)
    if t.ndim < 3:
        raise ValueError(f"expected (..., C, h, w) features, got shape {tuple(t.shape)}")
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


def normalize_columns(feats: torch.Tensor) -> torch.Tensor:
    """Unit-L2-normalise the columns (patches) of (..., C, n); all-zero columns stay zero."""
    norms = torch.linalg.vector_norm(feats, dim=-2, keepdim=True)
    return feats / torch.where(norms > 0, norms, torch.ones_like(norms))


def cosine_similarity(feats: torch.Tensor) -> torch.Tensor:
    """(..., C, n) features -> (..., n, n) float64 cosine similarity (0 for zero columns)."""
    f = normalize_columns(feats.to(torch.float64))
    return f.transpose(-1, -2) @ f


def similarity_above(feats: torch.Tensor, tau: float, block_rows: int = 512) -> torch.Tensor:
    """(B, C, n) features -> (B, n, n) bool ``cos(f_i, f_j) > tau``, as decided in float64.

    float32 product first; the error of a float32 dot product of two unit vectors of length C is at
    most about C * u32 (u32 = 2^-24), so pairs within 2 C u32 + 1e-6 of tau are recomputed in float64.
    Works on blocks of ``block_rows`` rows, so temporaries stay small even when many pairs are near tau.
    S is symmetric: each row block is computed from its diagonal onwards and mirrored below it, which
    halves the product (the float64 recomputation is symmetric too, so the result is exactly symmetric).
    """
    f64 = normalize_columns(feats.to(torch.float64))
    f32 = f64.to(torch.float32)
    rows64 = f64.transpose(-1, -2)  # (B, n, C)
    rows32 = f32.transpose(-1, -2)
    bsz, n = rows64.shape[:2]
    margin = 2.0 * f64.shape[-2] * _U32 + 1e-6
    above = torch.empty(bsz, n, n, dtype=torch.bool, device=feats.device)
    for b in range(bsz):
        for r0 in range(0, n, block_rows):
            r1 = min(r0 + block_rows, n)
            s32 = rows32[b, r0:r1] @ f32[b, :, r0:]  # (rows, n - r0): columns from the diagonal on
            blk = s32 > tau
            near = ((s32 - tau).abs_() <= margin).nonzero()
            for start in range(0, len(near), _REFINE_CHUNK):
                i, j = near[start:start + _REFINE_CHUNK].unbind(1)
                blk[i, j] = (rows64[b, r0 + i] * rows64[b, r0 + j]).sum(-1) > tau
            above[b, r0:r1, r0:] = blk
            above[b, r1:, r0:r1] = blk[:, r1 - r0:].T
    return above


def binarized_affinity(above: torch.Tensor, tau: float, eps: float,
                       painted: torch.Tensor | None = None) -> torch.Tensor:
    """A_ij = 1 if S_ij > tau else eps (method §3.1), with painted patches' features zeroed (method §3.4).

    ``above`` is ``S > tau`` (bool, (..., n, n); see ``similarity_above``); ``painted`` (..., n) bool
    marks patches whose features were set to zero: their cosine similarity with every patch
    (themselves included) is 0, so their edges become ``1 if 0 > tau else eps``.
    """
    one = torch.ones((), dtype=torch.float64, device=above.device)
    adj = torch.where(above, one, one * eps)
    if painted is not None and bool(painted.any()):
        value = 1.0 if 0.0 > tau else eps
        flat_adj = adj.reshape(-1, *adj.shape[-2:])
        for item, mask in zip(flat_adj, painted.reshape(-1, painted.shape[-1])):
            idx = mask.nonzero().squeeze(-1)
            if len(idx):
                item.index_fill_(0, idx, value).index_fill_(1, idx, value)
    return adj
