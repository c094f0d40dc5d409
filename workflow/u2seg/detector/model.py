"""Panoptic Cascade Mask R-CNN (docs/method.md §7.1) from torchvision detection parts and timm backbones.

Architecture (detectron2's ``PanopticFPN`` + ``CascadeROIHeads`` as U2Seg configures them):
  * backbone: timm ``features_only`` (strides 4..32) -> ``FeaturePyramidNetwork`` P2..P5 + P6 (max pool);
  * RPN: torchvision ``RegionProposalNetwork`` with detectron2's anchors (``DefaultAnchorGenerator``: 32..512 x
    {0.5, 1, 2}, one size per level, strides 4..64, unrounded), proposal selection and losses;
  * ROI heads: a 3-stage cascade written here (IoU 0.5 / 0.6 / 0.7, class-agnostic box regression,
    2-FC box head per stage, gradient into the shared features scaled by 1 / stages), a Mask R-CNN
    mask head (torchvision ``MaskRCNNHeads`` / ``MaskRCNNPredictor``) on stage-0 foreground proposals;
  * semantic FPN head (``stuff + 1`` classes, 0 = thing, ignore 255, loss weight 0.5).

Class convention: thing labels are 0..K-1 (= pseudo-label ``category_id - 1``); the box classifier
has K + 1 outputs with background LAST (as detectron2, so its checkpoints map 1:1).
Images enter as float RGB tensors in 0..255, already resized; outputs are in input coordinates.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FeaturePyramidNetwork, roi_align
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from u2seg import registry
from u2seg.detector.d2_format import d2_resnet_to_timm, is_d2_resnet, load_d2_pickle
from u2seg.detector.losses import box_regression_loss, classification_loss, drop_loss_weights
from u2seg.detector.params import (BACKBONE_NORMS, FPN_NORMS, FPN_STRIDES, PIXEL_STATS,  # noqa: F401 (re-exported)
                                   ModelConfig)
from u2seg.errors import UserError

log = logging.getLogger(__name__)

HEAD_KEYS = ("fc.", "classifier.", "conv_head.", "bn2.", "head.", "global_pool.")


# ------------------------------------------------------------------------------------ backbone
def unwrap_state_dict(sd: Any) -> dict[str, Tensor]:
    """Accept a plain state dict or a training checkpoint (``teacher`` / ``state_dict`` / ``model``)."""
    for key in ("teacher", "state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict):
        raise UserError("weights file does not hold a state dict")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone.", "body."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v if isinstance(v, Tensor) else torch.as_tensor(v)
    return out


def read_backbone_weights(name: str, weights: str) -> dict[str, Tensor]:
    """Backbone state dict in timm key names from 'imagenet' (efficientnet_lite2), a .pth or a d2 .pkl."""
    from pathlib import Path

    if weights == "imagenet":
        spec = registry.DETECTOR_BACKBONES.get(name)
        if spec is None or not spec.bundled_weights:
            raise UserError(f"backbone_weights='imagenet' is only bundled for efficientnet_lite2, not {name}; "
                            "give the path of a weights file (e.g. DINO ResNet-50)")
        from u2seg.backbones import load_efficientnet_lite2_state_dict

        return load_efficientnet_lite2_state_dict()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"backbone weights file not found: {path}")
    if path.suffix == ".pkl":
        return d2_resnet_to_timm(load_d2_pickle(path))
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise UserError(f"cannot read backbone weights {path}: {exc}") from exc
    sd = unwrap_state_dict(raw)
    if is_d2_resnet(sd):
        sd = d2_resnet_to_timm(sd)
    return sd


class TimmBackbone(nn.Module):
    """timm ``features_only`` network returning the stride 4, 8, 16, 32 maps."""

    def __init__(self, name: str, norm: str = "frozen_bn", weights: str | None = None):
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        except RuntimeError as exc:
            raise UserError(f"unknown detector backbone {name!r} ({exc})") from exc
        if list(self.body.feature_info.reduction()) != [4, 8, 16, 32]:
            raise UserError(f"backbone {name} does not give stride 4..32 features")
        self.channels = list(self.body.feature_info.channels())
        if weights:
            self.load_pretrained(name, weights)
        if norm == "frozen_bn":
            from timm.layers import freeze_batch_norm_2d

            self.body = freeze_batch_norm_2d(self.body)

    def load_pretrained(self, name: str, weights: str) -> None:
        """Load backbone weights strictly (classifier keys aside); UserError on any mismatch."""
        sd = read_backbone_weights(name, weights)
        target = self.body.state_dict()
        extra = [k for k in sd if k not in target and not k.startswith(HEAD_KEYS)]
        missing = [k for k in target if k not in sd and not k.endswith("num_batches_tracked")]
        bad = [k for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
        if missing or extra or bad:
            raise UserError(
                f"backbone weights {weights} do not fit timm {name}: missing {missing[:5]}, "
                f"unexpected {extra[:5]}, shape mismatch {bad[:5]}")
        self.body.load_state_dict({k: v for k, v in sd.items() if k in target}, strict=False)
        log.info("loaded %d backbone tensors from %s", len(target), weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.body(x)


# ------------------------------------------------------------------------------------ RPN


class D2AnchorGenerator(nn.Module):
    """detectron2's ``DefaultAnchorGenerator``: unrounded cell anchors, each level's stride from the model.

    Cell anchor of size s and aspect ratio a (h / w): w = sqrt(s^2 / a), h = a * w, centred at 0.
    Level l's anchors sit at (x, y) = (offset + i) * stride_l for the cells of its feature map, in
    location-major order (all cell anchors of a location together), as detectron2 and torchvision's RPN
    expect. The strides are the FPN's (P2..P6: 4..64), not padded size // grid size.
    """

    def __init__(self, sizes: list[int], ratios: list[float], strides: tuple[int, ...] = FPN_STRIDES,
                 offset: float = 0.0):
        super().__init__()
        if len(sizes) != len(strides):
            raise UserError(f"{len(sizes)} anchor sizes for {len(strides)} feature levels")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.cell_anchors = [self.cell(float(s), [float(r) for r in ratios]) for s in sizes]

    @staticmethod
    def cell(size: float, ratios: list[float]) -> Tensor:
        """(len(ratios), 4) anchors (x0, y0, x1, y1) centred at the origin."""
        out = []
        for ratio in ratios:
            w = math.sqrt(size ** 2.0 / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(out)

    def num_anchors_per_location(self) -> list[int]:
        return [int(c.shape[0]) for c in self.cell_anchors]

    def grid_anchors(self, grid_sizes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Anchors of each level, (H_l * W_l * A, 4) float32."""
        out = []
        for (gh, gw), stride, base in zip(grid_sizes, self.strides, self.cell_anchors):
            shifts_x = torch.arange(self.offset * stride, gw * stride, step=stride, dtype=torch.float32, device=device)
            shifts_y = torch.arange(self.offset * stride, gh * stride, step=stride, dtype=torch.float32, device=device)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.to(device).view(1, -1, 4)).reshape(-1, 4))
        return out

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """torchvision RPN interface: one (sum of levels, 4) anchor tensor per image."""
        grid = [(int(f.shape[-2]), int(f.shape[-1])) for f in feature_maps]
        anchors = torch.cat(self.grid_anchors(grid, feature_maps[0].device))
        return [anchors for _ in range(len(image_list.image_sizes))]


class D2RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with detectron2's proposal selection and losses.

    Proposals (``find_top_rpn_proposals``): per level the top-k anchors by objectness *logit*, drop
    non-finite, clip, keep boxes with width and height > 0, NMS per level on the logits, the first
    post-NMS top-k per image. Losses: objectness BCE and L1 box loss (smooth-L1 beta 0), both summed
    and divided by ``batch_size_per_image * images``.
    """

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        num_images = proposals.shape[0]
        objectness = objectness.detach().reshape(num_images, -1)
        k = self.pre_nms_top_n()
        boxes_lv, scores_lv, levels = [], [], []
        start = 0
        for level, n in enumerate(num_anchors_per_level):
            logits = objectness[:, start:start + n]
            top = min(n, k)
            scores_i, idx = logits.topk(top, dim=1)
            boxes_lv.append(proposals[:, start:start + n][torch.arange(num_images)[:, None], idx])
            scores_lv.append(scores_i)
            levels.append(torch.full((top,), level, dtype=torch.int64, device=proposals.device))
            start += n
        all_boxes, all_scores, all_levels = torch.cat(boxes_lv, 1), torch.cat(scores_lv, 1), torch.cat(levels)
        final_boxes, final_scores = [], []
        for boxes, scores, size in zip(all_boxes, all_scores, image_shapes):
            lvl = all_levels
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if not bool(valid.all()):
                boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = box_ops.batched_nms(boxes.float(), scores, lvl, self.nms_thresh)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def compute_loss(self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor],
                     regression_targets: list[Tensor]) -> tuple[Tensor, Tensor]:
        pos, neg = self.fg_bg_sampler(labels)
        pos_idx = torch.where(torch.cat(pos, dim=0))[0]
        sampled = torch.cat([pos_idx, torch.where(torch.cat(neg, dim=0))[0]])
        normalizer = float(self.fg_bg_sampler.batch_size_per_image * len(labels))
        labels_all = torch.cat(labels, dim=0)
        targets_all = torch.cat(regression_targets, dim=0)
        box_loss = F.l1_loss(pred_bbox_deltas[pos_idx], targets_all[pos_idx], reduction="sum") / normalizer
        obj_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels_all[sampled],
                                                      reduction="sum") / normalizer
        return obj_loss, box_loss


# ------------------------------------------------------------------------------------ pooling
class RoIPooler(nn.Module):
    """Multi-level ROIAlign (aligned=True, adaptive sampling), FPN level rule of detectron2."""

    def __init__(self, output_size: int, scales: tuple[float, ...] = (1 / 4, 1 / 8, 1 / 16, 1 / 32),
                 sampling_ratio: int = 0, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        self.output_size = output_size
        self.scales = scales
        self.sampling_ratio = sampling_ratio
        self.min_level = int(round(-math.log2(scales[0])))
        self.max_level = int(round(-math.log2(scales[-1])))
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def levels(self, boxes: list[Tensor]) -> Tensor:
        """FPN level index of every box: floor(4 + log2(sqrt(area) / 224 + 1e-8)), clamped (detectron2)."""
        sizes = torch.sqrt(torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]))
        lvl = torch.floor(self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8))
        return torch.clamp(lvl, min=self.min_level, max=self.max_level).to(torch.int64) - self.min_level

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        channels = features[0].shape[1]
        n = sum(b.shape[0] for b in boxes)
        out = features[0].new_zeros((n, channels, self.output_size, self.output_size))
        if n == 0:
            return out + 0.0 * sum(f.sum() for f in features)  # keep the graph connected
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        levels = self.levels(boxes)
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            idx = torch.where(levels == level)[0]
            if idx.numel() == 0:
                continue
            pooled = roi_align(feat, rois[idx].to(feat.dtype), (self.output_size, self.output_size),
                               spatial_scale=scale, sampling_ratio=self.sampling_ratio, aligned=True)
            out = out.index_put((idx,), pooled.to(out.dtype))
        return out


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient multiplied by ``scale`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


# ------------------------------------------------------------------------------------ box heads
class BoxHead(nn.Module):
    """Two fully connected layers on the 7x7 pooled features (detectron2 FastRCNNConvFCHead, 2 FC)."""

    def __init__(self, in_features: int, fc_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))


class BoxPredictor(nn.Module):
    """K + 1 class logits (background last) and class-agnostic box deltas."""

    def __init__(self, fc_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class CascadeROIHeads(nn.Module):
    """Cascade box heads (one matcher IoU per stage) + mask head."""

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__()
        self.num_classes = cfg.num_classes
        self.num_stages = len(cfg.cascade_ious)
        self.stage_ious = [float(t) for t in cfg.cascade_ious]
        self.box_pooler = RoIPooler(7)
        self.mask_pooler = RoIPooler(14)
        self.box_heads = nn.ModuleList([BoxHead(in_channels * 49, cfg.box_fc_dim) for _ in self.stage_ious])
        self.box_predictors = nn.ModuleList([BoxPredictor(cfg.box_fc_dim, cfg.num_classes) for _ in self.stage_ious])
        self.box_coders = [det_utils.BoxCoder(tuple(float(v) for v in w)) for w in cfg.cascade_bbox_weights]
        self.matchers = [det_utils.Matcher(t, t, allow_low_quality_matches=False) for t in self.stage_ious]
        self.sampler = det_utils.BalancedPositiveNegativeSampler(cfg.roi_batch_per_image, cfg.roi_positive_fraction)
        self.mask_head = MaskRCNNHeads(in_channels, [cfg.mask_conv_dim] * 4, 1)
        self.mask_predictor = MaskRCNNPredictor(cfg.mask_conv_dim, cfg.mask_conv_dim, cfg.num_classes)
        nn.init.normal_(self.mask_predictor.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(self.mask_predictor.mask_fcn_logits.bias)
        self.droploss = cfg.droploss
        self.droploss_thresh = cfg.droploss_thresh
        self.score_thresh = cfg.score_thresh_test
        self.nms_thresh = cfg.nms_thresh_test
        self.detections_per_image = cfg.detections_per_image
        # per-stage matching statistics of the last training step (for logging and tests)
        self.stage_stats: list[dict[str, float]] = []

    # ---------------------------------------------------------------- matching
    def _match(self, stage: int, boxes: list[Tensor], targets: list[dict[str, Tensor]]
               ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: labels (K = background), matched GT index (-1 bg), matched GT box, best IoU."""
        labels, matched, gt_boxes, ious = [], [], [], []
        for b, t in zip(boxes, targets):
            n, gt = b.shape[0], t["boxes"]
            if gt.shape[0] == 0 or n == 0:
                labels.append(torch.full((n,), self.num_classes, dtype=torch.int64, device=b.device))
                matched.append(torch.full((n,), -1, dtype=torch.int64, device=b.device))
                gt_boxes.append(torch.zeros_like(b))
                ious.append(b.new_zeros((n,)))
                continue
            quality = box_ops.box_iou(gt.float(), b.float())
            idx = self.matchers[stage](quality)
            fg = idx >= 0
            safe = idx.clamp(min=0)
            lab = t["labels"][safe].clone()
            lab[~fg] = self.num_classes
            labels.append(lab)
            matched.append(torch.where(fg, idx, torch.full_like(idx, -1)))
            gt_boxes.append(gt[safe].to(b.dtype))
            ious.append(quality.max(dim=0).values)
        return labels, matched, gt_boxes, ious

    def _sample(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]):
        """Stage-0 sampling: append GT boxes to the proposals, match at IoU 0.5, subsample."""
        proposals = [torch.cat([p.detach(), t["boxes"].to(p.dtype)]) for p, t in zip(proposals, targets)]
        labels, matched, gt_boxes, ious = self._match(0, proposals, targets)
        flags = [(m >= 0).to(torch.int64) for m in matched]
        pos, neg = self.sampler(flags)
        keep = [torch.where(p.bool() | n.bool())[0] for p, n in zip(pos, neg)]
        return ([x[k] for x, k in zip(proposals, keep)], [x[k] for x, k in zip(labels, keep)],
                [x[k] for x, k in zip(matched, keep)], [x[k] for x, k in zip(gt_boxes, keep)],
                [x[k] for x, k in zip(ious, keep)])

    def _run_stage(self, stage: int, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        x = self.box_pooler(features, boxes)
        if self.training:
            x = _ScaleGradient.apply(x, 1.0 / self.num_stages)
        return self.box_predictors[stage](self.box_heads[stage](x))

    # ---------------------------------------------------------------- training
    def forward_train(self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                      targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Cascade box losses (per stage) + mask loss."""
        boxes, labels, matched, gt_boxes, ious = self._sample(proposals, targets)
        stage0 = (boxes, labels, matched)
        losses: dict[str, Tensor] = {}
        self.stage_stats = []
        pred: list[Tensor] = []
        for s in range(self.num_stages):
            if s > 0:
                boxes = [box_ops.clip_boxes_to_image(p, size) for p, size in zip(pred, image_sizes)]
                boxes = [b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])] for b in boxes]
                labels, matched, gt_boxes, ious = self._match(s, boxes, targets)
            logits, deltas = self._run_stage(s, features, boxes)
            counts = [b.shape[0] for b in boxes]
            all_boxes, all_labels, all_gt = torch.cat(boxes), torch.cat(labels), torch.cat(gt_boxes)
            pred_boxes = self.box_coders[s].decode_single(deltas.detach().float(), all_boxes.float())
            weights = None
            if self.droploss:
                weights = torch.cat([drop_loss_weights(pb, t["boxes"], self.droploss_thresh)
                                     for pb, t in zip(pred_boxes.split(counts), targets)])
            losses[f"loss_cls_stage{s}"] = classification_loss(logits, all_labels, weights)
            fg = all_labels < self.num_classes
            target_deltas = self.box_coders[s].encode_single(all_gt[fg].float(), all_boxes[fg].float())
            losses[f"loss_box_reg_stage{s}"] = box_regression_loss(deltas[fg], target_deltas, all_labels.numel())
            all_ious = torch.cat(ious)
            self.stage_stats.append({
                "iou_thresh": self.stage_ious[s],
                "num_fg": int(fg.sum()), "num": int(fg.numel()),
                "min_fg_iou": float(all_ious[fg].min()) if fg.any() else float("nan"),
                "max_bg_iou": float(all_ious[~fg].max()) if (~fg).any() else float("nan"),
                "kept_fraction": float(weights.mean()) if weights is not None and weights.numel() else 1.0,
            })
            pred = list(pred_boxes.split(counts))
        losses["loss_mask"] = self._mask_loss(features, targets, *stage0)
        return losses

    def _mask_loss(self, features: list[Tensor], targets: list[dict[str, Tensor]], boxes: list[Tensor],
                   labels: list[Tensor], matched: list[Tensor]) -> Tensor:
        fg = [lab < self.num_classes for lab in labels]
        fg_boxes = [b[f] for b, f in zip(boxes, fg)]
        logits = self.mask_predictor(self.mask_head(self.mask_pooler(features, fg_boxes)))
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        side = logits.shape[-1]
        gts = []
        for b, f, m, t in zip(boxes, fg, matched, targets):
            if not f.any():
                continue
            rois = torch.cat([m[f][:, None].to(b.dtype), b[f]], dim=1).float()
            crops = roi_align(t["masks"][:, None].float(), rois, (side, side), 1.0, sampling_ratio=0, aligned=True)
            gts.append(crops[:, 0] >= 0.5)
        gt = torch.cat(gts).to(torch.float32)
        classes = torch.cat([lab[f] for lab, f in zip(labels, fg)])
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), classes]
        return F.binary_cross_entropy_with_logits(chosen.float(), gt, reduction="mean")

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def forward_test(self, features: list[Tensor], proposals: list[Tensor],
                     image_sizes: list[tuple[int, int]], with_masks: bool = True) -> list[dict[str, Tensor]]:
        """Cascade inference: scores averaged over stages, boxes of the last stage, then masks
        (``mask_probs``; left out when not ``with_masks``)."""
        boxes = [p.detach() for p in proposals]
        counts = [b.shape[0] for b in boxes]
        probs: list[Tensor] = []
        pred: list[Tensor] = boxes
        for s in range(self.num_stages):
            if s > 0:
                boxes = [box_ops.clip_boxes_to_image(p, size) for p, size in zip(pred, image_sizes)]
            logits, deltas = self._run_stage(s, features, boxes)
            probs.append(F.softmax(logits.float(), dim=1))
            pred = list(self.box_coders[s].decode_single(deltas.float(), torch.cat(boxes).float()).split(counts))
        scores = (sum(probs) * (1.0 / self.num_stages)).split(counts)  # as detectron2 (bit-identical)
        results = []
        for sc, bx, size in zip(scores, pred, image_sizes):
            results.append(self._postprocess(sc, box_ops.clip_boxes_to_image(bx, size)))
        if with_masks:
            probs_per_image = self.mask_probs(features, [r["boxes"] for r in results], [r["labels"] for r in results])
            for r, m in zip(results, probs_per_image):
                r["mask_probs"] = m
        return results

    @torch.no_grad()
    def mask_probs(self, features: list[Tensor], boxes: list[Tensor], labels: list[Tensor]) -> list[Tensor]:
        """Mask probabilities (n, 28, 28) of given boxes (input coordinates) and labels, per image
        (detectron2's ``forward_with_given_boxes``: mask head + sigmoid of the box's class)."""
        counts = [b.shape[0] for b in boxes]
        if not sum(counts):
            return [b.new_zeros((0, 28, 28), dtype=torch.float32) for b in boxes]
        logits = self.mask_predictor(self.mask_head(self.mask_pooler(features, [b.float() for b in boxes])))
        cls = torch.cat(labels)
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), cls].sigmoid().float()
        return list(chosen.split(counts))

    def _postprocess(self, scores: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        """Score threshold, per-class NMS, top-k (class-agnostic boxes shared by every class)."""
        cls_scores = scores[:, : self.num_classes]
        valid = torch.isfinite(boxes).all(dim=1)
        cls_scores = cls_scores * valid[:, None]
        rows, classes = torch.where(cls_scores > self.score_thresh)
        sel_boxes, sel_scores = boxes[rows].float(), cls_scores[rows, classes]
        keep = box_ops.batched_nms(sel_boxes, sel_scores, classes, self.nms_thresh)[: self.detections_per_image]
        return {"boxes": sel_boxes[keep], "scores": sel_scores[keep], "labels": classes[keep]}


# ------------------------------------------------------------------------------------ semantic head
class ConvNormReLU(nn.Conv2d):
    """3x3 convolution + GroupNorm + ReLU (the norm is a submodule ``norm``)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=groups == 0)
        self.norm = nn.GroupNorm(groups, out_channels) if groups else nn.Identity()
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(super().forward(x)))


class SemSegFPNHead(nn.Module):
    """Semantic FPN head: each of P2..P5 upsampled to stride 4, summed, 1x1 classifier, x4 upsampling."""

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 128, groups: int = 32,
                 loss_weight: float = 0.5, ignore_value: int = 255):
        super().__init__()
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        self.common_stride = 4
        heads = {}
        for level, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)):
            ops: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(self.common_stride)))):
                ops.append(ConvNormReLU(in_channels if k == 0 else conv_dim, conv_dim, groups))
                if stride != self.common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            heads[level] = nn.Sequential(*ops)
        self.scale_heads = nn.ModuleDict(heads)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        x = None
        for level, head in self.scale_heads.items():
            y = head(features[level])
            x = y if x is None else x + y
        logits = self.predictor(x)
        return F.interpolate(logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy (ignore 255) x loss weight; zero when every pixel is ignored."""
        if not bool((target != self.ignore_value).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target, ignore_index=self.ignore_value) * self.loss_weight


# ------------------------------------------------------------------------------------ full model
class PanopticCascadeRCNN(nn.Module):
    """Backbone + FPN + RPN + cascade ROI heads + mask head + semantic FPN head."""

    def __init__(self, cfg: ModelConfig, load_pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        if load_pretrained and not cfg.backbone_weights:  # (without load_pretrained a checkpoint follows)
            log.warning("detector backbone %s starts from random weights", cfg.backbone)
        self.backbone = TimmBackbone(cfg.backbone, cfg.norm, cfg.backbone_weights if load_pretrained else None)
        fpn_norm = {"none": None, "bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}[cfg.fpn_norm]
        c = cfg.fpn_channels
        self.fpn = FeaturePyramidNetwork(self.backbone.channels, c, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=fpn_norm)
        ratios = [float(r) for r in cfg.anchor_ratios]
        anchors = D2AnchorGenerator([int(s) for s in cfg.anchor_sizes], ratios)
        self.rpn = D2RegionProposalNetwork(
            anchors, RPNHead(c, len(ratios)), cfg.rpn_fg_iou, cfg.rpn_bg_iou, cfg.rpn_batch_per_image,
            cfg.rpn_positive_fraction,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_topk_train, "testing": cfg.rpn_pre_nms_topk_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_topk_train, "testing": cfg.rpn_post_nms_topk_test},
            nms_thresh=cfg.rpn_nms_thresh)
        self.roi_heads = CascadeROIHeads(cfg, c)
        self.sem_head = (SemSegFPNHead(c, cfg.num_stuff + 1, cfg.sem_conv_dim, cfg.sem_norm_groups,
                                       cfg.sem_loss_weight) if cfg.num_stuff > 0 else None)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)

    def set_test_params(self, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_image: int | None = None) -> None:
        """Override the inference thresholds (predict config) without rebuilding."""
        if score_thresh is not None:
            self.roi_heads.score_thresh = score_thresh
        if nms_thresh is not None:
            self.roi_heads.nms_thresh = nms_thresh
        if detections_per_image is not None:
            self.roi_heads.detections_per_image = detections_per_image

    def preprocess(self, images: list[Tensor]) -> ImageList:
        """Normalise and zero-pad to a common size divisible by ``size_divisibility``."""
        d = self.cfg.size_divisibility
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        h = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        w = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = images[0].new_zeros((len(images), 3, h, w), dtype=torch.float32)
        for i, im in enumerate(images):
            batch[i, :, : im.shape[-2], : im.shape[-1]] = (im.float() - self.pixel_mean) / self.pixel_std
        return ImageList(batch, sizes)

    def features(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """FPN maps p2..p6."""
        feats = self.backbone(x)
        fpn = self.fpn(OrderedDict((f"p{i + 2}", f) for i, f in enumerate(feats)))
        return OrderedDict((("p6" if k == "pool" else k), v) for k, v in fpn.items())

    def _rpn(self, image_list: ImageList, feats: OrderedDict[str, Tensor],
             targets: list[dict[str, Tensor]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """RPN in float32 (as detectron2 decodes boxes in fp32 under AMP): proposals keep full precision."""
        with torch.autocast(device_type=image_list.tensors.device.type, enabled=False):
            feats32 = OrderedDict((k, v.float()) for k, v in feats.items())
            proposals, losses = self.rpn(image_list, feats32, targets)
        return [p.float() for p in proposals], losses

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        """Training: dict of losses. Inference: per image dict with ``boxes``, ``scores``, ``labels``
        (0..K-1), ``mask_probs`` (N, 28, 28) and ``sem_seg`` logits (C, h, w) at the input size."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        image_list = self.preprocess(images)
        feats = self.features(image_list.tensors)
        roi_feats = [feats[k] for k in ("p2", "p3", "p4", "p5")]
        if self.training:
            assert targets is not None
            proposals, losses = self._rpn(image_list, feats, [{"boxes": t["boxes"]} for t in targets])
            losses = dict(losses)
            losses.update(self.roi_heads.forward_train(roi_feats, proposals, image_list.image_sizes, targets))
            if self.sem_head is not None:
                sem_target = image_list.tensors.new_full(
                    (len(images),) + tuple(image_list.tensors.shape[-2:]), self.sem_head.ignore_value,
                    dtype=torch.int64)
                for i, t in enumerate(targets):
                    h, w = t["sem_seg"].shape
                    sem_target[i, :h, :w] = t["sem_seg"]
                losses["loss_sem_seg"] = self.sem_head.loss(self.sem_head(feats), sem_target)
            return losses
        results = self.detect(image_list, feats)
        for r, s in zip(results, self.semantic_logits(image_list, feats) or []):
            r["sem_seg"] = s
        return results

    @torch.no_grad()
    def detect(self, image_list: ImageList, feats: OrderedDict[str, Tensor],
               with_masks: bool = True) -> list[dict[str, Tensor]]:
        """Inference detections of a preprocessed batch (``preprocess`` + ``features``): per image
        ``boxes``, ``scores``, ``labels`` and (``with_masks``) ``mask_probs``, in input coordinates."""
        proposals, _ = self._rpn(image_list, feats)
        roi_feats = [feats[k] for k in ("p2", "p3", "p4", "p5")]
        return self.roi_heads.forward_test(roi_feats, proposals, image_list.image_sizes, with_masks)

    @torch.no_grad()
    def semantic_logits(self, image_list: ImageList, feats: OrderedDict[str, Tensor]) -> list[Tensor] | None:
        """Per image float32 semantic logits (S + 1, h, w) at its input size (padding cut off); None
        without a semantic head."""
        if self.sem_head is None:
            return None
        sem = self.sem_head(feats)
        return [s[:, :h, :w].float() for (h, w), s in zip(image_list.image_sizes, sem)]


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> PanopticCascadeRCNN:
    """Build the detector (backbone weights loaded when ``load_pretrained``)."""
    return PanopticCascadeRCNN(cfg, load_pretrained=load_pretrained)


def norm_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that belong to normalisation layers (no weight decay in detectron2)."""
    norm_types = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, norm_types):
            for p_name, _ in module.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names
