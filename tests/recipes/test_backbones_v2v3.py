"""DINOv2 / DINOv3 backbones through timm: seeded random weights written in the OFFICIAL key
layouts (facebookresearch/dinov2 and dinov3 checkpoints; tiny depth 2 to keep the tests fast) load
strictly, land in the right tensors, and give patch-14 / patch-16 grids."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from u2seg.backbones import REGISTRY, VIT_ARCH, WEIGHT_URLS, build_backbone
from u2seg.errors import UserError

DIMS = {"s": (384, 6), "b": (768, 12), "l": (1024, 16)}
DEPTH = 2


def _block(g: torch.Generator, d: int, prefix: str, qkv_bias_mask: bool = False) -> dict[str, torch.Tensor]:
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    out = {
        f"{prefix}norm1.weight": 1 + r(d), f"{prefix}norm1.bias": r(d),
        f"{prefix}attn.qkv.weight": r(3 * d, d), f"{prefix}attn.qkv.bias": r(3 * d),
        f"{prefix}attn.proj.weight": r(d, d), f"{prefix}attn.proj.bias": r(d),
        f"{prefix}ls1.gamma": 1 + r(d), f"{prefix}norm2.weight": 1 + r(d), f"{prefix}norm2.bias": r(d),
        f"{prefix}mlp.fc1.weight": r(4 * d, d), f"{prefix}mlp.fc1.bias": r(4 * d),
        f"{prefix}mlp.fc2.weight": r(d, 4 * d), f"{prefix}mlp.fc2.bias": r(d), f"{prefix}ls2.gamma": 1 + r(d),
    }
    if qkv_bias_mask:  # DINOv3: the k third of the bias is masked to zero
        out[f"{prefix}attn.qkv.bias"][d:2 * d] = 0
        out[f"{prefix}attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    return out


def official_dinov2(size: str, registers: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINOv2 ViT-{S,B,L}/14 state dict as `dinov2_vit*14[_reg4]_pretrain.pth` stores it (518 px)."""
    d, _ = DIMS[size]
    g = torch.Generator().manual_seed(seed)
    sd = {"cls_token": torch.randn(1, 1, d, generator=g), "pos_embed": torch.randn(1, 1 + 37 * 37, d, generator=g),
          "mask_token": torch.zeros(1, d), "patch_embed.proj.weight": torch.randn(d, 3, 14, 14, generator=g) * 0.02,
          "patch_embed.proj.bias": torch.randn(d, generator=g) * 0.02,
          "norm.weight": torch.ones(d), "norm.bias": torch.zeros(d)}
    if registers:
        sd["register_tokens"] = torch.randn(1, 4, d, generator=g)
    for i in range(DEPTH):
        sd.update(_block(g, d, f"blocks.{i}."))
    return sd


def official_dinov3(size: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DINOv3 ViT-{S,B,L}/16 state dict as `dinov3_vit*16_pretrain_lvd1689m-*.pth` stores it."""
    d, heads = DIMS[size]
    g = torch.Generator().manual_seed(seed)
    sd = {"cls_token": torch.randn(1, 1, d, generator=g), "storage_tokens": torch.randn(1, 4, d, generator=g),
          "mask_token": torch.zeros(1, d), "patch_embed.proj.weight": torch.randn(d, 3, 16, 16, generator=g) * 0.02,
          "patch_embed.proj.bias": torch.randn(d, generator=g) * 0.02,
          "rope_embed.periods": torch.arange(1, d // heads // 4 + 1, dtype=torch.float32),
          "norm.weight": torch.ones(d), "norm.bias": torch.zeros(d)}
    for i in range(DEPTH):
        sd.update(_block(g, d, f"blocks.{i}.", qkv_bias_mask=True))
    return sd


CASES = [(f"dinov2_vit{s}14{'_reg' if reg else ''}", s, reg) for s in "sbl" for reg in (False, True)]


def test_registry_and_urls():
    for name, _, _ in CASES:
        assert name in REGISTRY and name in WEIGHT_URLS
        assert WEIGHT_URLS[name].startswith("https://dl.fbaipublicfiles.com/dinov2/")
        assert WEIGHT_URLS[name].endswith("_reg4_pretrain.pth" if name.endswith("_reg") else "14_pretrain.pth")
    for name in ("dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16"):
        assert name in REGISTRY and name not in WEIGHT_URLS
        with pytest.raises(UserError, match="DINOv3 License"):
            build_backbone(name, None)


@pytest.mark.parametrize("name,size,registers", CASES)
def test_dinov2_official_layout(tmp_path, name, size, registers):
    sd = official_dinov2(size, registers, seed=len(name))
    path = tmp_path / f"{name}.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}} if size == "s" else sd, path)
    bb = build_backbone(name, str(path), arch={"depth": DEPTH})
    d = DIMS[size][0]
    assert (bb.stride, bb.feature_dim, bb.global_dim) == (14, d, d)
    vit = bb.vit
    torch.testing.assert_close(vit.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(vit.blocks[0].ls2.gamma, sd["blocks.0.ls2.gamma"], rtol=0, atol=0)
    torch.testing.assert_close(vit.patch_embed.proj.weight, sd["patch_embed.proj.weight"], rtol=0, atol=0)
    if registers:  # timm keeps registers and CLS outside the position embedding
        torch.testing.assert_close(vit.reg_token, sd["register_tokens"], rtol=0, atol=0)
        torch.testing.assert_close(vit.cls_token, sd["cls_token"] + sd["pos_embed"][:, :1], rtol=0, atol=0)
    x = bb.preprocess([np.full((50, 70, 3), 120, np.uint8), np.zeros((64, 64, 3), np.uint8)], 14 * 6)
    with torch.inference_mode():
        dense, glob = bb(x)
    assert dense.shape == (2, d, 6, 6) and glob.shape == (2, d)
    assert torch.isfinite(dense).all() and dense.std() > 0
    with pytest.raises(UserError, match="not a multiple of the backbone stride 14"):
        bb.preprocess([np.zeros((64, 64, 3), np.uint8)], 480)


def test_dinov2_keys_are_the_last_blocks_keys(tmp_path):
    """Dense = k of the last block (prefix tokens dropped), computed independently from the tokens."""
    sd = official_dinov2("s", True, seed=3)
    torch.save(sd, tmp_path / "w.pth")
    bb = build_backbone("dinov2_vits14_reg", str(tmp_path / "w.pth"), arch={"depth": DEPTH})
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    seen = {}
    bb.vit.blocks[-1].norm1.register_forward_hook(lambda m, i, o: seen.setdefault("h", o))
    with torch.inference_mode():
        dense, _ = bb(x)
    h = seen["h"][0, 5:]  # 1 CLS + 4 registers, then the 4 x 4 patches
    d = 384
    k = h @ sd["blocks.1.attn.qkv.weight"][d:2 * d].T + sd["blocks.1.attn.qkv.bias"][d:2 * d]
    torch.testing.assert_close(dense[0].flatten(1).T, k, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", ["s", "b", "l"])
def test_dinov3_official_layout(tmp_path, size):
    sd = official_dinov3(size, seed=7)
    torch.save(sd, tmp_path / "w.pth")
    name = f"dinov3_vit{size}16"
    bb = build_backbone(name, str(tmp_path / "w.pth"), arch={"depth": DEPTH})
    d = DIMS[size][0]
    assert (bb.stride, bb.feature_dim) == (16, d) and VIT_ARCH[name].endswith("_qkvb")
    attn = bb.vit.blocks[1].attn
    torch.testing.assert_close(attn.qkv.weight, sd["blocks.1.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(attn.q_bias, sd["blocks.1.attn.qkv.bias"][:d], rtol=0, atol=0)
    torch.testing.assert_close(attn.v_bias, sd["blocks.1.attn.qkv.bias"][2 * d:], rtol=0, atol=0)
    torch.testing.assert_close(bb.vit.reg_token, sd["storage_tokens"], rtol=0, atol=0)
    x = bb.preprocess([np.full((40, 90, 3), 200, np.uint8)], 16 * 5)
    with torch.inference_mode():
        dense, glob = bb(x)
    assert dense.shape == (1, d, 5, 5) and glob.shape == (1, d) and torch.isfinite(dense).all()


def test_wrong_layout_is_refused(tmp_path):
    sd = official_dinov2("s", False)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(UserError, match="do not fit"):
        build_backbone("dinov2_vitb14", str(tmp_path / "w.pth"), arch={"depth": DEPTH})
    with pytest.raises(UserError, match="do not fit"):  # registers expected but absent
        build_backbone("dinov2_vits14_reg", str(tmp_path / "w.pth"), arch={"depth": DEPTH})


def test_patch_14_grids_upsample_exactly_and_sizes_are_checked_before_any_job():
    """MaskCut / stuff upsampling are grid-agnostic: a 34 x 34 patch-14 grid maps onto 476 px blocks."""
    from u2seg.maskcut.algorithm import upsample_nearest as maskcut_up
    from u2seg.preflight import backbone_stride, check_patch_grid
    from u2seg.pseudo.stuff.model import upsample_nearest as stuff_up

    grid = np.random.default_rng(0).integers(0, 5, size=(34, 34))
    blocks = np.kron(grid, np.ones((14, 14), dtype=grid.dtype))
    assert np.array_equal(maskcut_up(grid, 476, 476), blocks)
    assert np.array_equal(stuff_up(grid, 476, 476), blocks)
    assert [backbone_stride(n) for n in ("dino_vitb8", "dinov2_vitl14_reg", "dinov3_vitb16", "efficientnet_lite2")] \
        == [8, 14, 16, 16]
    for name in REGISTRY:
        assert backbone_stride(name) in (8, 14, 16), name
    bad = check_patch_grid({"backbone": "dinov2_vitb14", "features": {"input_size": 480},
                            "embedding": {"method": "crop_cls", "crop_size": 480}})
    assert len(bad) == 2 and "476 or 490" in bad[0] and "embedding.crop_size=480" in bad[1]
    assert check_patch_grid({"backbone": "dinov2_vitb14", "features": {"input_size": 476},
                             "embedding": {"method": "crop_cls", "crop_size": 476}}) == []
