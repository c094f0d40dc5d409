"""``u2seg export-d2``: a u2seg model file -> a detectron2 checkpoint + the detectron2 config that builds it.

The checkpoint is what ``DetectionCheckpointer.save`` writes (``{"model": state_dict, ...}``, ``.pth``) or
detectron2's ``.pkl`` layout (``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics":
False}``); the yaml is a complete detectron2 config (PanopticFPN + CascadeROIHeads when the model has a
semantic head, GeneralizedRCNN + CascadeROIHeads otherwise, as U2Seg's and CutLER's configs) for which
``build_model`` + ``DetectionCheckpointer`` load the checkpoint with no missing or unexpected keys.

Key names come from the same table as ``import-d2``'s (:mod:`u2seg.detector.d2_keys`); each is checked to map back.
Norm layers: ``--norm`` picks detectron2's RESNETS.NORM / FPN.NORM (SyncBN as U2Seg's configs, BN or
FrozenBN); (Sync)BN layers get a ``num_batches_tracked`` (the model's own counter, 0 for a FrozenBN
model), FrozenBN layers have none.
"""
from __future__ import annotations

import argparse
import logging
import pickle
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import yaml

from u2seg import registry
from u2seg.atomic import write_bytes, write_text
from u2seg.detector.d2_format import NORM_BUFFER
from u2seg.detector.d2_keys import u2seg_to_d2
from u2seg.detector.d2_import import map_key
from u2seg.detector.params import FPN_STRIDES, ModelConfig
from u2seg.errors import UserError
from u2seg.params import record_beside

if TYPE_CHECKING:  # torch loads where models are read and written, not for `u2seg export-d2 --help`
    import torch

log = logging.getLogger(__name__)

D2_NORMS = ("SyncBN", "BN", "FrozenBN")
RESNET_DEPTH = {n: b.resnet_depth for n, b in registry.DETECTOR_BACKBONES.items() if b.resnet_depth}


def export_key(key: str) -> str:
    """u2seg key -> detectron2 key (UserError for a key detectron2's model has no place for)."""
    new = u2seg_to_d2(key)
    if new is None:
        raise UserError(f"no detectron2 counterpart for model tensor {key!r}")
    return new


def check_exportable(cfg: ModelConfig) -> None:
    """Refuse configurations that detectron2's stock PanopticFPN / CascadeROIHeads cannot express."""
    if cfg.backbone not in RESNET_DEPTH:
        raise UserError(f"export-d2 needs a ResNet backbone (resnet50 / resnet101), not {cfg.backbone!r}: "
                        "detectron2 has no timm backbones")
    if cfg.size_divisibility != 32:
        raise UserError(f"size_divisibility {cfg.size_divisibility}: detectron2's FPN pads to 32")
    if cfg.num_stuff and cfg.sem_norm_groups not in (0, 32):
        raise UserError(f"sem_norm_groups {cfg.sem_norm_groups}: detectron2's GN has 32 groups (or none)")
    if cfg.droploss:
        log.warning("DropLoss is a CutLER extension; the exported config uses stock CascadeROIHeads "
                    "(inference is the same, training without DropLoss)")


def export_state_dict(state: dict[str, torch.Tensor], norm: str = "SyncBN") -> dict[str, torch.Tensor]:
    """detectron2 state dict of a u2seg one; (Sync)BN step counters added or FrozenBN ones dropped."""
    import torch

    if norm not in D2_NORMS:
        raise UserError(f"--norm must be one of {D2_NORMS}, got {norm!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(NORM_BUFFER):
            continue  # decided below from the exported norm type
        new = export_key(key)
        if map_key(new) != key:
            raise UserError(f"internal: {key} -> {new} does not map back")
        out[new] = value.detach().clone()
    if norm != "FrozenBN":
        for key in [k for k in out if k.endswith(".norm.running_var")]:
            counter = key[: -len("running_var")] + NORM_BUFFER
            own = state.get(map_key(counter) or "")  # a trainable-BN model has its own counter
            out[counter] = own.clone() if own is not None else torch.tensor(0, dtype=torch.int64)
    return out


def d2_config(cfg: ModelConfig, norm: str = "SyncBN", weights: str = "", min_size: int = 800,
              max_size: int = 1333, combine: dict[str, float] | None = None) -> dict[str, Any]:
    """A complete detectron2 config (nested dict) for the model; merge it into ``get_cfg()``."""
    combine = combine or {}
    fpn_norm = "" if cfg.fpn_norm == "none" else norm
    model: dict[str, Any] = {
        "META_ARCHITECTURE": "PanopticFPN" if cfg.num_stuff else "GeneralizedRCNN",
        "MASK_ON": True,
        "WEIGHTS": weights,
        "PIXEL_MEAN": [float(v) for v in cfg.pixel_mean],
        "PIXEL_STD": [float(v) for v in cfg.pixel_std],
        "BACKBONE": {"NAME": "build_resnet_fpn_backbone", "FREEZE_AT": 0},
        "RESNETS": {"DEPTH": RESNET_DEPTH[cfg.backbone], "NORM": norm, "STRIDE_IN_1X1": False,
                    "OUT_FEATURES": ["res2", "res3", "res4", "res5"], "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64,
                    "RES5_DILATION": 1, "STEM_OUT_CHANNELS": 64, "RES2_OUT_CHANNELS": 256},
        "FPN": {"IN_FEATURES": ["res2", "res3", "res4", "res5"], "OUT_CHANNELS": cfg.fpn_channels,
                "NORM": fpn_norm, "FUSE_TYPE": "sum"},
        "ANCHOR_GENERATOR": {"NAME": "DefaultAnchorGenerator", "SIZES": [[int(s)] for s in cfg.anchor_sizes],
                             "ASPECT_RATIOS": [[float(r) for r in cfg.anchor_ratios]], "OFFSET": 0.0},
        "PROPOSAL_GENERATOR": {"NAME": "RPN"},
        "RPN": {"HEAD_NAME": "StandardRPNHead", "IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
                "IOU_THRESHOLDS": [cfg.rpn_bg_iou, cfg.rpn_fg_iou], "IOU_LABELS": [0, -1, 1],
                "BATCH_SIZE_PER_IMAGE": cfg.rpn_batch_per_image, "POSITIVE_FRACTION": cfg.rpn_positive_fraction,
                "BBOX_REG_LOSS_TYPE": "smooth_l1", "SMOOTH_L1_BETA": 0.0,
                "PRE_NMS_TOPK_TRAIN": cfg.rpn_pre_nms_topk_train, "PRE_NMS_TOPK_TEST": cfg.rpn_pre_nms_topk_test,
                "POST_NMS_TOPK_TRAIN": cfg.rpn_post_nms_topk_train,
                "POST_NMS_TOPK_TEST": cfg.rpn_post_nms_topk_test, "NMS_THRESH": cfg.rpn_nms_thresh},
        "ROI_HEADS": {"NAME": "CascadeROIHeads", "IN_FEATURES": ["p2", "p3", "p4", "p5"],
                      "NUM_CLASSES": cfg.num_classes, "BATCH_SIZE_PER_IMAGE": cfg.roi_batch_per_image,
                      "POSITIVE_FRACTION": cfg.roi_positive_fraction,
                      "IOU_THRESHOLDS": [float(cfg.cascade_ious[0])], "IOU_LABELS": [0, 1],
                      "SCORE_THRESH_TEST": cfg.score_thresh_test, "NMS_THRESH_TEST": cfg.nms_thresh_test,
                      "PROPOSAL_APPEND_GT": True},
        "ROI_BOX_HEAD": {"NAME": "FastRCNNConvFCHead", "NUM_FC": 2, "FC_DIM": cfg.box_fc_dim, "NUM_CONV": 0,
                         "NORM": "", "POOLER_RESOLUTION": 7, "POOLER_TYPE": "ROIAlignV2",
                         "POOLER_SAMPLING_RATIO": 0, "CLS_AGNOSTIC_BBOX_REG": True,
                         "BBOX_REG_LOSS_TYPE": "smooth_l1", "SMOOTH_L1_BETA": 0.0},
        "ROI_BOX_CASCADE_HEAD": {"IOUS": [float(t) for t in cfg.cascade_ious],
                                 "BBOX_REG_WEIGHTS": [[float(v) for v in w] for w in cfg.cascade_bbox_weights]},
        "ROI_MASK_HEAD": {"NAME": "MaskRCNNConvUpsampleHead", "NUM_CONV": 4, "CONV_DIM": cfg.mask_conv_dim,
                          "NORM": "", "POOLER_RESOLUTION": 14, "POOLER_TYPE": "ROIAlignV2",
                          "POOLER_SAMPLING_RATIO": 0, "CLS_AGNOSTIC_MASK": False},
    }
    if cfg.num_stuff:
        model["SEM_SEG_HEAD"] = {"NAME": "SemSegFPNHead", "IN_FEATURES": ["p2", "p3", "p4", "p5"],
                                 "NUM_CLASSES": cfg.num_stuff + 1, "CONVS_DIM": cfg.sem_conv_dim,
                                 "COMMON_STRIDE": 4, "NORM": "GN" if cfg.sem_norm_groups else "",
                                 "LOSS_WEIGHT": cfg.sem_loss_weight, "IGNORE_VALUE": 255}
        model["PANOPTIC_FPN"] = {"INSTANCE_LOSS_WEIGHT": 1.0, "COMBINE": {
            "ENABLED": True, "OVERLAP_THRESH": float(combine.get("overlap_thresh", 0.5)),
            "STUFF_AREA_LIMIT": int(combine.get("stuff_area_thresh", 4096)),
            "INSTANCES_CONFIDENCE_THRESH": float(combine.get("instance_score_thresh", 0.5))}}
    return {
        "MODEL": model,
        "INPUT": {"FORMAT": "RGB", "MIN_SIZE_TEST": min_size, "MAX_SIZE_TEST": max_size, "MASK_FORMAT": "bitmask"},
        "TEST": {"DETECTIONS_PER_IMAGE": cfg.detections_per_image},
        "DATALOADER": {"FILTER_EMPTY_ANNOTATIONS": False},
        "VERSION": 2,
    }


def save_d2_checkpoint(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """``.pth``: ``{"model": tensors}`` (DetectionCheckpointer layout); ``.pkl``: numpy arrays (d2 layout)."""
    path = Path(path)
    if path.suffix == ".pkl":
        obj = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "u2seg export-d2",
               "matching_heuristics": False}
        write_bytes(path, pickle.dumps(obj, protocol=4))
    else:
        from u2seg.detector import checkpoint as ckpt

        ckpt.save(path, {"model": state, "__author__": "u2seg export-d2"})


def default_config_path(dest: Path) -> Path:
    """The config written beside checkpoint ``dest``: its whole file name + ``.yaml``
    (``x.pth`` -> ``x.pth.yaml``, ``x.pkl`` -> ``x.pkl.yaml``), so exports of one name in both layouts
    never overwrite each other's config."""
    return dest.with_name(dest.name + ".yaml")


def export_model(source: str | Path, dest: str | Path, config_out: str | Path | None = None,
                 norm: str = "SyncBN") -> dict[str, Any]:
    """Write the detectron2 checkpoint ``dest`` and its config (:func:`default_config_path` by default).

    The config's ``MODEL.WEIGHTS`` is ``dest`` as an absolute path: detectron2 neither resolves it
    against the yaml's folder nor anywhere but the working directory, so a relative path would only
    load from the folder the export ran in."""
    from u2seg.detector import checkpoint as ckpt

    obj = ckpt.load_model_file(source)
    cfg = ModelConfig.from_dict(dict(obj["model_config"], backbone_weights=None))
    check_exportable(cfg)
    assert len(FPN_STRIDES) == len(cfg.anchor_sizes)
    state = export_state_dict(obj["model"], norm)
    dest = Path(dest)
    config_out = Path(config_out) if config_out else default_config_path(dest)
    if config_out.resolve() == dest.resolve():
        raise UserError(f"--config-out {config_out} is the checkpoint itself")
    save_d2_checkpoint(dest, state)
    header = (f"# detectron2 config written by `u2seg export-d2` from {source}\n"
              "# load: cfg = get_cfg(); cfg.merge_from_file(this); model = build_model(cfg);\n"
              "#       DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)\n")
    write_text(config_out, header + yaml.safe_dump(d2_config(cfg, norm, str(dest.resolve())), sort_keys=False))
    report = {"tensors": len(state), "norm": norm, "checkpoint": str(dest), "config": str(config_out),
              "meta_architecture": "PanopticFPN" if cfg.num_stuff else "GeneralizedRCNN"}
    log.info("exported %s -> %s + %s (%d tensors)", source, dest, config_out, len(state))
    return report


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Source model file, destination checkpoint and config."""
    parser.add_argument("--input", required=True, help="u2seg model file (model_final.pth or import-d2 output)")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pth or .pkl)")
    parser.add_argument("--config-out", default=None, help="detectron2 config yaml (default: the --output file name + .yaml, "
                                                        "e.g. d2.pth.yaml)")
    parser.add_argument("--norm", choices=D2_NORMS, default="SyncBN",
                        help="RESNETS.NORM and FPN.NORM of the exported config (U2Seg: SyncBN)")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.output)


def run(args: argparse.Namespace) -> int:
    """Convert and write."""
    export_model(args.input, args.output, args.config_out, args.norm)
    return 0
