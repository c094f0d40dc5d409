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
import io
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from u2seg.detector import checkpoint as ckpt
from u2seg.detector.model import PIXEL_STATS, ModelConfig, build_model
from u2seg.errors import UserError

log = logging.getLogger(__name__)

RESNET_DEPTHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}
DEFAULT_CASCADE = ([0.5, 0.6, 0.7], [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]])
IGNORED = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*|.*num_batches_tracked)$")


# ------------------------------------------------------------------------------------ reading
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for detectron2 .pkl weights: numpy arrays and builtin containers only."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")


def load_d2_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a detectron2 ``.pkl`` (``{"model": {name: ndarray}}`` or a plain dict)."""
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise UserError(f"cannot read detectron2 pickle {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise UserError(f"{path}: no weights dict inside")
    return {k: torch.as_tensor(np.asarray(v)) for k, v in obj.items() if isinstance(v, (np.ndarray, np.generic))}


def load_d2_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a detectron2 ``.pth`` (safe load) or ``.pkl`` file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"detectron2 checkpoint not found: {path}")
    if path.suffix == ".pkl":
        return load_d2_pickle(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise UserError(
            f"cannot load {path} safely ({exc}). If it holds optimizer/scheduler objects, keep only its "
            "'model' entry: torch.save({'model': torch.load(p, weights_only=False)['model']}, 'clean.pth') "
            "in an environment you trust.") from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise UserError(f"{path}: no state dict inside")
    return {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))) for k, v in obj.items()}


# ------------------------------------------------------------------------------------ mapping
_NORM_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _map_resnet_key(key: str) -> str | None:
    """detectron2 ResNet key (without ``backbone.bottom_up.``) -> timm ResNet key, None if unknown."""
    m = re.fullmatch(r"stem\.conv1\.(weight|bias)", key)
    if m:
        return f"conv1.{m.group(1)}"
    m = re.fullmatch(r"stem\.conv1\.norm\.(\w+)", key)
    if m:
        return f"bn1.{m.group(1)}"
    m = re.fullmatch(r"res(\d)\.(\d+)\.conv(\d)\.weight", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.weight"
    m = re.fullmatch(r"res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.bn{m.group(3)}.{m.group(4)}"
    m = re.fullmatch(r"res(\d)\.(\d+)\.shortcut\.weight", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.0.weight"
    m = re.fullmatch(r"res(\d)\.(\d+)\.shortcut\.norm\.(\w+)", key)
    if m:
        return f"layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.1.{m.group(3)}"
    return None


def d2_resnet_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detectron2 ResNet state dict (e.g. the DINO RN50 d2 .pkl) in timm key names."""
    out, unknown = {}, []
    for k, v in sd.items():
        key = k[len("backbone.bottom_up."):] if k.startswith("backbone.bottom_up.") else k
        new = _map_resnet_key(key)
        if new is None:
            if not key.startswith(("fc.", "linear.")):
                unknown.append(k)
            continue
        out[new] = v
    if unknown:
        raise UserError(f"unrecognised detectron2 ResNet keys: {unknown[:5]}")
    return out


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


def infer_config(sd: dict[str, torch.Tensor], **overrides: Any) -> ModelConfig:
    """Model config matching a detectron2 state dict (class counts, dims, norms, cascade stages)."""
    if not any(k.startswith("backbone.bottom_up.res") for k in sd):
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
        mean = [float(v) for v in sd["pixel_mean"].flatten()]
    if "pixel_std" in sd:
        std = [float(v) for v in sd["pixel_std"].flatten()]
    cfg["pixel_mean"], cfg["pixel_std"] = list(mean), list(std)
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    return ModelConfig(**cfg)


def map_key(key: str) -> str | None:
    """detectron2 key -> u2seg key (None when the key has no counterpart)."""
    if key.startswith("backbone.bottom_up."):
        new = _map_resnet_key(key[len("backbone.bottom_up."):])
        return f"backbone.body.{new}" if new else None
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.(weight|bias)", key)
    if m:
        block = "inner_blocks" if m.group(1) == "lateral" else "layer_blocks"
        return f"fpn.{block}.{int(m.group(2)) - 2}.0.{m.group(3)}"
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.norm\.(\w+)", key)
    if m:
        block = "inner_blocks" if m.group(1) == "lateral" else "layer_blocks"
        return f"fpn.{block}.{int(m.group(2)) - 2}.1.{m.group(3)}"
    rpn = {"conv": "conv.0.0", "objectness_logits": "cls_logits", "anchor_deltas": "bbox_pred"}
    m = re.fullmatch(r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)", key)
    if m:
        return f"rpn.head.{rpn[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.box_head\.(\d+)\.(fc\d)\.(weight|bias)", key)
    if m:
        return f"roi_heads.box_heads.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"roi_heads\.box_predictor\.(\d+)\.(cls_score|bbox_pred)\.(weight|bias)", key)
    if m:
        return f"roi_heads.box_predictors.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", key)
    if m:
        return f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"
    m = re.fullmatch(r"roi_heads\.mask_head\.(deconv|predictor)\.(weight|bias)", key)
    if m:
        name = "conv5_mask" if m.group(1) == "deconv" else "mask_fcn_logits"
        return f"roi_heads.mask_predictor.{name}.{m.group(2)}"
    m = re.fullmatch(r"sem_seg_head\.(p\d)\.(\d+)\.(weight|bias|norm\.weight|norm\.bias)", key)
    if m:
        return f"sem_head.scale_heads.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"sem_seg_head\.predictor\.(weight|bias)", key)
    if m:
        return f"sem_head.predictor.{m.group(1)}"
    return None


def convert_state_dict(sd: dict[str, torch.Tensor], input_format: str = "RGB") -> tuple[dict[str, torch.Tensor], list[str]]:
    """(u2seg state dict, detectron2 keys without a counterpart)."""
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


def import_checkpoint(source: str | Path, dest: str | Path, input_format: str = "RGB",
                      category_names: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Convert ``source`` (detectron2) into a u2seg model file ``dest``; returns a small report."""
    sd = load_d2_checkpoint(source)
    cfg = infer_config(sd, **overrides)
    if input_format.upper() == "BGR":  # detectron2's PIXEL_MEAN/STD are in INPUT.FORMAT order
        cfg.pixel_mean, cfg.pixel_std = list(cfg.pixel_mean)[::-1], list(cfg.pixel_std)[::-1]
    state, unused = convert_state_dict(sd, input_format)
    model = build_model(cfg, load_pretrained=False)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    extra = [k for k in state if k not in own]
    bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or bad:
        raise UserError(f"{source}: conversion incomplete: missing {missing[:5]}, unexpected {extra[:5]}, "
                        f"shape mismatch {bad[:5]}")
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
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
              "stages": len(cfg.cascade_ious), "tensors": len(state), "unused_keys": unused}
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


def run(args: argparse.Namespace) -> int:
    """Convert and write."""
    import_checkpoint(args.input, args.output, args.input_format, args.category_names,
                      pixel_mean=args.pixel_mean, pixel_std=args.pixel_std)
    return 0
