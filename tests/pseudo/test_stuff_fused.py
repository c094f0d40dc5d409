"""The k-means stuff sample computed per shard (u2seg.pseudo.stuff.fused): the shards' shares concatenated in
shard order are the rows sample_patches draws over all shards; the fit on them is the same model."""
from __future__ import annotations

import numpy as np
import pytest

from u2seg.pseudo.stuff.fused import (load_shard_samples, save_shard_sample, shard_sample_picks,
                                      shard_sample_rows)
from u2seg.pseudo.stuff.model import sample_patches


def _shards(counts: list[int], c: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return [rng.standard_normal((n, c, h, w)).astype(np.float16) for n in counts]


@pytest.mark.parametrize("counts,n_sample,seed", [
    ([4, 4, 3], 20, 0),
    ([1, 5, 2, 7], 50, 3),
    ([3, 0, 2], 10, 1),  # an empty shard
    ([2, 2], 1000, 5),  # n_sample > all patches: every patch
    ([6], 7, 11),
    ([5, 5, 5, 5, 1], 3, 2),  # most shards get no pick
])
def test_per_shard_shares_equal_the_global_sample(tmp_path, counts, n_sample, seed):
    c, h, w = 6, 3, 4
    shards = _shards(counts, c, h, w, seed)
    expected = sample_patches([lambda d=d: d for d in shards], counts, h * w, n_sample, seed)
    paths = []
    for s, dense in enumerate(shards):
        picks = shard_sample_picks(counts, h * w, n_sample, seed, s)
        assert np.all(np.diff(picks) > 0) and (len(picks) == 0 or picks[-1] < counts[s] * h * w)
        rows = shard_sample_rows(dense, picks)
        assert rows.dtype == np.float16 and rows.shape == (len(picks), c)
        paths.append(tmp_path / f"shard_{s:05d}.npy")
        save_shard_sample(paths[-1], rows)
    got = load_shard_samples(paths)
    assert got.dtype == np.float16 and got.shape == expected.shape == (min(n_sample, sum(counts) * h * w), c)
    assert got.tobytes() == expected.tobytes()


def test_a_missing_shard_sample_is_an_error(tmp_path):
    from u2seg.errors import UserError

    save_shard_sample(tmp_path / "shard_00000.npy", np.zeros((2, 3), np.float16))
    with pytest.raises(UserError, match="missing stuff sample"):
        load_shard_samples([tmp_path / "shard_00000.npy", tmp_path / "shard_00001.npy"])


def test_the_fit_on_the_shares_is_the_fit_on_the_global_sample(tmp_path):
    from u2seg.pseudo.stuff.model import KMeansStuffModel, fit_stuff_model

    counts, c, h, w = [3, 2, 4], 8, 4, 4
    shards = _shards(counts, c, h, w, 7)
    expected = sample_patches([lambda d=d: d for d in shards], counts, h * w, 60, 7)
    parts = [shard_sample_rows(d, shard_sample_picks(counts, h * w, 60, 7, s)) for s, d in enumerate(shards)]
    a = fit_stuff_model(KMeansStuffModel(4, 20, 7), expected, 16)
    b = fit_stuff_model(KMeansStuffModel(4, 20, 7), np.concatenate(parts), 16)
    assert a.centroids.tobytes() == b.centroids.tobytes()
