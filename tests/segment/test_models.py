"""Named models with no network: a detectron2 checkpoint written by `u2seg export-d2` from a tiny random
model, registered with a file:// URL, goes through download -> cache -> import-d2 -> segment; `u2seg info`;
old model files (no test size) still load."""
from __future__ import annotations

import json

import pytest
import torch

import u2seg
from tests.segment.conftest import SETTINGS, save_tiny_model
from u2seg.cli import main as cli_main
from u2seg.detector import checkpoint as ckpt
from u2seg.errors import UserError
from u2seg.segment import models
from u2seg.segment.models import NamedModel, resolve_model, sha256_of


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (TORCH_HOME) for the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / "u2seg"


@pytest.fixture(scope="module")
def d2_checkpoint(tmp_path_factory):
    """(u2seg model file, the detectron2 checkpoint `u2seg export-d2` wrote from it): ResNet-50, random."""
    root = tmp_path_factory.mktemp("d2")
    model = save_tiny_model(root / "r50.pth", backbone="resnet50", sem_conv_dim=32, sem_norm_groups=32)
    assert cli_main(["export-d2", "--input", str(model), "--output", str(root / "model_final.pth")]) == 0
    return model, root / "model_final.pth"


def test_named_model_file_url_download_cache_import_segment(d2_checkpoint, tiny, hub, tmp_path, monkeypatch):
    source, d2 = d2_checkpoint
    served = tmp_path / "served" / "u2seg_tiny_final.pth"
    served.parent.mkdir()
    served.write_bytes(d2.read_bytes())
    entry = NamedModel("tiny-d2", served.as_uri(), "u2seg_tiny_final.pth", "u2seg-panoptic",
                       sha256=sha256_of(served), category_names=("cat", "dog", "car"))
    monkeypatch.setitem(models.MODELS, entry.name, entry)

    path = resolve_model("tiny-d2", progress=False)
    assert path == hub / "tiny-d2.u2seg.pth" and (hub / "u2seg_tiny_final.pth").is_file()
    converted, original = ckpt.load_model_file(path), ckpt.load_model_file(source)
    assert [c["name"] for c in converted["categories"]] == ["cat", "dog", "car"]
    for k, v in original["model"].items():
        assert torch.equal(converted["model"][k], v), k

    served.unlink()  # cached: no second download, no second conversion
    stamp = path.stat().st_mtime_ns
    assert resolve_model("tiny-d2", progress=False) == path and path.stat().st_mtime_ns == stamp

    out = tmp_path / "seg"
    assert cli_main(["segment", str(tiny["images"]), "--model", "tiny-d2", "--out-dir", str(out), *SETTINGS]) == 0
    assert cli_main(["predict", "--weights", str(path), "--manifest", str(tiny["manifest"]),
                     "--out-dir", str(tmp_path / "pred"), *SETTINGS]) == 0
    seg_results = json.loads((out / "instances_results.json").read_text())
    assert seg_results and seg_results == json.loads((tmp_path / "pred" / "instances_results.json").read_text())
    result = u2seg.load_model("tiny-d2", device="cpu", min_size=64, max_size=128, score_thresh=0.0,
                              instance_score_thresh=0.0, stuff_area_thresh=10)(tiny["images"] / "img_00.png")
    assert [dict(r, image_id=1) for r in result.results] == [r for r in seg_results if r["image_id"] == 1]
    assert set(result.instances.names) <= {"cat", "dog", "car"}

    # a detectron2 checkpoint given by path (.pth or .pkl) is converted once into the cache the same way
    assert cli_main(["export-d2", "--input", str(source), "--output", str(tmp_path / "d2.pkl")]) == 0
    for given in (d2, tmp_path / "d2.pkl"):
        by_path = resolve_model(given, progress=False)
        assert by_path.parent == hub and by_path.name.startswith(given.stem + "-")
        assert torch.equal(ckpt.load_model_file(by_path)["model"]["backbone.body.conv1.weight"],
                           original["model"]["backbone.body.conv1.weight"])


def test_offline_and_corrupt_downloads_say_what_to_do(hub, tmp_path, monkeypatch):
    missing = NamedModel("offline", (tmp_path / "nowhere.pth").as_uri(), "nowhere.pth", "u2seg-model-file",
                         format="u2seg")
    monkeypatch.setitem(models.MODELS, missing.name, missing)
    with pytest.raises(UserError, match=f"download nowhere.pth from .* and put it at {hub / 'nowhere.pth'}"):
        resolve_model("offline", progress=False)
    assert not (hub / "nowhere.pth").exists()
    drive = NamedModel("drive", "https://drive.google.com/x", "big.pth", "u2seg-panoptic", direct=False)
    monkeypatch.setitem(models.MODELS, drive.name, drive)
    with pytest.raises(UserError, match="no direct download URL; download big.pth"):
        resolve_model("drive", progress=False)
    served = save_tiny_model(tmp_path / "m.pth")
    bad = NamedModel("bad", served.as_uri(), "m.pth", "u2seg-model-file", format="u2seg", sha256="0" * 64)
    monkeypatch.setitem(models.MODELS, bad.name, bad)
    with pytest.raises(UserError, match="does not have the recorded sha256"):
        resolve_model("bad", progress=False)
    assert not (hub / "m.pth").exists()  # the failed download left nothing behind
    good = NamedModel("good", served.as_uri(), "m.pth", "u2seg-model-file", format="u2seg", sha256=sha256_of(served))
    monkeypatch.setitem(models.MODELS, good.name, good)
    assert resolve_model("good", progress=False) == hub / "m.pth"


def test_info_prints_what_the_model_file_carries(tmp_path, capsys):
    path = save_tiny_model(tmp_path / "m.pth")
    obj = ckpt.load(path)
    assert obj["meta"]["test_size"] == {"min_size": 800, "max_size": 1333}
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "things: K = 3 (1:thing0, 2:thing1, 3:thing2)" in out and "stuff: S = 4" in out
    assert "test size: short side 800, long side <= 1333" in out and "metrics: none recorded" in out
    obj["meta"] = {"train_config": {"max_iter": 7}, "metrics": {"PQ": 12.5}, "test_size": {"min_size": 96}}
    ckpt.save(tmp_path / "old.pth", obj)
    assert cli_main(["info", str(tmp_path / "old.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["test_size"] == {"min_size": 96, "max_size": 1333}
    assert info["train_config"] == {"max_iter": 7} and info["metrics"] == {"PQ": 12.5}
    del obj["meta"]  # a file written before models recorded their test size
    ckpt.save(tmp_path / "older.pth", obj)
    seg = u2seg.load_model(tmp_path / "older.pth", device="cpu")
    assert (seg.config.min_size, seg.config.max_size) == (800, 1333)
    assert u2seg.load_model(tmp_path / "old.pth", device="cpu", batch_size=2).config.min_size == 96
    assert cli_main(["info", "--list"]) == 0
    assert "u2seg-coco-k300" in capsys.readouterr().out
