"""detectron2 interoperability: a synthetic state dict with detectron2's key names and shapes
(Panoptic FPN + Cascade Mask R-CNN, R50, as in the released U2Seg / CutLER checkpoints)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from u2seg.cli import main as cli_main
from u2seg.detector import checkpoint as ckpt
from u2seg.detector.d2_import import import_checkpoint, load_d2_pickle
from u2seg.detector.model import ModelConfig, TimmBackbone
from u2seg.detector.predict import load_model
from u2seg.errors import UserError

C, FC, MASK, SEM = 64, 128, 32, 32  # small FPN / head widths (detectron2 configs allow any)


def d2_resnet50(prefix: str = "backbone.bottom_up.", norm_stats: bool = True) -> dict[str, tuple[int, ...]]:
    """detectron2 ResNet-50 key -> shape (FrozenBN / SyncBN norms under ``.norm``)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, out_c, in_c, k):
        shapes[f"{prefix}{name}.weight"] = (out_c, in_c, k, k)
        for f in ("weight", "bias") + (("running_mean", "running_var") if norm_stats else ()):
            shapes[f"{prefix}{name}.norm.{f}"] = (out_c,)

    conv("stem.conv1", 64, 3, 7)
    in_c = 64
    for stage, (blocks, mid) in zip((2, 3, 4, 5), ((3, 64), (4, 128), (6, 256), (3, 512))):
        out_c = mid * 4
        for b in range(blocks):
            if b == 0:
                conv(f"res{stage}.{b}.shortcut", out_c, in_c, 1)
            conv(f"res{stage}.{b}.conv1", mid, in_c if b == 0 else out_c, 1)
            conv(f"res{stage}.{b}.conv2", mid, mid, 3)
            conv(f"res{stage}.{b}.conv3", out_c, mid, 1)
        in_c = out_c
    return shapes


def d2_panoptic_cascade(k: int, stuff: int | None, fpn_norm: bool = False) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a detectron2 PanopticFPN (or plain GeneralizedRCNN when stuff is None) with
    CascadeROIHeads, class-agnostic box regression and a class-specific mask head."""
    s = d2_resnet50()
    for level, in_c in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        for kind, shape in (("lateral", (C, in_c, 1, 1)), ("output", (C, C, 3, 3))):
            s[f"backbone.fpn_{kind}{level}.weight"] = shape
            if fpn_norm:
                for f in ("weight", "bias", "running_mean", "running_var"):
                    s[f"backbone.fpn_{kind}{level}.norm.{f}"] = (C,)
            else:
                s[f"backbone.fpn_{kind}{level}.bias"] = (C,)
    s.update({"proposal_generator.rpn_head.conv.weight": (C, C, 3, 3), "proposal_generator.rpn_head.conv.bias": (C,),
              "proposal_generator.rpn_head.objectness_logits.weight": (3, C, 1, 1),
              "proposal_generator.rpn_head.objectness_logits.bias": (3,),
              "proposal_generator.rpn_head.anchor_deltas.weight": (12, C, 1, 1),
              "proposal_generator.rpn_head.anchor_deltas.bias": (12,)})
    for st in range(3):
        s.update({f"roi_heads.box_head.{st}.fc1.weight": (FC, C * 49), f"roi_heads.box_head.{st}.fc1.bias": (FC,),
                  f"roi_heads.box_head.{st}.fc2.weight": (FC, FC), f"roi_heads.box_head.{st}.fc2.bias": (FC,),
                  f"roi_heads.box_predictor.{st}.cls_score.weight": (k + 1, FC),
                  f"roi_heads.box_predictor.{st}.cls_score.bias": (k + 1,),
                  f"roi_heads.box_predictor.{st}.bbox_pred.weight": (4, FC),
                  f"roi_heads.box_predictor.{st}.bbox_pred.bias": (4,)})
    for i in range(1, 5):
        s[f"roi_heads.mask_head.mask_fcn{i}.weight"] = (MASK, C if i == 1 else MASK, 3, 3)
        s[f"roi_heads.mask_head.mask_fcn{i}.bias"] = (MASK,)
    s.update({"roi_heads.mask_head.deconv.weight": (MASK, MASK, 2, 2), "roi_heads.mask_head.deconv.bias": (MASK,),
              "roi_heads.mask_head.predictor.weight": (k, MASK, 1, 1), "roi_heads.mask_head.predictor.bias": (k,)})
    if stuff is not None:
        for level, n in (("p2", 1), ("p3", 1), ("p4", 2), ("p5", 3)):
            for j in range(n):
                idx = 2 * j if level != "p2" else 0
                s[f"sem_seg_head.{level}.{idx}.weight"] = (SEM, C if j == 0 else SEM, 3, 3)
                s[f"sem_seg_head.{level}.{idx}.norm.weight"] = (SEM,)
                s[f"sem_seg_head.{level}.{idx}.norm.bias"] = (SEM,)
        s["sem_seg_head.predictor.weight"] = (stuff + 1, SEM, 1, 1)
        s["sem_seg_head.predictor.bias"] = (stuff + 1,)
    s["pixel_mean"] = (3, 1, 1)
    s["pixel_std"] = (3, 1, 1)
    return s


def _tensors(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=g) * 0.01
        if key.endswith("running_var") or key.endswith("norm.weight"):
            t = t.abs() + 1.0
        out[key] = t
    out["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    out["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    return out


@pytest.mark.parametrize("k,stuff,fpn_norm", [(5, 27, False), (1, None, True)])
def test_import_u2seg_and_cutler_layouts(tmp_path, k, stuff, fpn_norm):
    sd = _tensors(d2_panoptic_cascade(k, stuff, fpn_norm))
    src = tmp_path / "d2.pth"
    torch.save({"model": sd, "iteration": 89999}, src)
    dest = tmp_path / "u2seg.pth"
    report = import_checkpoint(src, dest)
    assert report["unused_keys"] == []
    obj = ckpt.load_model_file(dest)
    cfg = obj["model_config"]
    assert (cfg["num_classes"], cfg["num_stuff"], cfg["backbone"]) == (k, stuff or 0, "resnet50")
    assert cfg["fpn_norm"] == ("frozen_bn" if fpn_norm else "none") and cfg["fpn_channels"] == C
    w = obj["model"]
    pairs = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.body.conv1.weight",
        "backbone.bottom_up.res4.5.conv2.norm.running_var": "backbone.body.layer3.5.bn2.running_var",
        "backbone.bottom_up.res3.0.shortcut.weight": "backbone.body.layer2.0.downsample.0.weight",
        "backbone.fpn_output4.weight": "fpn.layer_blocks.2.0.weight",
        "proposal_generator.rpn_head.anchor_deltas.weight": "rpn.head.bbox_pred.weight",
        "roi_heads.box_head.2.fc1.weight": "roi_heads.box_heads.2.fc1.weight",
        "roi_heads.box_predictor.1.cls_score.bias": "roi_heads.box_predictors.1.cls_score.bias",
        "roi_heads.mask_head.mask_fcn3.weight": "roi_heads.mask_head.2.0.weight",
        "roi_heads.mask_head.deconv.weight": "roi_heads.mask_predictor.conv5_mask.weight",
    }
    if stuff:
        pairs["sem_seg_head.p5.4.norm.weight"] = "sem_head.scale_heads.p5.4.norm.weight"
        pairs["sem_seg_head.predictor.weight"] = "sem_head.predictor.weight"
    if fpn_norm:
        pairs["backbone.fpn_lateral3.norm.running_mean"] = "fpn.inner_blocks.1.1.running_mean"
    for d2_key, key in pairs.items():
        assert torch.equal(w[key], sd[d2_key]), key
    model, _ = load_model(dest, torch.device("cpu"))
    model.set_test_params(score_thresh=0.0)
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64) * 255])[0]
    assert out["boxes"].shape[0] > 0 and int(out["labels"].max()) < k
    assert ("sem_seg" in out) == bool(stuff)
    if stuff:
        assert out["sem_seg"].shape == (stuff + 1, 64, 64)


def test_bgr_checkpoint_becomes_rgb(tmp_path):
    sd = _tensors(d2_panoptic_cascade(2, 27))
    torch.save({"model": sd}, tmp_path / "bgr.pth")
    rc = cli_main(["import-d2", "--input", str(tmp_path / "bgr.pth"), "--output", str(tmp_path / "out.pth"),
                   "--input-format", "BGR", "--pixel-mean", "103.53", "116.28", "123.675"])
    assert rc == 0
    obj = ckpt.load_model_file(tmp_path / "out.pth")
    assert obj["model_config"]["pixel_mean"] == [123.675, 116.28, 103.53]
    assert torch.equal(obj["model"]["backbone.body.conv1.weight"],
                       sd["backbone.bottom_up.stem.conv1.weight"].flip(1))


def test_non_cascade_checkpoint_is_refused(tmp_path):
    sd = _tensors(d2_resnet50())
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(3, 8)
    torch.save({"model": sd}, tmp_path / "std.pth")
    with pytest.raises(UserError, match="non-cascade"):
        import_checkpoint(tmp_path / "std.pth", tmp_path / "o.pth")


def test_d2_pickle_backbone_weights(tmp_path):
    sd = {k: v.numpy() for k, v in _tensors(d2_resnet50(prefix="")).items() if not k.startswith("pixel")}
    path = tmp_path / "dino_RN50_pretrain_d2_format.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": sd, "__author__": "test", "matching_heuristics": True}, fh)
    backbone = TimmBackbone("resnet50", "frozen_bn", str(path))
    own = backbone.body.state_dict()
    assert torch.equal(own["layer4.2.conv3.weight"], torch.from_numpy(sd["res5.2.conv3.weight"]))
    assert torch.equal(own["layer1.0.downsample.1.running_var"],
                       torch.from_numpy(sd["res2.0.shortcut.norm.running_var"]))
    assert ModelConfig(backbone="resnet50", backbone_weights=str(path)).pixel_mean == [123.675, 116.28, 103.53]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_pickle_loader_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"x": np.zeros(2)}, "payload": _Evil()}, fh)
    with pytest.raises(UserError, match="refusing"):
        load_d2_pickle(path)
