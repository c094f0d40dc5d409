"""MaskCut's parameters (docs/method.md §3) and their choices, torch-free (``u2seg maskcut --help`` shows them
without loading torch)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from u2seg.crf import MASKCUT_CRF, CRFParams
from u2seg.errors import UserError

#: eigenvector solvers of :func:`u2seg.maskcut.eigen.second_eigenvectors`
SOLVERS = ("fast", "dense")
#: which side of a cut is foreground (:func:`u2seg.maskcut.bipartition.foreground_mask`)
FOREGROUND_RULES = ("faithful", "sign_invariant")


@dataclass(frozen=True)
class MaskCutParams:
    """MaskCut parameters; defaults are CutLER's (method §3; CutLER README: tau 0.15, N 3, eps 1e-5)."""

    tau: float = 0.15
    eps: float = 1e-5
    n_masks: int = 3
    solver: str = "fast"
    foreground_rule: str = "faithful"
    max_iou_previous: float = 0.5
    min_area_fraction: float = 0.01
    min_crf_iou: float = 0.5
    crf: CRFParams = field(default_factory=lambda: MASKCUT_CRF)
    eigen_tol: float = 1e-10
    seed: int = 0

    def __post_init__(self) -> None:
        if not -1.0 < self.tau < 1.0:
            raise UserError(f"maskcut tau must be in (-1, 1), got {self.tau}")
        if not 0.0 < self.eps <= 1.0:
            raise UserError(f"maskcut eps must be in (0, 1], got {self.eps}")
        if self.n_masks < 1:
            raise UserError(f"maskcut n_masks must be >= 1, got {self.n_masks}")
        if self.solver not in SOLVERS:
            raise UserError(f"maskcut solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.foreground_rule not in FOREGROUND_RULES:
            raise UserError(f"maskcut foreground_rule must be one of {FOREGROUND_RULES}, got {self.foreground_rule!r}")
        for name in ("max_iou_previous", "min_area_fraction", "min_crf_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"maskcut {name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "MaskCutParams":
        """Build from a config-like dict (unknown keys are an error)."""
        cfg = dict(cfg)
        crf = replace(MASKCUT_CRF, **cfg.pop("crf", {}))
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise UserError(f"unknown maskcut parameters: {sorted(unknown)}")
        return cls(crf=crf, **cfg)

    def with_(self, **changes: Any) -> "MaskCutParams":
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class MaskCutExecution:
    """How ``u2seg maskcut`` runs (not what it computes: the masks are the same for every value)."""

    # worker processes for each image's CPU half (image reading, dense CRF, RLE encoding, gallery PNG), which
    # then overlaps the N-cut of the next batches on the device; 0: everything in the main process
    cpu_workers: int = 0

    def __post_init__(self) -> None:
        if self.cpu_workers < 0:
            raise UserError(f"maskcut cpu_workers must be >= 0, got {self.cpu_workers}")
