"""`torch.hub.load(<repo>, "u2seg", model)` gives the same segmenter as `u2seg.load_model`."""
from __future__ import annotations

import torch

import u2seg
from tests.snakemake_runner import REPO


def test_torch_hub_load_local(tiny):
    hub_model = torch.hub.load(str(REPO), "u2seg", str(tiny["model"]), source="local", device="cpu",
                               min_size=64, max_size=128, score_thresh=0.0)
    api_model = u2seg.load_model(tiny["model"], device="cpu", min_size=64, max_size=128, score_thresh=0.0)
    assert type(hub_model).__name__ == "Segmenter" and hub_model.config == api_model.config
    image = tiny["images"] / "img_01.png"
    a, b = hub_model(image), api_model(image)
    assert a.results and a.results == b.results and (a.panoptic == b.panoptic).all()
