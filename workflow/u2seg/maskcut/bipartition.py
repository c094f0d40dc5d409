"""Bipartition and foreground choice (docs/method.md §3.3) on the h x w patch grid."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from u2seg.maskcut.params import FOREGROUND_RULES

# Entries within this fraction of max|x| of the maximum count as tied (see `first_argmax`).
TIE_RTOL = 1e-9


def first_argmax(values: np.ndarray, scale: float, rtol: float = TIE_RTOL) -> int:
    """Index of the first entry within ``rtol * scale`` of the maximum of a flat array.

    Painted (zeroed) patches have exactly equal eigenvector entries in exact arithmetic; which of them
    is "the" argmax is decided by rounding noise, differently by each solver. Taking the first of
    the near-ties makes the seed deterministic and solver-independent.
    """
    top = values.max()
    return int(np.flatnonzero(values >= top - rtol * scale)[0])


def corner_count(side: np.ndarray) -> int:
    """How many of the 4 corners of the (h, w) grid belong to ``side``."""
    return int(side[0, 0]) + int(side[0, -1]) + int(side[-1, 0]) + int(side[-1, -1])


def choose_side(x: np.ndarray, rule: str = "faithful") -> tuple[np.ndarray, int]:
    """Split the (h, w) eigenvector grid at its mean; return (foreground side, flat seed index).

    faithful (CutLER): P_hi = {x > mean}, seed0 = argmax |x|; take the complement P_lo when P_hi
    holds >= 3 grid corners or seed0 is not in P_hi, else P_hi; the seed is then argmax(-x) resp.
    argmax(x). Its result depends on the sign of x.
    sign_invariant: the side holding seed0, unless it holds >= 3 corners (then the other side); the
    seed is the chosen side's extreme entry. Flipping x does not change its result.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.ravel()
    hi = x > flat.mean()
    scale = float(np.abs(flat).max())
    seed0 = first_argmax(np.abs(flat), scale)
    if rule == "faithful":
        take_lo = corner_count(hi) >= 3 or not hi.flat[seed0]
    elif rule == "sign_invariant":
        take_lo = _sign_invariant_takes_lo(hi, bool(hi.flat[seed0]))
    else:
        raise ValueError(f"unknown foreground rule {rule!r} (choose from {', '.join(FOREGROUND_RULES)})")
    if take_lo:
        return ~hi, first_argmax(-flat, scale)
    return hi, first_argmax(flat, scale)


def _sign_invariant_takes_lo(hi: np.ndarray, seed_in_hi: bool) -> bool:
    """Whether the sign-invariant rule ends on P_lo: the seed side, or its complement at >= 3 corners."""
    seed_side = hi if seed_in_hi else ~hi
    if corner_count(seed_side) < 3:  # keep the seed's side
        return not seed_in_hi
    return seed_in_hi  # the seed's side is background: take the other one


def seed_component(side: np.ndarray, seed: int) -> np.ndarray:
    """The 4-connected component of ``side`` that contains the flat ``seed`` (empty if the seed is outside)."""
    labels, _ = ndimage.label(side)
    lab = labels.flat[seed]
    if lab == 0:
        return np.zeros_like(side, dtype=bool)
    return labels == lab


def foreground_mask(x: np.ndarray, rule: str = "faithful") -> np.ndarray:
    """(h, w) eigenvector grid -> (h, w) bool patch mask of the foreground object (method §3.3)."""
    side, seed = choose_side(x, rule)
    return seed_component(side, seed)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two bool masks; 0 when both are empty."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 0.0
    return float(np.logical_and(a, b).sum() / union)
