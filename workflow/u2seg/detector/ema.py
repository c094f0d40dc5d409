"""CUPS's momentum teacher, piece by piece (docs/selftrain.md): the EMA update, which parameters the
student trains, the per-round instance confidence, and the pseudo-labels made from the teacher's outputs.

Each function mirrors one place of CUPS's ``cups/pl_model_self.py`` and is checked against it on identical
inputs (``benchmarks/cups_selftrain_reference.py``, fixtures in ``tests/detector/data/``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from u2seg.detector.data import IGNORE
from u2seg.detector.model import norm_parameter_names
from u2seg.detector.params import CupsSelfTrainParams

log = logging.getLogger(__name__)

# the student's trained modules: RPN head, RoI heads (box + mask), semantic head (CUPS: "head" in the name)
HEAD_PREFIXES = ("rpn.head.", "roi_heads.", "sem_head.")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay x teacher + (1 - decay) x student for every parameter, in CUPS's operation order;
    buffers (frozen-BN statistics) are left as they are, as CUPS does."""
    for s, t in zip(student.parameters(), teacher.parameters(), strict=True):
        t.data.mul_(decay).add_((1.0 - decay) * s.data)


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters the student trains: those of the heads, without normalisation layers
    (CUPS's ``"head" in name and "norm" not in name`` on detectron2's names)."""
    norms = norm_parameter_names(model)
    return [n for n, _ in model.named_parameters() if n.startswith(HEAD_PREFIXES) and n not in norms]


def build_optimizer(model: nn.Module, p: CupsSelfTrainParams) -> torch.optim.AdamW:
    """AdamW over :func:`head_parameter_names` (the other parameters get ``requires_grad = False``)."""
    names = set(head_parameter_names(model))
    params = []
    for n, param in model.named_parameters():
        param.requires_grad_(n in names)
        if n in names:
            params.append(param)
    return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay, betas=(p.betas[0], p.betas[1]))


def round_of(step: int, p: CupsSelfTrainParams) -> int:
    """Self-training round (1-based) of optimisation step ``step`` (0-based)."""
    return min(step // p.round_steps, p.rounds - 1) + 1


def instance_threshold(step: int, p: CupsSelfTrainParams) -> float:
    """Teacher instance confidence at ``step``: instance_threshold + (round - 1) x confidence_step."""
    return float(p.instance_threshold + (round_of(step, p) - 1) * p.confidence_step)


def semantic_pseudo_label(probs: Tensor, threshold: float) -> Tensor:
    """(C, H, W) class probabilities -> (H, W) int64 labels: class c survives at a pixel when its
    probability exceeds ``threshold`` x its maximum over the image; the arg-max of the survivors,
    ``IGNORE`` (255) where none survives."""
    class_max = probs.amax(dim=(1, 2), keepdim=True)
    kept = torch.where(probs > class_max * threshold, probs, 0.0)
    label = kept.argmax(dim=0)
    label[kept.sum(dim=0) == 0] = IGNORE
    return label.long()


def instance_pseudo_labels(pan: Tensor, segments: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
    """Thing segments of a panoptic map (segment order) -> (masks (N, H, W) bool, classes (N,) int64,
    0-based: category_id - 1)."""
    things = [s for s in segments if s.get("isthing")]
    if not things:
        return torch.zeros((0, *pan.shape), dtype=torch.bool, device=pan.device), \
            torch.zeros(0, dtype=torch.int64, device=pan.device)
    ids = torch.tensor([int(s["id"]) for s in things], device=pan.device)
    masks = pan[None] == ids[:, None, None]
    classes = torch.tensor([int(s["category_id"]) - 1 for s in things], dtype=torch.int64, device=pan.device)
    return masks, classes


@dataclass
class TeacherOutput:
    """One image's teacher prediction at the teacher's input size."""

    probs: Tensor  # (S + 1, H, W) semantic class probabilities (softmax)
    masks: Tensor  # (N, H, W) bool instance masks
    scores: Tensor  # (N,)
    labels: Tensor  # (N,) 0-based thing classes


def teacher_results(teacher: nn.Module, images: list[Tensor], inst_thresh: float, tta: bool
                    ) -> tuple[list[dict[str, Tensor]], bool]:
    """The teacher's raw results on input-size images (the model's inference dicts) and whether their
    ``sem_seg`` holds probabilities (else logits). The one place the teacher predicts.

    With ``tta`` (CUPS's teacher): test-time augmentation as CUPS's ``PanopticFPNWithTTA``
    (:func:`u2seg.detector.tta.tta_predict`: scales 0.5 / 0.75 / 1 of the image's short side, i.e. of the
    teacher input size as CUPS's crop size, and their flips), detections merged above the round's
    confidence ``inst_thresh``; else plain single-scale inference (the threshold then applies in the
    panoptic fusion only)."""
    if tta:
        from u2seg.detector.params import TTAParams
        from u2seg.detector.tta import tta_predict

        # (a confidence above 1 after many rounds keeps no detection, as 1 does)
        return tta_predict(teacher, images, TTAParams(score_thresh=min(inst_thresh, 1.0))), True
    return teacher(images), False


@torch.no_grad()
def predict_teacher(teacher: nn.Module, images: list[Tensor], inst_thresh: float, tta: bool = True
                    ) -> list[TeacherOutput]:
    """Teacher predictions of input-size images: instance masks pasted at the input size, semantic class
    probabilities (softmax of the logits, or the TTA's averaged probabilities)."""
    from u2seg.detector.predict import postprocess

    teacher.eval()
    results, are_probs = teacher_results(teacher, images, inst_thresh, tta)
    out = []
    for image, r in zip(images, results):
        hw = (int(image.shape[-2]), int(image.shape[-1]))
        post = postprocess(r, hw, hw)
        if "sem_seg" in r:
            probs = r["sem_seg"].float() if are_probs else r["sem_seg"].float().softmax(dim=0)
        else:
            probs = image.new_zeros((1, *hw))
        out.append(TeacherOutput(probs.cpu(), torch.from_numpy(post["masks"]), torch.from_numpy(post["scores"]),
                                 torch.from_numpy(post["labels"])))
    return out


def pseudo_labels(out: TeacherOutput, num_classes: int, p: CupsSelfTrainParams, inst_thresh: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher output -> (semantic uint8 (H, W), instance masks bool (N, H, W), labels int64 (N,)):
    the instances of the teacher's panoptic fusion at confidence ``inst_thresh`` and the relative-threshold
    semantic label (CUPS's ``make_pseudo_labels``)."""
    from u2seg.detector.predict import panoptic_fusion

    semantic_arg = out.probs.argmax(dim=0).numpy().astype(np.uint8)
    pan, segments = panoptic_fusion(out.masks.numpy(), out.scores.numpy(), out.labels.numpy(), semantic_arg,
                                    num_classes, inst_thresh, p.overlap_thresh, p.stuff_area_thresh)
    masks, labels = instance_pseudo_labels(torch.from_numpy(pan), segments)
    semantic = semantic_pseudo_label(out.probs, p.semantic_threshold)
    return semantic.numpy().astype(np.uint8), masks.numpy(), labels.numpy()
