"""Detector training resumes only from a checkpoint made from the same inputs.

One baseline run (2 iterations, a checkpoint each) is copied per case; one input is changed at a time
(a stuff PNG, an instance, an image of the manifest, the init weights, a setting) and the rerun must
start from scratch, say which input changed, and write other weights. An unchanged rerun (also from a
moved copy of the data) still resumes and trains nothing.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import PseudoLabelDataset
from u2seg.detector.model import build_model
from u2seg.detector.train import TrainConfig, train

from .synth import K, STUFF, make_dataset, tiny_model_config


def _cfg(**kw) -> TrainConfig:
    base = dict(seed=1, device="cpu", batch_size=2, min_sizes=[48, 64], max_size=96, base_lr=0.01,
                max_iter=2, steps=[3], gamma=0.1, warmup_iters=1, warmup_factor=0.5, checkpoint_period=1)
    base.update(kw)
    return TrainConfig(**base)


def _write_init(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    mcfg = tiny_model_config()
    ckpt.save_model(path, build_model(mcfg, load_pretrained=False).state_dict(), mcfg.to_dict(), [])


def _dataset(root: Path) -> PseudoLabelDataset:
    return PseudoLabelDataset(root / "data" / "instances.json", root / "data" / "manifest.json",
                              root / "data" / "semantic", K, STUFF)


def _run(root: Path, cfg: TrainConfig | None = None) -> dict:
    return train(_dataset(root), tiny_model_config(), cfg or _cfg(), root / "out", init=root / "init.pth",
                 progress=False)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_model_file(root / "out" / "model_final.pth")["model"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_base")
    make_dataset(root / "data", n_images=3)
    _write_init(root / "init.pth", seed=0)
    summary = _run(root)
    assert summary["resumed_at"] == 0
    return root


def _copy(baseline: Path, dest: Path) -> Path:
    """The baseline's data, init and round folder (with work/) in another place (a moved run)."""
    shutil.copytree(baseline, dest)
    manifest = json.loads((dest / "data" / "manifest.json").read_text())
    manifest["root"] = str(dest / "data" / "images")
    (dest / "data" / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _change_stuff_png(root: Path) -> None:
    path = root / "data" / "semantic" / "img_01.png"
    sem = np.asarray(Image.open(path)).copy()
    stuff = (sem == 1) | (sem == 2)
    sem[stuff] = 3 - sem[stuff]  # swap the two stuff labels (another stuff model / seed)
    Image.fromarray(sem).save(path)


def _change_instance(root: Path) -> None:
    path = root / "data" / "instances.json"
    coco = json.loads(path.read_text())
    ann = coco["annotations"][0]
    ann["category_id"] = ann["category_id"] % K + 1
    path.write_text(json.dumps(coco))


def _change_image(root: Path) -> None:
    path = root / "data" / "images" / "img_02.png"
    img = np.asarray(Image.open(path)).copy()
    Image.fromarray(255 - img).save(path)


def _change_init(root: Path) -> None:
    _write_init(root / "init.pth", seed=5)


CASES = {
    "semantic": _change_stuff_png,
    "instances": _change_instance,
    "images": _change_image,
    "init_weights": _change_init,
}


def test_unchanged_rerun_of_a_moved_copy_still_resumes(baseline, tmp_path, caplog):
    root = _copy(baseline, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="u2seg.detector.train"):
        summary = _run(root)
    assert summary["resumed_at"] == 2
    assert "training from scratch" not in caplog.text
    base, now = _weights(baseline), _weights(root)
    assert all(torch.equal(base[k], now[k]) for k in base)
    assert summary["inputs"] == json.loads((baseline / "out" / "summary.json").read_text())["inputs"]


@pytest.mark.parametrize("part", sorted(CASES))
def test_one_changed_input_starts_fresh_and_changes_the_weights(baseline, tmp_path, caplog, part):
    root = _copy(baseline, tmp_path / "run")
    CASES[part](root)
    with caplog.at_level(logging.INFO, logger="u2seg.detector.train"):
        summary = _run(root)
    assert summary["resumed_at"] == 0
    fresh = [r.getMessage() for r in caplog.records if "training from scratch" in r.getMessage()]
    assert len(fresh) == 1 and f"{part} changed" in fresh[0], caplog.text
    others = set(CASES) - {part}
    assert not any(f"{o} changed" in fresh[0] for o in others)
    base, now = _weights(baseline), _weights(root)
    assert any(not torch.equal(base[k], now[k]) for k in base), "the rerun rewrote the old model"
    state = ckpt.load(ckpt.latest_training(root / "out" / "work"))
    assert state["inputs"] == summary["inputs"] and state["iteration"] == 2
    metrics = [json.loads(x) for x in (root / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in metrics] == [1, 2]


def test_changed_setting_starts_fresh(baseline, tmp_path, caplog):
    root = _copy(baseline, tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="u2seg.detector.train"):
        summary = _run(root, _cfg(base_lr=0.02))
    assert summary["resumed_at"] == 0 and "settings changed" in caplog.text
    # a longer schedule (max_iter only) is not a change of inputs: it continues
    summary = _run(root, _cfg(base_lr=0.02, max_iter=3))
    assert summary["resumed_at"] == 2


def test_stale_checkpoints_without_pointer_are_cleared(baseline, tmp_path):
    root = _copy(baseline, tmp_path / "run")
    work = root / "out" / "work"
    stale = work / "model_0000009.pth"
    shutil.copy(ckpt.latest_training(work), stale)
    (work / ckpt.POINTER).unlink()
    _change_stuff_png(root)
    summary = _run(root)
    assert summary["resumed_at"] == 0 and not stale.exists()
    assert ckpt.latest_training(work).name == "model_0000002.pth"
