"""Command-line flags that many ``u2seg`` stages share (one definition per flag group).

Groups: dataset / shard input (``--manifest``, ``--shard``, ``--shard-size``), device and threads,
progress bar, stuff class count, dense CRF. Stage modules call these instead of writing the flags out.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Union

from u2seg.crf import CRFParams
from u2seg.params import STUFF_CLUSTERS

Parser = Union[argparse.ArgumentParser, argparse._ArgumentGroup]


MANIFEST_HELP = "dataset manifest json (from `u2seg ingest`)"
SHARD_SIZE_HELP = "images per shard (shard i = manifest images [i*size, (i+1)*size))"


def add_manifest_argument(parser: Parser, help_text: str = MANIFEST_HELP, required: bool = True,
                          cast: Callable[[str], Any] | None = Path, **kwargs: Any) -> None:
    """``--manifest``: the dataset manifest a stage reads or writes (a Path; ``cast=None``: a str)."""
    parser.add_argument("--manifest", type=cast, required=required, help=help_text, **kwargs)


def add_shard_size_argument(parser: Parser, help_text: str = SHARD_SIZE_HELP) -> None:
    """``--shard-size``: images per feature shard (required; config features.shard_size)."""
    parser.add_argument("--shard-size", type=int, required=True, help=help_text)


def add_dataset_arguments(parser: Parser, manifest_help: str = MANIFEST_HELP) -> None:
    """``--manifest`` and ``--shard-size``: a whole dataset read shard by shard."""
    add_manifest_argument(parser, manifest_help)
    add_shard_size_argument(parser)


def add_shard_arguments(parser: Parser, manifest_help: str = MANIFEST_HELP, shard_help: str = "shard index") -> None:
    """``--manifest``, ``--shard`` and ``--shard-size``: one shard of a dataset's images."""
    add_manifest_argument(parser, manifest_help)
    parser.add_argument("--shard", type=int, required=True, help=shard_help)
    add_shard_size_argument(parser)


def add_threads_argument(parser: Parser, help_text: str = "torch CPU threads") -> None:
    """``--threads`` (torch CPU threads; 0 = torch's default)."""
    parser.add_argument("--threads", type=int, default=0, help=f"{help_text} (0: torch's default)")


def add_device_arguments(parser: Parser, default: str = "cpu") -> None:
    """``--device`` (auto / cpu / cuda, default ``default``) and ``--threads`` (torch CPU threads)."""
    parser.add_argument("--device", default=default, choices=["auto", "cpu", "cuda"],
                        help="auto (CUDA when present), cpu or cuda")
    add_threads_argument(parser)


def add_progress_argument(parser: Parser) -> None:
    """``--no-progress``: no progress bar (logs only)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_num_stuff_argument(parser: Parser, help_text: str = "stuff clusters S (config stuff.k)",
                           required: bool = False) -> None:
    """``--num-stuff``: the stuff class count (default: COCO-Stuff-27's 27 clusters; none when ``required``)."""
    if required:
        parser.add_argument("--num-stuff", type=int, required=True, help=help_text)
    else:
        parser.add_argument("--num-stuff", type=int, default=STUFF_CLUSTERS, help=f"{help_text} (default: %(default)s)")


def add_crf_arguments(parser: Parser, preset: CRFParams, switch_help: str, alpha: bool = False) -> None:
    """The dense-CRF flags (``--crf`` / ``--no-crf`` and one flag per kernel setting), defaults = ``preset``.

    ``alpha`` adds ``--crf-alpha`` (stuff maps: class probabilities = softmax(alpha * score)).
    """
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=preset.enabled, help=switch_help)
    parser.add_argument("--crf-gaussian-sxy", type=float, default=preset.gaussian_sxy,
                        help="CRF Gaussian (smoothness) kernel: spatial std in pixels")
    parser.add_argument("--crf-gaussian-compat", type=float, default=preset.gaussian_compat,
                        help="CRF Gaussian kernel: Potts weight")
    parser.add_argument("--crf-bilateral-sxy", type=float, default=preset.bilateral_sxy,
                        help="CRF bilateral (appearance) kernel: spatial std in pixels")
    parser.add_argument("--crf-bilateral-srgb", type=float, default=preset.bilateral_srgb,
                        help="CRF bilateral kernel: colour std")
    parser.add_argument("--crf-bilateral-compat", type=float, default=preset.bilateral_compat,
                        help="CRF bilateral kernel: Potts weight")
    parser.add_argument("--crf-iterations", type=int, default=preset.iterations, help="CRF mean-field iterations")
    if alpha:
        parser.add_argument("--crf-alpha", type=float, default=preset.alpha,
                            help="probabilities = softmax(alpha * cosine)")


def crf_from_args(args: argparse.Namespace) -> CRFParams:
    """The :class:`CRFParams` of the flags :func:`add_crf_arguments` added."""
    extra = {"alpha": args.crf_alpha} if hasattr(args, "crf_alpha") else {}
    return CRFParams(enabled=args.crf, gaussian_sxy=args.crf_gaussian_sxy, gaussian_compat=args.crf_gaussian_compat,
                     bilateral_sxy=args.crf_bilateral_sxy, bilateral_srgb=args.crf_bilateral_srgb,
                     bilateral_compat=args.crf_bilateral_compat, iterations=args.crf_iterations, **extra)
