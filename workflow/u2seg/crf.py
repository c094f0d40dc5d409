"""Dense CRF refinement (pydensecrf2, imported as ``pydensecrf``): one parameter record, two presets.

Both callers use the same fully connected CRF (Gaussian + bilateral Potts kernels, mean-field
iterations, MAP labelling) and differ in the unary and the numbers:

* MaskCut (docs/method.md §3.5, :data:`MASKCUT_CRF`, CutLER ``maskcut/crf.py``): two labels; unary
  logits (bg = 1 - m, fg = m) -> softmax (p_fg = 0.731 inside, 0.269 outside) -> -log p. The pairwise
  terms depend only on the image, so one :class:`ImageCRF` is built per image and reused for each of
  its masks (identical results, ~half the cost).
* stuff maps (method §5, :data:`STEGO_CRF`, STEGO's recipe): S labels; class probabilities =
  softmax(alpha * scores) bilinearly upsampled to the image (:func:`refine_scores`).

torch (for the bilinear upsampling of :func:`refine_scores`) and pydensecrf are imported where used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from u2seg.errors import UserError


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters; the defaults are the MaskCut preset (CutLER), ``alpha`` is STEGO's."""

    enabled: bool = True
    gaussian_sxy: float = 3
    gaussian_compat: float = 7
    bilateral_sxy: float = 50
    bilateral_srgb: float = 5
    bilateral_compat: float = 10
    iterations: int = 10
    alpha: float = 2.0  # stuff maps: class probabilities = softmax(alpha * score), as STEGO's cluster probe


#: MaskCut's binary-mask refinement (CutLER ``maskcut/crf.py``).
MASKCUT_CRF = CRFParams()
#: STEGO's stuff-map refinement (STEGO ``crf.py``).
STEGO_CRF = CRFParams(gaussian_sxy=1.0, gaussian_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0,
                      bilateral_compat=4.0, iterations=10, alpha=2.0)
#: The named presets (config values ``maskcut.crf`` / ``stuff.crf`` start from these).
PRESETS: dict[str, CRFParams] = {"maskcut": MASKCUT_CRF, "stego": STEGO_CRF}


def _dense_crf(image: np.ndarray, n_labels: int, unary: np.ndarray, params: CRFParams):
    """A ``DenseCRF2D`` over ``image`` with ``unary`` and the Gaussian + bilateral pairwise terms."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UserError("dense CRF needs the pydensecrf2 package (pip install pydensecrf2), "
                        "or turn the CRF off (maskcut.crf.enabled / stuff.crf)") from exc
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=image, compat=params.bilateral_compat)
    return crf


def mask_unary(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask in [0, 1] -> (2, H*W) float32 unary energies -log softmax([1 - m, m])."""
    m = np.asarray(mask, dtype=np.float64).reshape(1, -1)
    logits = np.concatenate([1.0 - m, m])
    logits -= logits.max(axis=0, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))
    return np.ascontiguousarray(-log_p, dtype=np.float32)


class ImageCRF:
    """A two-label dense CRF on one RGB image; ``refine(mask)`` returns the MAP foreground."""

    def __init__(self, image: np.ndarray, params: CRFParams = MASKCUT_CRF):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"CRF image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        self.height, self.width = image.shape[:2]
        self.params = params
        self._rgb = np.array(image, dtype=np.uint8, order="C", copy=True)  # writable, contiguous
        # a unary is needed before the pairwise terms can be added; refine() replaces it
        self._crf = _dense_crf(self._rgb, 2, mask_unary(np.zeros((self.height, self.width))), params)

    def refine(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) binary mask -> (H, W) bool MAP foreground after mean-field inference."""
        if mask.shape != (self.height, self.width):
            raise ValueError(f"mask shape {mask.shape} != image shape {(self.height, self.width)}")
        self._crf.setUnaryEnergy(mask_unary(mask))
        q = np.asarray(self._crf.inference(int(self.params.iterations))).reshape(2, self.height, self.width)
        return q[1] > q[0]  # argmax, ties to background (label 0)


def refine_scores(image: np.ndarray, scores: np.ndarray, params: CRFParams = STEGO_CRF) -> np.ndarray:
    """Dense CRF over the image: class scores (S, h, w) -> label map (H, W) int64 at image size."""
    import torch
    from pydensecrf.utils import unary_from_softmax

    height, width = image.shape[:2]
    s = scores.shape[0]
    logits = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None] * params.alpha
    logits = torch.nn.functional.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    probs = torch.softmax(logits[0], dim=0).numpy()
    crf = _dense_crf(np.ascontiguousarray(image, dtype=np.uint8), s,
                     np.ascontiguousarray(unary_from_softmax(probs)), params)
    q = np.asarray(crf.inference(params.iterations)).reshape(s, height, width)
    return q.argmax(axis=0).astype(np.int64)
