"""Command-line flags shared by the stuff stages (``u2seg cluster-stuff``, ``u2seg stego infer``).

The CRF flags default to :data:`u2seg.crf.STEGO_CRF` (config ``stuff.crf``); torch-free.
"""
from __future__ import annotations

import argparse

from u2seg.crf import STEGO_CRF, CRFParams


def add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """The dense-CRF flags (config stuff.crf), defaults = the STEGO preset."""
    p = STEGO_CRF
    parser.add_argument("--crf", action="store_true", help="refine the maps with a dense CRF")
    parser.add_argument("--crf-gaussian-sxy", type=float, default=p.gaussian_sxy,
                        help="CRF Gaussian (smoothness) kernel: spatial std in pixels")
    parser.add_argument("--crf-gaussian-compat", type=float, default=p.gaussian_compat,
                        help="CRF Gaussian kernel: Potts weight")
    parser.add_argument("--crf-bilateral-sxy", type=float, default=p.bilateral_sxy,
                        help="CRF bilateral (appearance) kernel: spatial std in pixels")
    parser.add_argument("--crf-bilateral-srgb", type=float, default=p.bilateral_srgb,
                        help="CRF bilateral kernel: colour std")
    parser.add_argument("--crf-bilateral-compat", type=float, default=p.bilateral_compat,
                        help="CRF bilateral kernel: Potts weight")
    parser.add_argument("--crf-iterations", type=int, default=p.iterations, help="CRF mean-field iterations")
    parser.add_argument("--crf-alpha", type=float, default=p.alpha, help="probabilities = softmax(alpha * cosine)")


def crf_params(args: argparse.Namespace) -> CRFParams | None:
    """CRFParams of the CRF flags, None when --crf is off."""
    if not args.crf:
        return None
    return CRFParams(gaussian_sxy=args.crf_gaussian_sxy, gaussian_compat=args.crf_gaussian_compat,
                     bilateral_sxy=args.crf_bilateral_sxy, bilateral_srgb=args.crf_bilateral_srgb,
                     bilateral_compat=args.crf_bilateral_compat, iterations=args.crf_iterations,
                     alpha=args.crf_alpha)
