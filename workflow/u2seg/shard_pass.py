"""The fused per-shard pass (``u2seg shard-pass``): one process from a shard's pixels to its pseudo-label inputs.

The separate jobs of one shard (``features`` -> ``maskcut`` -> ``embed`` [-> ``stego infer``]) each start a
process, build their models and read what the previous one wrote. The fused pass computes the backbone
features once, keeps them in memory and hands them to the stages' own library functions as an in-memory
shard (:class:`u2seg.features.ShardArrays`, read as the zarr group is); the zarr store is written only when
kept (``features.keep_features``) or read by a later step. Its outputs are the very files the separate
jobs write.

With an official STEGO checkpoint (``stuff.model: stego_checkpoint``) whose ViT has the feature backbone's
weights (decided by a digest of the tensors, :func:`vit_digest`, never by name), one forward serves both
MaskCut's keys and STEGO's tokens (the final-norm output, captured by a forward hook on the ViT's
``norm``) and the stuff maps are made batch by batch; otherwise the checkpoint's ViT runs a second
forward as ``u2seg stego infer`` does.
"""
from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from u2seg.errors import UserError
from u2seg.images import load_rgb
from u2seg.manifest import image_path, shard_images

if TYPE_CHECKING:  # torch and the models load in the pass, not for --help
    import torch

    from u2seg.backbones import Backbone
    from u2seg.crf import CRFParams
    from u2seg.features import ShardArrays
    from u2seg.pseudo.stuff.stego.checkpoint import CheckpointTokens
    from u2seg.pseudo.stuff.stego.model import StegoStuffModel

log = logging.getLogger(__name__)

# batch callback of the forward loop: (shard images, their RGB arrays, STEGO tokens (B, C, h, w) or None)
BatchHook = Callable[[list[dict[str, Any]], list[np.ndarray], "np.ndarray | None"], None]


def tensor_digest(state: dict[str, "torch.Tensor"]) -> str:
    """SHA-256 over the sorted (name, shape, float32 bytes) of a state dict's tensors."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().float().cpu().contiguous()
        h.update(name.encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes())
    return h.hexdigest()


def vit_digest(vit: "torch.nn.Module") -> str:
    """Digest of a timm ViT's weights (:func:`tensor_digest` of its state dict)."""
    return tensor_digest(vit.state_dict())


def shares_forward(backbone: "Backbone", tokens: "CheckpointTokens") -> bool:
    """True when the STEGO checkpoint's ViT computes what the feature backbone computes on the same input:
    equal weights (tensor digest), patch size, position-embedding rule and normalisation."""
    from u2seg.pos_embed import RULES

    vit = getattr(backbone, "vit", None)
    if vit is None or getattr(backbone, "pos_rule", None) is not RULES["dino"]:
        return False
    if int(backbone.stride) != int(tokens.patch) or tuple(backbone.mean) != tuple(tokens_norm()[0]) \
            or tuple(backbone.std) != tuple(tokens_norm()[1]):
        return False
    return vit_digest(vit) == vit_digest(tokens.vit)


def tokens_norm() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the STEGO checkpoint path normalises images with (``stego.checkpoint.image_tokens``)."""
    from u2seg.backbones import IMAGENET_MEAN, IMAGENET_STD

    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)


def _decode(manifest: dict[str, Any], metas: list[dict[str, Any]]) -> list[np.ndarray]:
    """RGB arrays of a batch of manifest images (checked against the ingested sizes)."""
    rgb = [load_rgb(image_path(manifest, im)) for im in metas]
    for im, arr in zip(metas, rgb):
        if arr.shape[:2] != (im["height"], im["width"]):
            raise UserError(f"{im['file_name']}: size changed since ingestion "
                            f"({arr.shape[1]}x{arr.shape[0]} vs {im['width']}x{im['height']}); rerun ingest")
    return rgb


def compute_features(manifest: dict[str, Any], shard: int, shard_size: int, backbone: "Backbone",
                     input_size: int, batch_size: int, name: str, capture_tokens: bool = False,
                     on_batch: BatchHook | None = None) -> "ShardArrays":
    """The shard's features (named ``name``, the zarr store's folder name), batch by batch as ``u2seg
    features`` computes them (decoding of batch i + 1 overlaps the forward of batch i), written into one
    preallocated array (the shard's dense features are held once). With ``capture_tokens`` the ViT's
    final-norm patch tokens of each batch (float32, CLS dropped, (B, C, h, w)) go to ``on_batch`` with the
    batch's images and RGB arrays."""

    from u2seg.features import forward_batch, shard_arrays, shard_attrs

    metas = shard_images(manifest, shard, shard_size)
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    captured: list[torch.Tensor] = []
    handle = None
    if capture_tokens:
        handle = backbone.vit.norm.register_forward_hook(lambda _m, _a, out: captured.append(out))
    t0 = time.perf_counter()
    batches = [metas[i:i + batch_size] for i in range(0, len(metas), batch_size)]
    dense_all: np.ndarray | None = None
    glob_all: np.ndarray | None = None

    def load(batch: list[dict[str, Any]]) -> tuple[list[np.ndarray], torch.Tensor]:
        rgb = _decode(manifest, batch)
        return rgb, backbone.preprocess(rgb, input_size)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, batches[0])
            start = 0
            for i, batch in enumerate(batches):
                rgb, x = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(load, batches[i + 1])
                captured.clear()
                dense, glob = forward_batch(backbone, x)
                if dense_all is None or glob_all is None:
                    dense_all = np.empty((len(metas),) + dense.shape[1:], dtype=dense.dtype)
                    glob_all = np.empty((len(metas),) + glob.shape[1:], dtype=glob.dtype)
                dense_all[start:start + len(batch)] = dense
                glob_all[start:start + len(batch)] = glob
                start += len(batch)
                tokens = None
                if capture_tokens:
                    h, w = dense.shape[2:]
                    t = captured[-1]
                    tokens = t[:, t.shape[1] - h * w:].transpose(1, 2).reshape(len(batch), -1, h, w)
                    tokens = tokens.float().cpu().numpy()
                del dense, glob
                if on_batch is not None:
                    on_batch(batch, rgb, tokens)
    finally:
        if handle is not None:
            handle.remove()
    assert dense_all is not None and glob_all is not None
    attrs = shard_attrs(backbone, input_size, shard, shard_size, time.perf_counter() - t0)
    return shard_arrays(name, dense_all, glob_all, np.array([im["id"] for im in metas]),
                        np.array([[im["height"], im["width"]] for im in metas]), attrs)


class StegoMapWriter:
    """Stuff maps of a shard from STEGO tokens, batch by batch, into ``out_maps`` (the files
    ``u2seg stego infer`` writes: one PNG per image + ``_shard.json``)."""

    def __init__(self, model: "StegoStuffModel", crf: "CRFParams | None", folder: Path):
        self.model, self.crf, self.folder = model, crf, Path(folder)
        self.pixels = np.zeros(model.num_classes, dtype=np.int64)
        self.images = 0
        self.t0 = time.perf_counter()

    def __call__(self, metas: list[dict[str, Any]], rgb: list[np.ndarray], tokens: np.ndarray | None) -> None:
        from u2seg.pseudo.io import png_name, save_png_plain
        from u2seg.pseudo.stuff.model import stuff_map

        assert tokens is not None
        for im, image, dense in zip(metas, rgb, tokens):
            labels = stuff_map(self.model, dense, im["height"], im["width"], image if self.crf else None, self.crf)
            self.pixels += np.bincount(labels.ravel(), minlength=self.model.num_classes)[:self.model.num_classes]
            save_png_plain(self.folder / png_name(im), labels)
            self.images += 1

    def finish(self) -> None:
        from u2seg.atomic import write_json

        write_json(self.folder / "_shard.json", {"images": self.images, "pixels": self.pixels.tolist(),
                                                  "seconds": round(time.perf_counter() - self.t0, 3)})
