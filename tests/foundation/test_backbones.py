"""Backbone registry: real ImageNet weights, DINO checkpoint loading, keys of the last block."""
from __future__ import annotations

import pytest
import skimage.data
import timm
import torch

from u2seg.backbones import REGISTRY, build_backbone, load_efficientnet_lite2_state_dict
from u2seg.errors import UserError


def test_registry_names():
    import yaml

    from tests.conftest import REPO

    assert {"dino_vitb8", "dino_vits8", "dino_vitb16", "dino_vits16", "efficientnet_lite2",
            "random_vit_tiny"} <= set(REGISTRY)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]["backbone"]["enum"]) == set(REGISTRY)  # DINOv2 / DINOv3 included
    with pytest.raises(UserError, match="unknown backbone"):
        build_backbone("nope")


def test_efficientnet_lite2_weights_really_loaded():
    sd = load_efficientnet_lite2_state_dict()
    model = timm.create_model("efficientnet_lite2", pretrained=False)
    assert set(sd) == set(model.state_dict())  # every key mapped
    bb = build_backbone("efficientnet_lite2")
    with torch.no_grad():
        for image, cls in [(skimage.data.chelsea(), 285), (skimage.data.coffee(), 967)]:
            logits = bb.classify(bb.preprocess([image], 224))
            assert int(logits.argmax()) == cls  # 285 = Egyptian cat, 967 = espresso
        dense, glob = bb(bb.preprocess([skimage.data.chelsea()], 480))
    assert dense.shape == (1, 120, 30, 30) and glob.shape == (1, bb.global_dim)


def test_random_vit_tiny_is_seeded():
    a, b = build_backbone("random_vit_tiny"), build_backbone("random_vit_tiny")
    x = a.preprocess([skimage.data.astronaut()], 64)
    with torch.no_grad():
        da, ga = a(x)
        db, gb = b(x)
    assert da.shape == (1, 192, 4, 4) and ga.shape == (1, 192)
    assert torch.equal(da, db) and torch.equal(ga, gb)


def test_dense_features_are_last_block_keys():
    bb = build_backbone("random_vit_tiny")
    x = bb.preprocess([skimage.data.coffee()], 64)
    vit = bb.vit
    with torch.no_grad():
        dense, glob = bb(x)
        tokens = vit.patch_embed(x)
        tokens = vit._pos_embed(tokens)
        tokens = vit.norm_pre(tokens)
        for blk in vit.blocks[:-1]:
            tokens = blk(tokens)
        last = vit.blocks[-1]
        qkv = last.attn.qkv(last.norm1(tokens))
        d = vit.embed_dim
        keys = qkv[..., d:2 * d][:, 1:]  # k part, CLS dropped
    assert torch.allclose(dense.flatten(2).transpose(1, 2), keys, atol=1e-5)
    assert torch.allclose(glob, vit.forward_features(x)[:, 0], atol=1e-5)


def test_dino_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found.*dino_vitbase8_pretrain"):
        build_backbone("dino_vitb8", weights=str(tmp_path / "dino_vitbase8_pretrain.pth"))


def test_dino_checkpoint_loads_strictly(tmp_path):
    # A synthetic checkpoint with the official DINO key names (same as timm's VisionTransformer).
    torch.manual_seed(1)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(ref.state_dict(), path)
    bb = build_backbone("dino_vits16", weights=str(path))
    assert torch.equal(bb.vit.cls_token, ref.cls_token)
    # a full training checkpoint (teacher with backbone. prefix and a DINO head) also loads
    full = {"teacher": {**{f"backbone.{k}": v for k, v in ref.state_dict().items()},
                        "head.mlp.0.weight": torch.zeros(2, 2)}}
    torch.save(full, tmp_path / "full.pth")
    bb2 = build_backbone("dino_vits16", weights=str(tmp_path / "full.pth"))
    assert torch.equal(bb2.vit.pos_embed, ref.pos_embed)
    # the wrong architecture is refused, naming the mismatch
    with pytest.raises(UserError, match="do not fit"):
        build_backbone("dino_vitb16", weights=str(path))
