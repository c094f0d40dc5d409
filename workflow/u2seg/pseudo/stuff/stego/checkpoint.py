"""The official STEGO checkpoints (e.g. ``cocostuff27_vit_base_5.ckpt``) without executing pickled code.

A STEGO checkpoint is a PyTorch Lightning checkpoint of ``LitUnsupervisedSegmenter``: ``state_dict``
holds the DINO ViT (``net.model.*``), the head (``net.cluster1.0`` linear 1x1 conv,
``net.cluster2.{0,2}`` nonlinear branch), the cluster probe (``cluster_probe.clusters``, used here)
and the supervised linear probe (``linear_probe.*``, never used: STEGO trains it with labels).
``hyper_parameters`` holds an OmegaConf ``DictConfig``, which ``torch.load(weights_only=True)``
refuses; :func:`read_checkpoint` then reads the file with a restricted unpickler that rebuilds
tensors only and turns every other object into an inert placeholder (nothing from the file is
ever called).

The head was trained on the ViT's last-block tokens after the final LayerNorm (``dino_feat_type:
feat``), while the project's dino_vitb8 shards store last-block *keys* (MaskCut's features); the
stuff maps of this model are therefore computed from the checkpoint's own ViT on the images
(:class:`CheckpointTokens`), as STEGO's evaluation does (flip averaging; the whole image at the shards'
input size, or STEGO's centre crop): :mod:`u2seg.pseudo.stuff.stego.inference`.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from u2seg.errors import UserError
from u2seg.pseudo.stuff.stego.model import ClusterProbe, StegoHead, StegoStuffModel
from u2seg.safe_load import Opaque, load_torch_zip_tensors

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict: ``torch.load(weights_only=True)``, else the tensors-only unpickler."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"STEGO checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # Lightning hyper_parameters (OmegaConf) are refused by weights_only
        log.info("weights_only load refused %s (%s); reading its tensors only", path.name, type(exc).__name__)
        try:
            obj = load_torch_zip_tensors(path)
        except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, EOFError, ValueError) as exc2:
            raise UserError(f"cannot read STEGO checkpoint {path}: {exc2}") from exc2
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise UserError(f"{path}: not a PyTorch Lightning checkpoint (no 'state_dict'); expected an official "
                        "STEGO .ckpt such as cocostuff27_vit_base_5.ckpt")
    return obj


def resolve_checkpoint(source: str) -> Path:
    """Local path of a checkpoint given as a path or a URL (downloaded into the torch hub cache)."""
    if "://" not in source:
        return Path(source).expanduser()
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(source.split("?")[0])
    if not cache.is_file():
        log.info("downloading %s into %s", source, cache)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(source, str(cache), progress=True)
        except Exception as exc:  # network errors come in many types
            raise UserError(f"could not download the STEGO checkpoint {source} ({type(exc).__name__}: {exc}); "
                            f"download it elsewhere and set stuff.checkpoint to its path") from exc
    return cache


def hyper_parameter(obj: dict[str, Any], name: str) -> Any:
    """A value of the checkpoint's ``hyper_parameters`` cfg (DictConfig placeholder or dict), or None."""
    hp = obj.get("hyper_parameters")
    cfg = hp.get("cfg") if isinstance(hp, dict) else None
    todo, visited = [cfg], set()
    while todo:
        cur = todo.pop()
        if id(cur) in visited:  # config nodes point back at their parents
            continue
        visited.add(id(cur))
        if isinstance(cur, dict):
            if name in cur:
                value = cur[name]
                # an OmegaConf DictConfig keeps each value in a node object whose state holds `_val`
                if isinstance(value, Opaque) and isinstance(value.state, dict) and "_val" in value.state:
                    value = value.state["_val"]
                if not isinstance(value, (dict, list, tuple, Opaque)):
                    return value
            todo.extend(cur.values())
        elif isinstance(cur, Opaque):
            todo.extend([cur.state, *cur.args])
        elif isinstance(cur, (list, tuple)):
            todo.extend(cur)
    return None


def stego_model_from_checkpoint(obj: dict[str, Any]) -> StegoStuffModel:
    """Head + cluster probe of an official STEGO checkpoint (the linear probe is ignored)."""
    sd = obj["state_dict"]
    need = ["net.cluster1.0.weight", "net.cluster1.0.bias", "cluster_probe.clusters"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise UserError(f"STEGO checkpoint lacks {missing} (not a STEGO LitUnsupervisedSegmenter checkpoint?)")
    w_lin = sd["net.cluster1.0.weight"]
    dim, in_channels = int(w_lin.shape[0]), int(w_lin.shape[1])
    nonlinear = "net.cluster2.0.weight" in sd
    head = StegoHead(in_channels, dim, nonlinear=nonlinear)
    mapped = {"linear.weight": w_lin, "linear.bias": sd["net.cluster1.0.bias"]}
    if nonlinear:
        for src, dst in (("0", "0"), ("2", "2")):
            mapped[f"nonlinear.{dst}.weight"] = sd[f"net.cluster2.{src}.weight"]
            mapped[f"nonlinear.{dst}.bias"] = sd[f"net.cluster2.{src}.bias"]
    head.load_state_dict({k: v.float() for k, v in mapped.items()})
    clusters = sd["cluster_probe.clusters"].float()
    if clusters.shape[1] != dim:
        raise UserError(f"cluster probe dim {clusters.shape[1]} != head code dim {dim}")
    probe = ClusterProbe(dim, int(clusters.shape[0]))
    with torch.no_grad():
        probe.clusters.copy_(clusters)
    meta = {"source": "stego_checkpoint", "model_type": hyper_parameter(obj, "model_type"),
            "dino_patch_size": hyper_parameter(obj, "dino_patch_size"),
            "global_step": obj.get("global_step") if isinstance(obj.get("global_step"), int) else None}
    return StegoStuffModel(head, probe, meta)


class CheckpointTokens(nn.Module):
    """The checkpoint's DINO ViT: (B, 3, H, W) normalised images -> (B, C, H/p, W/p) last-block tokens
    after the final LayerNorm, CLS dropped (STEGO's ``DinoFeaturizer`` with ``feat``)."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        sd = {k[len("net.model."):]: v.float() for k, v in state_dict.items() if k.startswith("net.model.")}
        if "patch_embed.proj.weight" not in sd:
            raise UserError("STEGO checkpoint has no DINO ViT weights (net.model.*)")
        embed, _, patch, _ = sd["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
        self.vit = VisionTransformer(img_size=grid * patch, patch_size=patch, embed_dim=embed, depth=depth,
                                     num_heads=max(1, embed // 64), num_classes=0, dynamic_img_size=True)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        missing, unexpected = self.vit.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise UserError(f"STEGO checkpoint ViT does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.patch = int(patch)
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hgt, wid = x.shape
        h, w = hgt // self.patch, wid // self.patch
        from u2seg.backbones import vit_tokens
        from u2seg.pos_embed import RULES

        tokens = vit_tokens(self.vit, x, RULES["dino"])  # STEGO's DINO copy: DINO's interpolation
        return tokens[:, tokens.shape[1] - h * w:].transpose(1, 2).reshape(b, -1, h, w)


def load_stego_checkpoint(source: str) -> tuple[StegoStuffModel, CheckpointTokens]:
    """(stuff model, token extractor) of an official STEGO checkpoint at a path or URL."""
    obj = read_checkpoint(resolve_checkpoint(source))
    model = stego_model_from_checkpoint(obj)
    tokens = CheckpointTokens(obj["state_dict"])
    if tokens.vit.embed_dim != model.head.in_channels:
        raise UserError(f"STEGO head expects {model.head.in_channels} channels, its ViT gives {tokens.vit.embed_dim}")
    return model, tokens


def image_tokens(tokens: CheckpointTokens, images: list[np.ndarray], size: int) -> np.ndarray:
    """(B, C, size/p, size/p) float32 tokens of RGB images, preprocessed as the DINO feature shards."""
    from u2seg.backbones import Backbone

    if size % tokens.patch:
        raise UserError(f"features.input_size {size} is not a multiple of the STEGO ViT patch size {tokens.patch}")
    x = Backbone.preprocess(tokens_backbone_stub(tokens.patch), images, size)
    device = next(tokens.parameters()).device
    return tokens(x.to(device)).float().cpu().numpy()


def tokens_backbone_stub(stride: int) -> Any:
    """An object with the attributes ``Backbone.preprocess`` reads (stride, ImageNet mean / std)."""
    from u2seg.backbones import IMAGENET_MEAN, IMAGENET_STD

    return type("_Pre", (), {"stride": stride, "mean": IMAGENET_MEAN, "std": IMAGENET_STD})()
