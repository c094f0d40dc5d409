"""Dense CRF refinement of a binary mask (spec 3.5; pydensecrf2, imported as ``pydensecrf``).

Unary: logits (bg = 1 - m, fg = m) -> softmax (p_fg = 0.731 inside, 0.269 outside) -> -log p.
Pairwise: Gaussian (sxy, compat) + bilateral (sxy, srgb, compat) Potts terms; mean-field
iterations; MAP labelling. The pairwise terms depend only on the image, so one ``ImageCRF`` is
built per image and reused for each of its masks (identical results, ~half the cost).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from u2seg.errors import UserError


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters (defaults: CutLER ``maskcut/crf.py``)."""

    enabled: bool = True
    gaussian_sxy: float = 3
    gaussian_compat: float = 7
    bilateral_sxy: float = 50
    bilateral_srgb: float = 5
    bilateral_compat: float = 10
    iterations: int = 10


def mask_unary(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask in [0, 1] -> (2, H*W) float32 unary energies -log softmax([1 - m, m])."""
    m = np.asarray(mask, dtype=np.float64).reshape(1, -1)
    logits = np.concatenate([1.0 - m, m])
    logits -= logits.max(axis=0, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))
    return np.ascontiguousarray(-log_p, dtype=np.float32)


class ImageCRF:
    """A two-label dense CRF on one RGB image; ``refine(mask)`` returns the MAP foreground."""

    def __init__(self, image: np.ndarray, params: CRFParams):
        try:
            import pydensecrf.densecrf as dcrf
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise UserError("dense CRF needs the pydensecrf2 package (pip install pydensecrf2), "
                            "or set maskcut.crf.enabled: false") from exc
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"CRF image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self.height, self.width = image.shape[:2]
        self.params = params
        self._rgb = np.array(image, dtype=np.uint8, order="C", copy=True)  # writable, contiguous
        self._crf = dcrf.DenseCRF2D(self.width, self.height, 2)
        # a unary is needed before the pairwise terms can be added; refine() replaces it
        self._crf.setUnaryEnergy(mask_unary(np.zeros((self.height, self.width))))
        self._crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
        self._crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                                       rgbim=self._rgb, compat=params.bilateral_compat)

    def refine(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) binary mask -> (H, W) bool MAP foreground after mean-field inference."""
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask shape {mask.shape} != image shape {(self.height, self.width)}")
        self._crf.setUnaryEnergy(mask_unary(mask))
        q = np.asarray(self._crf.inference(int(self.params.iterations))).reshape(2, self.height, self.width)
        return q[1] > q[0]  # argmax, ties to background (label 0)
