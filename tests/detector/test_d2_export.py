"""`u2seg export-d2` and the detectron2 file layouts: import -> export -> import is bit-identical; the
exported checkpoint + yaml load into real detectron2 with no missing / unexpected keys; the DINO R50
backbone file (``tools/convert-torchvision-to-d2.py`` layout, with BN step counters and fc) loads."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tests.detector.d2_env import detectron2  # noqa: F401 (fixture)
from tests.detector.test_d2_import import _tensors, d2_panoptic_cascade, d2_resnet50  # noqa: F401 (fixture)
from u2seg.cli import main as cli_main
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.d2_export import export_model, export_state_dict
from u2seg.detector.d2_format import load_d2_checkpoint
from u2seg.detector.d2_import import import_checkpoint
from u2seg.detector.model import ModelConfig, TimmBackbone, build_model
from u2seg.errors import UserError


def _syncbn(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What DetectionCheckpointer saves from a SyncBN model: every norm also has num_batches_tracked."""
    out = dict(sd)
    for k in sd:
        if k.endswith(".norm.running_var"):
            out[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(90000)
    return out


@pytest.mark.slow  # detectron2-format round trips of the full model (~6 s each on 2 cores)
@pytest.mark.parametrize("suffix,norm", [(".pth", "SyncBN"), (".pkl", "SyncBN"), (".pth", "FrozenBN")])
def test_import_export_import_is_bit_identical(tmp_path, suffix, norm):
    d2 = _syncbn(_tensors(d2_panoptic_cascade(5, 27, fpn_norm=True)))
    torch.save({"model": d2, "iteration": 89999, "optimizer": {}}, tmp_path / "model_final.pth")
    first = import_checkpoint(tmp_path / "model_final.pth", tmp_path / "a.pth")
    assert first["num_batches_tracked_dropped"] == sum(k.endswith("num_batches_tracked") for k in d2) > 60
    assert cli_main(["export-d2", "--input", str(tmp_path / "a.pth"), "--output", str(tmp_path / f"d2{suffix}"),
                     "--norm", norm]) == 0
    exported = load_d2_checkpoint(tmp_path / f"d2{suffix}")
    want = {k for k in d2 if not k.startswith("pixel_")}
    if norm == "FrozenBN":
        want = {k for k in want if not k.endswith("num_batches_tracked")}
    assert set(exported) == want
    for k in want:
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(exported[k], d2[k]), k
    import_checkpoint(tmp_path / f"d2{suffix}", tmp_path / "b.pth")
    a, b = ckpt.load_model_file(tmp_path / "a.pth"), ckpt.load_model_file(tmp_path / "b.pth")
    assert a["model_config"] == b["model_config"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert a["model"][k].dtype == b["model"][k].dtype and torch.equal(a["model"][k], b["model"][k]), k
    assert (tmp_path / f"d2{suffix}.yaml").is_file()


def test_export_refuses_a_timm_backbone(tmp_path):
    cfg = ModelConfig(num_classes=2, num_stuff=0, backbone_weights=None)  # efficientnet_lite2
    ckpt.save_model(tmp_path / "m.pth", build_model(cfg, load_pretrained=False).state_dict(), cfg.to_dict(), [])
    with pytest.raises(UserError, match="ResNet backbone"):
        export_model(tmp_path / "m.pth", tmp_path / "d2.pth")


def test_exports_of_both_layouts_keep_their_own_config_with_an_absolute_weights_path(tmp_path, monkeypatch):
    import yaml

    cfg = ModelConfig(num_classes=2, num_stuff=0, backbone="resnet50", backbone_weights=None)
    ckpt.save_model(tmp_path / "m.pth", build_model(cfg, load_pretrained=False).state_dict(), cfg.to_dict(), [])
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)  # outputs typed as relative paths
    reports = [export_model(tmp_path / "m.pth", f"x{suffix}") for suffix in (".pth", ".pkl")]
    assert [r["config"] for r in reports] == ["x.pth.yaml", "x.pkl.yaml"]
    for suffix in (".pth", ".pkl"):
        loaded = yaml.safe_load((out / f"x{suffix}.yaml").read_text())
        assert loaded["MODEL"]["WEIGHTS"] == str(out.resolve() / f"x{suffix}")
    with pytest.raises(UserError, match="is the checkpoint itself"):
        export_model(tmp_path / "m.pth", "y.pth", config_out="y.pth")


def test_trainable_bn_keeps_its_step_counter():
    cfg = ModelConfig(num_classes=2, num_stuff=0, backbone="resnet50", backbone_weights=None, norm="bn")
    state = build_model(cfg, load_pretrained=False).state_dict()
    state["backbone.body.bn1.num_batches_tracked"] = torch.tensor(7)
    out = export_state_dict(state, "SyncBN")
    assert int(out["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"]) == 7
    assert "backbone.bottom_up.stem.conv1.norm.num_batches_tracked" not in export_state_dict(state, "FrozenBN")


def _torchvision_to_d2_names(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The renaming of detectron2's tools/convert-torchvision-to-d2.py (as its docs describe it)."""
    out = {}
    for k, v in sd.items():
        new = k if "layer" in k else "stem." + k
        for t in (1, 2, 3, 4):
            new = new.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            new = new.replace(f"bn{t}", f"conv{t}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[new] = v.numpy()
    return out


def test_dino_rn50_d2_pickle_layout(tmp_path):
    """dino_RN50_pretrain_d2_format.pkl: torchvision ResNet-50 names converted, num_batches_tracked and fc."""
    import torchvision

    tv = torchvision.models.resnet50(weights=None).state_dict()
    g = torch.Generator().manual_seed(0)
    tv = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in tv.items()}
    path = tmp_path / "dino_RN50_pretrain_d2_format.pkl"
    model = _torchvision_to_d2_names(tv)
    assert "stem.conv1.norm.num_batches_tracked" in model and "stem.fc.weight" in model
    with open(path, "wb") as fh:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, fh)
    body = TimmBackbone("resnet50", "frozen_bn", str(path)).body.state_dict()
    assert torch.equal(body["layer3.4.conv2.weight"], tv["layer3.4.conv2.weight"])
    assert torch.equal(body["layer1.0.downsample.1.running_var"], tv["layer1.0.downsample.1.running_var"])
    assert torch.equal(body["bn1.weight"], tv["bn1.weight"])
    with pytest.raises(UserError, match="backbone-only"):
        import_checkpoint(path, tmp_path / "x.pth")


@pytest.mark.parametrize("norm,suffix", [("SyncBN", ".pth"), ("FrozenBN", ".pkl")])
def test_exported_model_loads_in_detectron2(detectron2, tmp_path, monkeypatch, norm, suffix):  # noqa: F811
    """build_model(yaml) + DetectionCheckpointer: no missing / unexpected keys, same backbone output;
    exported to a relative path, loaded from another working directory."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model as d2_build_model

    cfg = ModelConfig(num_classes=4, num_stuff=27, backbone="resnet50", backbone_weights=None,
                      fpn_norm="frozen_bn", rpn_post_nms_topk_train=4000, rpn_nms_thresh=0.65)
    torch.manual_seed(1)
    model = build_model(cfg, load_pretrained=False).eval()
    ckpt.save_model(tmp_path / "m.pth", model.state_dict(), cfg.to_dict(), [])
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    report = export_model(tmp_path / "m.pth", f"d2{suffix}", norm=norm)
    monkeypatch.chdir(tmp_path / "elsewhere")
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(str(tmp_path / "out" / report["config"]))
    d2_cfg.MODEL.DEVICE = "cpu"
    assert d2_cfg.MODEL.WEIGHTS == str((tmp_path / "out" / f"d2{suffix}").resolve())
    d2_model = d2_build_model(d2_cfg).eval()
    checkpointer = DetectionCheckpointer(d2_model)
    incompatible = []
    checkpointer._log_incompatible_keys = incompatible.append  # what load() would log
    checkpointer.load(d2_cfg.MODEL.WEIGHTS)
    assert incompatible, "DetectionCheckpointer did not report"
    assert incompatible[0].missing_keys == [] and incompatible[0].unexpected_keys == []
    assert incompatible[0].incorrect_shapes == []
    x = torch.rand(1, 3, 128, 160) * 4 - 2
    with torch.no_grad():
        ours, theirs = model.features(x), d2_model.backbone(x)
    for name in ("p2", "p3", "p4", "p5", "p6"):
        assert torch.allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-4 * float(theirs[name].abs().max())), name
