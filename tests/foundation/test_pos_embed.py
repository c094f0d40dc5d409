"""ViT tokens and dense features at 224, 480 and a non-square size equal a direct implementation of
each official repository's forward (facebookresearch/dino and dinov2 ``prepare_tokens`` /
``interpolate_pos_encoding``, written out below from their formulas), on seeded random weights in the
official checkpoint layouts, and differ from timm's antialiased resampling."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from tests.recipes.test_backbones_v2v3 import DEPTH, official_dinov2
from u2seg import registry
from u2seg.backbones import build_backbone
from u2seg.pos_embed import POS_EMBED_KINDS

SIZES = [(224, 224), (480, 480), (320, 480)]


def dino_interpolate(pos_embed: torch.Tensor, npatch: int, w: int, h: int, patch: int) -> torch.Tensor:
    """facebookresearch/dino ``interpolate_pos_encoding`` (w, h: the image's dims 2 and 3)."""
    n = pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, 0], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    patch_pos = F.interpolate(
        patch_pos.reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    assert int(w0) == patch_pos.shape[-2] and int(h0) == patch_pos.shape[-1]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)


def dinov2_interpolate(pos_embed: torch.Tensor, npatch: int, w: int, h: int, patch: int,
                       offset: float, antialias: bool) -> torch.Tensor:
    """facebookresearch/dinov2 ``interpolate_pos_encoding`` with its two branches."""
    n = pos_embed.shape[1] - 1
    if npatch == n and w == h:
        return pos_embed
    pos = pos_embed.float()
    cls_pos, patch_pos = pos[:, 0], pos[:, 1:]
    dim = pos.shape[-1]
    w0, h0 = w // patch, h // patch
    m = int(math.sqrt(n))
    kwargs = ({"scale_factor": (float(w0 + offset) / m, float(h0 + offset) / m)} if offset
              else {"size": (w0, h0)})
    patch_pos = F.interpolate(patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                              antialias=antialias, **kwargs)
    assert (w0, h0) == patch_pos.shape[-2:]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)


def official_forward(sd: dict[str, torch.Tensor], vit: torch.nn.Module, x: torch.Tensor, patch: int,
                     family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens after the final norm and last-block keys of the official model (``prepare_tokens``
    from the official tensors, then the loaded blocks): ((B, T, D), (B, T, D))."""
    b, _, w, h = x.shape  # the official code's names for dims 2 and 3
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat((sd["cls_token"].expand(b, -1, -1), t), dim=1)
    npatch = t.shape[1] - 1
    if family == "dino":
        t = t + dino_interpolate(sd["pos_embed"], npatch, w, h, patch)
    else:
        registers = "register_tokens" in sd
        offset, antialias = (0.0, True) if registers else (0.1, False)  # the hub models' settings
        t = t + dinov2_interpolate(sd["pos_embed"], npatch, w, h, patch, offset, antialias)
        if registers:
            t = torch.cat((t[:, :1], sd["register_tokens"].expand(b, -1, -1), t[:, 1:]), dim=1)
    for blk in vit.blocks[:-1]:
        t = blk(t)
    last = vit.blocks[-1]
    d = t.shape[-1]
    keys = F.linear(last.norm1(t), sd[f"blocks.{len(vit.blocks) - 1}.attn.qkv.weight"][d:2 * d],
                    sd[f"blocks.{len(vit.blocks) - 1}.attn.qkv.bias"][d:2 * d])
    return vit.norm(last(t)), keys


def official_dino(seed: int) -> dict[str, torch.Tensor]:
    """A DINO ViT-S/16 state dict (timm's key names are DINO's), depth 2, strongly varying pos_embed."""
    torch.manual_seed(seed)
    sd = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=DEPTH).state_dict()
    sd["pos_embed"] = torch.randn_like(sd["pos_embed"])
    return sd


CASES = [("dino_vits16", "dino", 16), ("dinov2_vits14", "dinov2", 14), ("dinov2_vits14_reg", "dinov2", 14)]


@pytest.mark.parametrize("name,family,patch", CASES)
def test_tokens_equal_the_official_forward(tmp_path, name, family, patch):
    sd = official_dino(3) if family == "dino" else official_dinov2("s", name.endswith("_reg"), seed=5)
    torch.save(sd, tmp_path / "w.pth")
    bb = build_backbone(name, str(tmp_path / "w.pth"), arch={"depth": DEPTH})
    n_prefix = 5 if name.endswith("_reg") else 1
    g = torch.Generator().manual_seed(0)
    side = int(math.sqrt(sd["pos_embed"].shape[1] - 1)) * patch  # the pre-training size: no resampling
    for hgt, wid in [(s[0] // 16 * patch, s[1] // 16 * patch) for s in SIZES] + [(side, side)]:
        x = torch.randn(2, 3, hgt, wid, generator=g)
        with torch.inference_mode():
            tokens = bb.tokens(x)
            dense, glob = bb(x)
            ref_tokens, ref_keys = official_forward(sd, bb.vit, x, patch, family)
        h, w = hgt // patch, wid // patch
        torch.testing.assert_close(tokens, ref_tokens, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(glob, ref_tokens[:, 0], rtol=1e-5, atol=1e-5)
        ref_dense = ref_keys[:, n_prefix:].transpose(1, 2).reshape(2, -1, h, w)
        torch.testing.assert_close(dense, ref_dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,family,patch", CASES[:2])
def test_official_resampling_differs_from_timms_at_480(tmp_path, name, family, patch):
    sd = official_dino(4) if family == "dino" else official_dinov2("s", False, seed=6)
    torch.save(sd, tmp_path / "w.pth")
    bb = build_backbone(name, str(tmp_path / "w.pth"), arch={"depth": DEPTH})
    side = 480 // 16 * patch
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = bb.tokens(x)
        timms = bb.vit.forward_features(x)  # resample_abs_pos_embed: size=, antialiased
    assert (ours - timms).abs().max() > 1e-3


def test_every_backbone_names_a_known_rule():
    assert {b.pos_embed for b in registry.BACKBONES.values()} <= set(POS_EMBED_KINDS)
    assert registry.backbone("dino_vitb8").pos_embed == "dino"
    assert registry.backbone("dinov2_vitb14").pos_embed == "dinov2"
    assert registry.backbone("dinov2_vitb14_reg").pos_embed == "dinov2_reg"
    assert registry.backbone("dinov3_vitb16").pos_embed == "rope"


def test_stego_checkpoint_vit_uses_dinos_interpolation():
    """STEGO's backbone is a copy of DINO's ViT: its tokens follow DINO's rule too."""
    from u2seg.pseudo.stuff.stego.checkpoint import CheckpointTokens

    sd = official_dino(5)
    tokens = CheckpointTokens({f"net.model.{k}": v for k, v in sd.items()})
    x = torch.randn(1, 3, 320, 480, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours = tokens(x)
        ref, _ = official_forward(sd, tokens.vit, x, 16, "dino")
    torch.testing.assert_close(ours, ref[:, 1:].transpose(1, 2).reshape(1, -1, 20, 30), rtol=1e-5, atol=1e-5)
