"""STEGO's settings: the correspondence-loss constants and the training schedule (torch-free, so that
``u2seg stego train --help`` shows their defaults without loading torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from u2seg.params import STUFF_CLUSTERS


@dataclass(frozen=True)
class StegoLossParams:
    """Correspondence-loss constants; defaults = STEGO's COCO-Stuff-27 ViT-B/8 values (cfg:83-91)."""

    pos_intra_weight: float = 0.1
    pos_inter_weight: float = 1.0
    neg_inter_weight: float = 0.1538476246415498
    pos_intra_shift: float = 0.12
    pos_inter_shift: float = 0.20
    neg_inter_shift: float = 1.0
    feature_samples: int = 11
    neg_samples: int = 5
    pointwise: bool = True
    zero_clamp: bool = True
    stabilize: bool = False  # STEGO's `stabalize`: also cap the code correlation at 0.8


@dataclass(frozen=True)
class StegoTrainParams:
    """Schedule and head settings; defaults = STEGO's COCO-Stuff-27 ViT-B/8 values (docs/method.md §5.1)."""

    dim: int = 90
    k: int = STUFF_CLUSTERS
    dropout: float = 0.1
    dropout_target: bool = True
    nonlinear: bool = True
    lr: float = 5e-4
    cluster_lr: float = 5e-3
    batch_size: int = 32
    max_steps: int = 7000
    num_neighbors: int = 7
    seed: int = 0
    checkpoint_period: int = 400
    log_period: int = 10
    loss: StegoLossParams = field(default_factory=StegoLossParams)


#: The image views of ``stego_checkpoint`` inference (config ``stuff.stego_inference.crop``).
STEGO_CROPS = ("full", "center")


@dataclass(frozen=True)
class StegoInferenceParams:
    """How ``stego_checkpoint`` labels an image (docs/stuff.md); defaults = STEGO's evaluation except the view.

    ``crop``: ``full`` (the pipeline's view: the whole image, square-resized to features.input_size, labels
    for every pixel) or ``center`` (STEGO's eval_segmentation.py: shorter side resized to ``crop_size`` with
    nearest neighbour, centre crop ``crop_size`` x ``crop_size``; pixels outside the crop are void, 255).
    """

    flip: bool = True  # average the code of the image and of its horizontal flip (STEGO's evaluation)
    crop: str = "full"  # full (whole image, the pipeline's maps) or center (STEGO's resize + centre crop)
    crop_size: int = 320  # crop=center: side of STEGO's centre crop (its eval_config res)

    def __post_init__(self) -> None:
        if self.crop not in STEGO_CROPS:
            raise ValueError(f"stuff.stego_inference.crop must be one of {', '.join(STEGO_CROPS)}, got {self.crop!r}")
        if self.crop_size < 1:
            raise ValueError(f"stuff.stego_inference.crop_size must be >= 1, got {self.crop_size}")
