"""Training: LR schedule, exact resume from a checkpoint, CLI train -> predict round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from u2seg.cli import main as cli_main
from u2seg.coco_format import decode_mask, rgb2id
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.data import PseudoLabelDataset
from u2seg.detector.train import TrainConfig, lr_factor, train

from .synth import K, STUFF, make_dataset, tiny_model_config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synth_train"), n_images=3)


def _cfg(**kw) -> TrainConfig:
    base = dict(seed=1, device="cpu", batch_size=2, min_sizes=[48, 64], max_size=96, base_lr=0.01,
                max_iter=4, steps=[3], gamma=0.1, warmup_iters=2, warmup_factor=0.1, checkpoint_period=2,
                copy_paste=True)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_and_steps():
    f = lr_factor(TrainConfig(warmup_iters=4, warmup_factor=0.001, steps=[6, 8], gamma=0.1))
    assert f(0) == pytest.approx(0.001)
    assert f(2) == pytest.approx(0.001 * 0.5 + 0.5)
    assert [f(i) for i in (4, 5, 6, 7, 8, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # three short trainings
def test_resume_continues_iterations_and_schedule_exactly(files, tmp_path):
    ds = PseudoLabelDataset(files["instances"], files["manifest"], files["semantic"], K, STUFF)
    mcfg = tiny_model_config()
    straight = tmp_path / "straight"
    torch.manual_seed(0)
    train(ds, mcfg, _cfg(), straight, progress=False)
    resumed = tmp_path / "resumed"
    train(ds, mcfg, _cfg(max_iter=2), resumed, progress=False)
    assert (resumed / "work" / "model_0000002.pth").is_file()
    summary = train(ds, mcfg, _cfg(max_iter=4), resumed, progress=False)
    assert summary["resumed_at"] == 2
    a, b = _metrics(straight / "metrics.jsonl"), _metrics(resumed / "metrics.jsonl")
    assert [r["iter"] for r in b] == [1, 2, 3, 4]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert [r["lr"] for r in a] == pytest.approx([0.001, 0.0055, 0.01, 0.001])
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = ckpt.load_model_file(straight / "model_final.pth")["model"]
    wb = ckpt.load_model_file(resumed / "model_final.pth")["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    w0 = ckpt.load(resumed / "work" / "model_0000004.pth")
    assert w0["iteration"] == 4 and w0["scheduler"]["last_epoch"] == 4
    for name in ("loss.png", "summary.json"):
        assert (straight / name).is_file()


def test_changed_settings_do_not_resume(files, tmp_path):
    ds = PseudoLabelDataset(files["instances"], files["manifest"], files["semantic"], K, STUFF)
    mcfg = tiny_model_config()
    train(ds, mcfg, _cfg(max_iter=2, checkpoint_period=1), tmp_path, progress=False)
    assert (tmp_path / "work" / "model_0000001.pth").is_file()
    summary = train(ds, mcfg, _cfg(max_iter=2, base_lr=0.02), tmp_path, progress=False)
    assert summary["resumed_at"] == 0
    assert sorted(p.name for p in (tmp_path / "work").glob("model_*.pth")) == ["model_0000002.pth"]


@pytest.mark.slow  # `u2seg train` then `u2seg predict` as processes (~40 s on 2 cores)
def test_cli_train_then_predict(files, tmp_path):
    out = tmp_path / "r1"
    model_flags = ["--num-classes", str(K), "--num-stuff", str(STUFF), "--backbone-weights", "none",
                   "--fpn-channels", "32", "--box-fc-dim", "64", "--mask-conv-dim", "16", "--sem-conv-dim", "16",
                   "--sem-norm-groups", "4", "--roi-batch-per-image", "32", "--rpn-post-nms-topk-train", "50",
                   "--anchor-sizes", "8", "16", "32", "64", "128"]
    rc = cli_main(["train", "--instances", str(files["instances"]), "--semantic-dir", str(files["semantic"]),
                   "--manifest", str(files["manifest"]), "--out-dir", str(out), "--max-iter", "2",
                   "--batch-size", "2", "--min-sizes", "48", "--max-size", "96", "--warmup-iters", "1",
                   "--steps", "--device", "cpu", "--no-progress", "--droploss", *model_flags])
    assert rc == 0
    for name in ("model_final.pth", "metrics.jsonl", "loss.png", "summary.json"):
        assert (out / name).is_file(), name
    model_file = ckpt.load_model_file(out / "model_final.pth")
    assert model_file["model_config"]["num_classes"] == K and model_file["model_config"]["droploss"] is True
    assert [c["name"] for c in model_file["categories"]] == [f"cluster_{c}" for c in range(K)]

    pred = tmp_path / "pred"
    rc = cli_main(["predict", "--weights", str(out / "model_final.pth"), "--manifest", str(files["manifest"]),
                   "--out-dir", str(pred), "--min-size", "64", "--max-size", "96", "--score-thresh", "0.0",
                   "--instance-score-thresh", "0.0", "--stuff-area-thresh", "10", "--batch-size", "2",
                   "--device", "cpu", "--no-progress"])
    assert rc == 0
    results = json.loads((pred / "instances_results.json").read_text())
    assert results and {r["image_id"] for r in results} <= {1, 2, 3}
    r = results[0]
    assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert 1 <= r["category_id"] <= K and r["segmentation"]["size"] == [64, 96]
    assert decode_mask(r["segmentation"], 64, 96).shape == (64, 96)
    pan = json.loads((pred / "panoptic.json").read_text())
    assert [c["id"] for c in pan["categories"]] == list(range(1, K + STUFF + 1))
    assert len(pan["annotations"]) == 3
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(pred / "panoptic" / ann["file_name"])))
        assert ids.shape == (64, 96)
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        for s in ann["segments_info"]:
            assert (ids == s["id"]).sum() == s["area"]
            assert (s["category_id"] <= K) == bool(s["isthing"])
        sem = np.asarray(Image.open(pred / "semantic" / ann["file_name"]))
        assert sem.shape == (64, 96) and sem.max() <= STUFF

    # the trained model segments the image folder given on the command line: the same files as predict
    seg = tmp_path / "seg"
    rc = cli_main(["segment", str(files["images"]), "--model", str(out / "model_final.pth"), "--out-dir", str(seg),
                   "--min-size", "64", "--max-size", "96", "--score-thresh", "0.0", "--instance-score-thresh", "0.0",
                   "--stuff-area-thresh", "10", "--batch-size", "2", "--device", "cpu", "--no-progress"])
    assert rc == 0 and json.loads((seg / "instances_results.json").read_text()) == results
    assert len(list((seg / "overlays").glob("*.png"))) == 3
