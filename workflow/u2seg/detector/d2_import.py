"""``u2seg import-d2``: map a detectron2 Panoptic-FPN / Cascade Mask R-CNN checkpoint onto this model.

Accepts the released U2Seg (``cocotrain_300_0089999.pth``: R50-FPN, cascade, K = 300, semantic head
28 classes) and CutLER (``cutler_cascade_final.pth``: 1 class, no semantic head) checkpoints, and
detectron2-format ``.pkl`` backbones (``dino_RN50_pretrain_d2_format.pkl``). Key mapping:

  backbone.bottom_up.stem.conv1[.norm]         -> backbone.body.conv1 / bn1            (timm ResNet)
  backbone.bottom_up.res{s}.{b}.conv{i}[.norm] -> backbone.body.layer{s-1}.{b}.conv{i} / bn{i}
  backbone.bottom_up.res{s}.{b}.shortcut[.norm]-> backbone.body.layer{s-1}.{b}.downsample.0 / .1
  backbone.fpn_lateral{l}[.norm] / fpn_output{l} -> fpn.inner_blocks.{l-2}.0 / .1, fpn.layer_blocks.{l-2}.*
  proposal_generator.rpn_head.{conv, objectness_logits, anchor_deltas} -> rpn.head.{conv.0.0, cls_logits, bbox_pred}
  roi_heads.box_head.{s}.fc{1,2} / box_predictor.{s}.{cls_score, bbox_pred} -> roi_heads.box_heads / box_predictors
  roi_heads.mask_head.mask_fcn{i} / deconv / predictor -> roi_heads.mask_head.{i-1}.0 / mask_predictor.*
  sem_seg_head.p{l}.{j}[.norm] / predictor      -> sem_head.scale_heads.p{l}.{j} / sem_head.predictor

Both sides put the background class last in ``cls_score`` and use class-agnostic box deltas, so no
row is permuted. A BGR checkpoint (``--input-format BGR``) gets its first convolution's input channels
and pixel statistics reversed so that the converted model takes RGB like every u2seg model.
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np

from u2seg import registry
from u2seg.detector.d2_format import NORM_BUFFER, d2_resnet_to_timm, load_d2_checkpoint, load_d2_pickle
from u2seg.detector.d2_keys import d2_to_u2seg
from u2seg.detector.params import PIXEL_STATS, ModelConfig
from u2seg.errors import UserError
from u2seg.params import record_beside

if TYPE_CHECKING:  # torch and the model load in import_checkpoint, not for `u2seg import-d2 --help`
    import torch

__all__ = ["import_checkpoint", "infer_config", "convert_state_dict", "map_key", "load_d2_checkpoint",
           "load_d2_pickle", "d2_resnet_to_timm"]

log = logging.getLogger(__name__)

RESNET_DEPTHS = {b.resnet_blocks: n for n, b in registry.DETECTOR_BACKBONES.items() if b.resnet_blocks}
DEFAULT_CASCADE = ([0.5, 0.6, 0.7], [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]])
# Non-parameter entries of a detectron2 state dict that the converted model does not store: the pixel
# statistics (read into the model config instead) and the anchors of old checkpoints (recomputed).
IGNORED = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*)$")


def _resnet_arch(sd: dict[str, torch.Tensor]) -> str:
    counts = []
    for stage in (2, 3, 4, 5):
        blocks = {int(m.group(1)) for k in sd for m in [re.match(rf"backbone\.bottom_up\.res{stage}\.(\d+)\.", k)] if m}
        counts.append(len(blocks))
    arch = RESNET_DEPTHS.get(tuple(counts))
    if arch is None:
        raise UserError(f"unsupported detectron2 backbone: ResNet blocks per stage {counts} "
                        "(supported: R50 (3,4,6,3), R101 (3,4,23,3))")
    return arch


def _config_floats(t: torch.Tensor) -> list[float]:
    """Values of a float32 buffer as the shortest decimals that round to them (123.675, not
    123.67500305175781): the config value the checkpoint was made from, so export + import round-trips."""
    return [float(str(np.float32(v))) for v in t.flatten().tolist()]


def infer_config(sd: dict[str, torch.Tensor], **overrides: Any) -> ModelConfig:
    """Model config matching a detectron2 state dict (class counts, dims, norms, cascade stages)."""
    if not any(k.startswith("backbone.bottom_up.res") for k in sd):
        if any(k.startswith(("stem.", "res2.")) for k in sd):
            raise UserError("this is a backbone-only detectron2 file (stem.* / res*.* keys, e.g. "
                            "dino_RN50_pretrain_d2_format.pkl): use it as model.backbone_weights with "
                            "model.backbone: resnet50, not with import-d2")
        raise UserError("not a detectron2 ResNet-FPN checkpoint (no backbone.bottom_up.res* keys)")
    stages = sorted({int(m.group(1)) for k in sd for m in [re.match(r"roi_heads\.box_predictor\.(\d+)\.", k)] if m})
    if not stages:
        if "roi_heads.box_predictor.cls_score.weight" in sd:
            raise UserError("standard (non-cascade) ROI heads are not supported: the model is a cascade with "
                            "class-agnostic boxes")
        raise UserError("no roi_heads.box_predictor.* keys: not a Mask R-CNN checkpoint")
    if stages != list(range(len(stages))):
        raise UserError(f"cascade stage indices {stages} are not 0..n-1")
    cls = sd["roi_heads.box_predictor.0.cls_score.weight"]
    k = cls.shape[0] - 1
    if sd["roi_heads.box_predictor.0.bbox_pred.weight"].shape[0] != 4:
        raise UserError("class-specific box regression is not supported (CLS_AGNOSTIC_BBOX_REG must be True)")
    if "roi_heads.mask_head.predictor.weight" not in sd:
        raise UserError("the checkpoint has no mask head")
    if sd["roi_heads.mask_head.predictor.weight"].shape[0] != k:
        raise UserError("class-agnostic masks with several classes are not supported")
    if any(re.match(r"roi_heads\.mask_head\.mask_fcn\d\.norm\.", key) for key in sd):
        raise UserError("a normalised mask head is not supported")
    if "backbone.fpn_lateral2.norm.weight" in sd and "backbone.fpn_lateral2.norm.running_mean" not in sd:
        raise UserError("an FPN with GroupNorm is not supported (BN / SyncBN / none are)")
    sem = sd.get("sem_seg_head.predictor.weight")
    if len(stages) == 3:
        ious, weights = DEFAULT_CASCADE
    else:
        ious = overrides.get("cascade_ious")
        weights = overrides.get("cascade_bbox_weights")
        if not ious or not weights:
            raise UserError(f"{len(stages)} cascade stages: give --cascade-ious and --cascade-bbox-weights")
    cfg: dict[str, Any] = {
        "num_classes": k,
        "num_stuff": int(sem.shape[0]) - 1 if sem is not None else 0,
        "backbone": _resnet_arch(sd),
        "backbone_weights": None,
        "norm": "frozen_bn",
        "fpn_norm": "frozen_bn" if "backbone.fpn_lateral2.norm.running_mean" in sd else "none",
        "fpn_channels": int(sd["backbone.fpn_output2.weight"].shape[0]),
        "box_fc_dim": int(sd["roi_heads.box_head.0.fc1.weight"].shape[0]),
        "mask_conv_dim": int(sd["roi_heads.mask_head.mask_fcn1.weight"].shape[0]),
        "cascade_ious": list(ious),
        "cascade_bbox_weights": [list(w) for w in weights],
        "anchor_ratios": [0.5, 1.0, 2.0],
    }
    n_anchors = sd["proposal_generator.rpn_head.objectness_logits.weight"].shape[0]
    if n_anchors != 3:
        raise UserError(f"{n_anchors} anchors per location; only 3 aspect ratios (0.5, 1, 2) are supported")
    if sem is not None:
        cfg["sem_conv_dim"] = int(sd["sem_seg_head.predictor.weight"].shape[1])
        cfg["sem_norm_groups"] = 32 if "sem_seg_head.p2.0.norm.weight" in sd else 0
    mean, std = PIXEL_STATS["resnet50"]
    if "pixel_mean" in sd:
        mean = _config_floats(sd["pixel_mean"])
    if "pixel_std" in sd:
        std = _config_floats(sd["pixel_std"])
    cfg["pixel_mean"], cfg["pixel_std"] = list(mean), list(std)
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    return ModelConfig(**cfg)


def map_key(key: str) -> str | None:
    """detectron2 key -> u2seg key (None when the key has no counterpart; the table: :mod:`u2seg.detector.d2_keys`)."""
    return d2_to_u2seg(key)


def convert_state_dict(sd: dict[str, torch.Tensor], input_format: str = "RGB") -> tuple[dict[str, torch.Tensor], list[str]]:
    """(u2seg state dict, detectron2 keys without a counterpart). Norm buffers (running stats and
    ``num_batches_tracked``) are mapped like the parameters; :func:`fit_norm_buffers` then fits the
    step counters to the target's norm layers."""
    out, unused = {}, []
    for key, value in sd.items():
        new = map_key(key)
        if new is None:
            if not IGNORED.match(key):
                unused.append(key)
            continue
        out[new] = value.detach().clone().float() if value.is_floating_point() else value.detach().clone()
    if input_format.upper() == "BGR":
        stem = "backbone.body.conv1.weight"
        out[stem] = out[stem].flip(1)
    return out, unused


def fit_norm_buffers(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, int]:
    """Make the BN step counters of ``state`` fit ``target`` (in place); every other key is untouched.

    * ``num_batches_tracked`` of a (Sync)BN checkpoint whose target is a FrozenBN (no such buffer): dropped;
    * a target BN's ``num_batches_tracked`` that the checkpoint lacks (a FrozenBN checkpoint): set to 0,
      which only matters for BN momentum None (not used).
    Running means and variances are never invented: a norm without them is reported as missing.
    """
    dropped = [k for k in state if k.endswith(NORM_BUFFER) and k not in target]
    for k in dropped:
        del state[k]
    zeroed = [k for k in target if k.endswith(NORM_BUFFER) and k not in state]
    for k in zeroed:
        state[k] = target[k].new_zeros(target[k].shape)
    return {"num_batches_tracked_dropped": len(dropped), "num_batches_tracked_zeroed": len(zeroed)}


def import_checkpoint(source: str | Path, dest: str | Path, input_format: str = "RGB",
                      category_names: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Convert ``source`` (detectron2) into a u2seg model file ``dest``; returns a small report."""
    from u2seg.detector import checkpoint as ckpt
    from u2seg.detector.model import build_model

    sd = load_d2_checkpoint(source)
    cfg = infer_config(sd, **overrides)
    if input_format.upper() == "BGR":  # detectron2's PIXEL_MEAN/STD are in INPUT.FORMAT order
        cfg.pixel_mean, cfg.pixel_std = list(cfg.pixel_mean)[::-1], list(cfg.pixel_std)[::-1]
    state, unused = convert_state_dict(sd, input_format)
    model = build_model(cfg, load_pretrained=False)
    own = model.state_dict()
    buffers = fit_norm_buffers(state, own)
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise UserError(f"{source}: conversion incomplete: missing {missing[:5]}, unexpected {extra[:5]}, "
                        f"shape mismatch {bad[:5]}")
    state = {k: state[k].to(own[k].dtype) for k in own}
    model.load_state_dict(state, strict=True)
    if unused:
        log.warning("%d detectron2 keys had no counterpart and were dropped: %s", len(unused), unused[:8])
    names = category_names or [f"cluster_{i}" for i in range(cfg.num_classes)]
    if len(names) != cfg.num_classes:
        raise UserError(f"{len(names)} category names for {cfg.num_classes} classes")
    cats = [{"id": i + 1, "name": n, "isthing": 1} for i, n in enumerate(names)]
    ckpt.save_model(dest, model.state_dict(), cfg.to_dict(), cats,
                    {"source": str(source), "format": "detectron2", "input_format": input_format.upper()})
    report = {"num_classes": cfg.num_classes, "num_stuff": cfg.num_stuff, "backbone": cfg.backbone,
              "stages": len(cfg.cascade_ious), "tensors": len(state), "unused_keys": unused, **buffers}
    log.info("imported %s -> %s: %s", source, dest, {k: v for k, v in report.items() if k != "unused_keys"})
    return report


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Source, destination, and what the checkpoint cannot tell."""
    parser.add_argument("--input", required=True, help="detectron2 checkpoint (.pth) or .pkl")
    parser.add_argument("--output", required=True, help="u2seg model file to write (usable by `u2seg predict`)")
    parser.add_argument("--input-format", choices=["RGB", "BGR"], default="RGB",
                        help="INPUT.FORMAT of the detectron2 config (U2Seg and CutLER DINO configs: RGB)")
    parser.add_argument("--pixel-mean", type=float, nargs=3, default=None, help="MODEL.PIXEL_MEAN (0..255, in --input-format order)")
    parser.add_argument("--pixel-std", type=float, nargs=3, default=None, help="MODEL.PIXEL_STD")
    parser.add_argument("--category-names", nargs="+", default=None, help="thing class names (default cluster_i)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.output)


def run(args: argparse.Namespace) -> int:
    """Convert and write."""
    import_checkpoint(args.input, args.output, args.input_format, args.category_names,
                      pixel_mean=args.pixel_mean, pixel_std=args.pixel_std)
    return 0
