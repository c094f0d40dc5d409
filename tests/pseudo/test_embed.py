"""Instance embeddings: exact mask pooling on the dense grid, crops for crop_cls."""
from __future__ import annotations

import numpy as np
import torch

from u2seg.pseudo.instances.embed import (crop_embeddings, crop_instance, mask_weights, overlap_matrix,
                                pooled_embeddings, resize_center_crop)


def test_overlap_matrix_rows_cover_cells():
    m = overlap_matrix(3, 7)  # 3 cells over 7 pixels: each cell is 7/3 px
    np.testing.assert_allclose(m.sum(axis=1) * 7 / 3, 7 / 3)  # every cell fully covered
    np.testing.assert_allclose(m.sum(axis=0), 3 / 7)  # every pixel counted once (in cell units)
    np.testing.assert_allclose(overlap_matrix(4, 2)[:, 0], [0.5 * 2, 0.5 * 2, 0, 0])  # upsampling


def test_mask_weights_non_square_image():
    # image 20 x 40 (h x w) on a 2 x 4 grid: every cell is 10 x 10 px
    mask = np.zeros((20, 40), dtype=bool)
    mask[0:10, 30:40] = True  # exactly cell (0, 3)
    mask[10:15, 0:10] = True  # half of cell (1, 0)
    w = mask_weights(mask, 2, 4)
    expected = np.zeros((2, 4))
    expected[0, 3] = 1.0
    expected[1, 0] = 0.5
    np.testing.assert_allclose(w, expected, atol=1e-6)


def test_pooled_embedding_is_mask_weighted_mean():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(5, 2, 4)).astype(np.float32)
    mask = np.zeros((20, 40), dtype=bool)
    mask[0:10, 30:40] = True
    mask[10:15, 0:10] = True
    emb = pooled_embeddings(dense, [mask, np.ones((20, 40), bool)])
    np.testing.assert_allclose(emb[0], (dense[:, 0, 3] * 1.0 + dense[:, 1, 0] * 0.5) / 1.5, rtol=1e-5)
    np.testing.assert_allclose(emb[1], dense.reshape(5, -1).mean(axis=1), rtol=1e-5)


def test_crop_instance_background_and_margin():
    img = np.full((30, 50, 3), 200, dtype=np.uint8)
    mask = np.zeros((30, 50), dtype=bool)
    mask[10:20, 20:30] = True
    mask[10, 20] = False
    crop = crop_instance(img, mask, (1, 2, 3), margin=0.0)
    assert crop.shape == (10, 10, 3)
    assert tuple(crop[0, 0]) == (1, 2, 3) and tuple(crop[5, 5]) == (200, 200, 200)
    wide = crop_instance(img, mask, (0, 0, 0), margin=0.5)  # 5 px per side, clipped to the image
    assert wide.shape == (20, 20, 3)
    assert (wide[:5] == 0).all()  # margin rows are outside the mask -> background


def test_resize_center_crop_keeps_aspect_then_crops():
    crop = np.zeros((10, 30, 3), dtype=np.uint8)
    crop[:, 10:20] = 255  # the centre third
    out = resize_center_crop(crop, 16)
    assert out.shape == (16, 16, 3)
    assert out[:, 4:12].mean() > 240  # the centre crop is (almost) all the white third


class _FakeBackbone(torch.nn.Module):
    """Global embedding = per-channel mean of the normalised input (checks crops + normalisation)."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    global_dim = 3
    stride = 8

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        assert x.shape[-2:] == (16, 16)
        return x, x.mean(dim=(2, 3))


def test_crop_embeddings_batches_and_normalises():
    crops = [np.full((8, 12, 3), 255, np.uint8), np.zeros((20, 10, 3), np.uint8), np.full((5, 5, 3), 128, np.uint8)]
    emb = crop_embeddings(_FakeBackbone(), crops, 16, batch_size=2)
    assert emb.shape == (3, 3) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[1], -1.0, atol=1e-5)
    np.testing.assert_allclose(emb[2], 128 / 255 * 2 - 1, atol=1e-2)
    assert crop_embeddings(_FakeBackbone(), [], 16, 2).shape == (0, 3)
