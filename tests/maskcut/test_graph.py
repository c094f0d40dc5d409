"""Affinity (docs/method.md §3.1) and bipartition / foreground rule (method §3.3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from u2seg.maskcut.affinity import (binarized_affinity, cosine_similarity, flatten_grid, normalize_columns,
                                    similarity_above)
from u2seg.maskcut.bipartition import (choose_side, corner_count, first_argmax, foreground_mask, mask_iou,
                                       seed_component)


def _reference_affinity(feats: np.ndarray, tau: float, eps: float) -> np.ndarray:
    """Method §3.1 written out: L2-normalise columns (zero stays zero), S = F^T F, binarise."""
    f = feats.astype(np.float64)
    norms = np.linalg.norm(f, axis=0)
    f = f / np.where(norms > 0, norms, 1.0)
    s = f.T @ f
    return np.where(s > tau, 1.0, eps)


@pytest.mark.parametrize("tau", [0.15, -0.2])
def test_painted_affinity_equals_zeroed_features(tau):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(16, 5, 6)).astype(np.float16)  # shards store float16
    painted = np.zeros((5, 6), dtype=bool)
    painted[1:3, 2:5] = True
    zeroed = feats.astype(np.float64).reshape(16, -1).copy()
    zeroed[:, painted.ravel()] = 0.0
    above = similarity_above(flatten_grid(feats[None]), tau)
    got = binarized_affinity(above, tau, 1e-5, torch.from_numpy(painted.reshape(1, -1)))[0].numpy()
    want = _reference_affinity(zeroed, tau, 1e-5)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).all()
    # painted rows: cosine 0 with everything -> eps when tau >= 0, 1 when tau < 0
    assert set(np.unique(got[painted.ravel()])) == ({1e-5} if tau >= 0 else {1.0})
    np.testing.assert_array_equal(binarized_affinity(above, tau, 1e-5)[0].numpy(),
                                  _reference_affinity(feats.reshape(16, -1), tau, 1e-5))


def test_threshold_near_tau_is_decided_in_float64():
    """Pairs whose cosine is within float32 rounding of tau get the float64 decision."""
    rng = np.random.default_rng(0)
    dim, tau = 384, 0.15
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))  # random rotation: no exact float32 values
    cols = [basis[:, 0]]
    for delta in (3e-8, -3e-8, 1e-7, -1e-7, 2e-6, -2e-6, 0.0):
        c = tau + delta
        cols.append(c * basis[:, 0] + np.sqrt(1 - c * c) * basis[:, 1 + len(cols)])
    cols.append(np.zeros(dim))  # a painted / zero patch
    feats = torch.from_numpy(np.stack(cols, axis=1) * rng.uniform(0.5, 3.0, size=len(cols)))[None]
    want = cosine_similarity(feats) > tau
    np.testing.assert_array_equal(similarity_above(feats, tau).numpy(), want.numpy())
    assert want[0, 0, 1] and not want[0, 0, 2] and not want[0, 0, 7]  # tau +- 3e-8 resolved, tau itself not above
    f32 = normalize_columns(feats).float()
    assert ((f32.transpose(-1, -2) @ f32 > tau) != want).any()  # float32 alone gets some of them wrong
    # random features: identical to thresholding the float64 similarity
    feats = torch.from_numpy(rng.normal(size=(2, 64, 300)))
    np.testing.assert_array_equal(similarity_above(feats, 0.05).numpy(), (cosine_similarity(feats) > 0.05).numpy())


def test_flatten_grid_is_row_major_token_order():
    feats = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    flat = flatten_grid(feats)
    assert flat.dtype == torch.float64 and flat.shape == (2, 12)
    assert flat[0, 5].item() == feats[0, 1, 1]  # patch (row 1, col 1) is token 1 * w + 1


def test_faithful_rule_cases():
    x = -np.ones((4, 5))
    x[1:3, 1:3] = 3.0  # a centred object with the largest |x|: P_hi, seed inside
    assert foreground_mask(x).sum() == 4 and foreground_mask(x)[1, 1]
    # background on the high side (4 corners) -> the complement is taken, seed = argmax(-x)
    side, seed = choose_side(-x, "faithful")
    assert corner_count(-x > (-x).mean()) == 4
    assert np.array_equal(side, x > x.mean()) and np.unravel_index(seed, x.shape)[0] in (1, 2)
    # seed0 on the low side (largest |x| is negative) -> the low side
    y = np.full((4, 5), 0.2)
    y[0:2, 0:2] = -5.0
    side, seed = choose_side(y, "faithful")
    assert side[0, 0] and side.sum() == 4 and seed == 0


def test_sign_invariant_rule_and_where_faithful_differs():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(size=(6, 7))
        np.testing.assert_array_equal(foreground_mask(x, "sign_invariant"), foreground_mask(-x, "sign_invariant"))
    # seed0 in P_lo, and P_lo holds >= 3 corners: faithful keeps P_lo (the background),
    # sign_invariant takes the other side
    x = np.full((5, 5), -1.0)
    x[2, 2] = -3.0  # seed0 (largest |x|) in the background, which is P_lo
    x[0:2, 3:5] = 2.0
    faithful = foreground_mask(x, "faithful")
    invariant = foreground_mask(x, "sign_invariant")
    assert faithful[0, 0] and faithful.sum() == 21  # the background component
    assert invariant.sum() == 4 and invariant[0, 3]
    np.testing.assert_array_equal(foreground_mask(-x, "faithful"), invariant)  # the other sign: agree
    with pytest.raises(ValueError, match="foreground rule"):
        choose_side(x, "largest")


def test_seed_component_is_4_connected_and_ties_take_the_first():
    side = np.zeros((4, 4), dtype=bool)
    side[0, 0] = side[1, 1] = side[1, 2] = True  # (0,0) touches (1,1) only diagonally
    comp = seed_component(side, 1 * 4 + 1)
    assert comp.sum() == 2 and not comp[0, 0]
    assert not seed_component(side, 3 * 4 + 3).any()  # seed outside the side -> empty
    v = np.array([0.1, 0.7, 0.7 - 1e-13, 0.7 + 1e-13])
    assert first_argmax(v, 0.7) == 1


def test_non_square_grid_corners():
    side = np.zeros((3, 7), dtype=bool)
    side[0, 6] = side[2, 0] = side[2, 6] = True
    assert corner_count(side) == 3
    assert mask_iou(side, side) == 1.0 and mask_iou(side, ~side) == 0.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_threshold_in_row_blocks_and_with_zero_features():
    """Block-wise evaluation equals the one-shot one; all-zero features at tau = 0 (every pair 'near')."""
    rng = np.random.default_rng(2)
    feats = torch.from_numpy(rng.normal(size=(2, 16, 50)))
    feats[:, :, 5:20] = 0.0
    for tau in (0.0, 0.3):
        want = (cosine_similarity(feats) > tau).numpy()
        blocks = similarity_above(feats, tau, block_rows=7)
        np.testing.assert_array_equal(blocks.numpy(), want)
        assert torch.equal(blocks, blocks.transpose(-1, -2))  # upper half computed, lower mirrored
        np.testing.assert_array_equal(similarity_above(feats, tau).numpy(), want)
    assert not similarity_above(feats, 0.0)[0, 5:20].any()  # cosine 0 with a zero patch is not > 0
