"""Stuff model: patch sampling, cosine k-means, nearest upsampling, CRF, save/load."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from u2seg.crf import STEGO_CRF
from u2seg.pseudo.kmeans import ArraySource
from u2seg.pseudo.stuff.model import KMeansStuffModel, nearest_indices, sample_patches, stuff_map, upsample_nearest
from u2seg.pseudo.stuff.registry import load_stuff_model


def two_material_map(c: int = 6, h: int = 4, w: int = 6, seed: int = 0) -> np.ndarray:
    """Left half along +e0, right half along +e1 (different norms: cosine must ignore scale)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 0.05, size=(c, h, w)).astype(np.float32)
    d[0, :, : w // 2] += 3.0
    d[1, :, w // 2:] += 0.5
    return d


def test_sample_patches_exact_rows_and_deterministic():
    maps = [np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 100 * i for i in range(5)]
    shards = [lambda: iter(maps[:2]), lambda: iter(maps[2:3]), lambda: iter(maps[3:])]
    a = sample_patches(shards, [2, 1, 2], 12, 20, seed=1)
    b = sample_patches(shards, [2, 1, 2], 12, 20, seed=1)
    assert a.shape == (20, 2) and a.dtype == np.float16
    assert np.array_equal(a, b)
    every = {tuple(r) for m in maps for r in m.reshape(2, -1).T.astype(np.float16).tolist()}
    assert {tuple(r) for r in a.tolist()} <= every
    assert len({tuple(r) for r in a.tolist()}) == 20  # without replacement (rows are distinct)
    assert len(sample_patches(shards, [2, 1, 2], 12, 10 ** 6, seed=1)) == 60  # capped at the total
    with pytest.raises(ValueError, match="expected"):
        sample_patches(shards, [2, 1, 3], 12, 72, seed=1)


def test_kmeans_stuff_model_separates_materials_and_roundtrips(tmp_path):
    dense = two_material_map()
    rows = dense.reshape(6, -1).T
    model = KMeansStuffModel(k=2, iterations=20, seed=0).fit(ArraySource(rows, 7))
    lab = model.predict(dense)
    assert lab.shape == (4, 6)
    assert len(np.unique(lab[:, :3])) == 1 and len(np.unique(lab[:, 3:])) == 1 and lab[0, 0] != lab[0, 5]
    model.save(tmp_path / "m.npz")
    again = load_stuff_model(tmp_path / "m.npz")
    assert np.array_equal(again.predict(dense), lab)
    assert again.fit_info["rows"] == 24
    with pytest.raises(ValueError, match="channels"):
        model.predict(dense[:3])


def test_upsample_nearest_non_square_pixel_centres():
    labels = np.array([[0, 1, 2], [3, 4, 5]])
    up = upsample_nearest(labels, 4, 9)  # h 2 -> 4, w 3 -> 9
    assert up.shape == (4, 9)
    assert up[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert up[:, 0].tolist() == [0, 0, 3, 3]
    assert nearest_indices(3, 2).tolist() == [0, 1, 1]


def test_stuff_map_with_and_without_crf():
    dense = two_material_map(h=4, w=6)
    model = KMeansStuffModel(k=2, iterations=10, seed=0).fit(ArraySource(dense.reshape(6, -1).T, 24))
    plain = stuff_map(model, dense, 20, 30)
    assert plain.shape == (20, 30) and plain.dtype == np.uint8
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    img[:, 15:] = 255  # image edge where the materials change
    refined = stuff_map(model, dense, 20, 30, image=img, crf=dataclasses.replace(STEGO_CRF, iterations=3))
    assert refined.shape == (20, 30)
    assert (refined[:, :14] == plain[0, 0]).all() and (refined[:, 16:] == plain[0, -1]).all()
    with pytest.raises(ValueError, match="CRF"):
        stuff_map(model, dense, 20, 30, image=None, crf=STEGO_CRF)


def test_sample_patches_from_arrays_reads_only_picked_images():
    """Shards given as arrays (zarr `dense`): the same sample, and images without a pick are not read."""
    maps = [np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 100 * i for i in range(40)]

    class Counting:
        def __init__(self, arr):
            self.arr, self.shape, self.read = arr, arr.shape, []

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, j):
            self.read.append(j)
            return self.arr[j]

    arrays = [Counting(np.stack(maps[i:i + 10])) for i in range(0, 40, 10)]
    iters = [lambda i=i: iter(maps[i:i + 10]) for i in range(0, 40, 10)]
    a = sample_patches([lambda a=a: a for a in arrays], [10] * 4, 12, 5, seed=3)
    assert np.array_equal(a, sample_patches(iters, [10] * 4, 12, 5, seed=3))
    n_read = sum(len(arr.read) for arr in arrays)
    assert 1 <= n_read <= 5  # 5 patches: at most 5 of the 40 images were read
