"""A tiny random model file and a few synthetic images, shared by the segment tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.detector.synth import make_dataset, tiny_model_config

# Small test size and thresholds that keep a random model's detections in the outputs.
SETTINGS = ["--min-size", "64", "--max-size", "128", "--score-thresh", "0.0", "--instance-score-thresh", "0.0",
            "--stuff-area-thresh", "10", "--device", "cpu", "--no-progress"]


def save_tiny_model(path: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny model file (the real architecture) at ``path``."""
    import torch

    from u2seg.detector import checkpoint as ckpt
    from u2seg.detector.model import build_model

    torch.manual_seed(seed)
    cfg = tiny_model_config(**overrides)
    ckpt.save_model(path, build_model(cfg, load_pretrained=False).state_dict(), cfg.to_dict(),
                    [{"id": i + 1, "name": f"thing{i}", "isthing": 1} for i in range(cfg.num_classes)])
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """{"model": model file, "manifest", "images": folder of 2 synthetic images}."""
    root = tmp_path_factory.mktemp("segment")
    data = make_dataset(root / "data", n_images=2)
    return {"model": save_tiny_model(root / "model.pth"), **data}
