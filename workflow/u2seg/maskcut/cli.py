"""``u2seg maskcut``: MaskCut masks of one feature shard (see :mod:`u2seg.maskcut.shard`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from u2seg.cliargs import add_crf_arguments, add_device_arguments, add_manifest_argument, crf_from_args
from u2seg.crf import MASKCUT_CRF
from u2seg.maskcut.params import FOREGROUND_RULES, SOLVERS, MaskCutExecution, MaskCutParams
from u2seg.params import record_beside


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = MaskCutParams()
    io = parser.add_argument_group("inputs / outputs")
    add_manifest_argument(io, "manifest.json of the dataset")
    io.add_argument("--features", type=Path, required=True, help="feature shard (zarr v3 store)")
    io.add_argument("--out", type=Path, required=True, help="output COCO instances json of the shard")
    io.add_argument("--gallery", type=Path, required=True, help="output folder of overlay PNGs")
    io.add_argument("--gallery-size", type=int, default=8,
                    help="images of the whole dataset (fixed hash sample) that get an overlay PNG")
    alg = parser.add_argument_group("MaskCut (docs/method.md §3)")
    alg.add_argument("--tau", type=float, default=d.tau, help="affinity threshold on the cosine similarity")
    alg.add_argument("--eps", type=float, default=d.eps, help="weight of the edges below tau")
    alg.add_argument("--n-masks", type=int, default=d.n_masks, help="masks per image (N)")
    alg.add_argument("--solver", choices=SOLVERS, default=d.solver,
                     help="eigenvector solver: fast (block-Krylov, torch) or dense (scipy eigh, as CutLER)")
    alg.add_argument("--eigen-tol", type=float, default=d.eigen_tol,
                     help="fast solver: residual tolerance ||M y - mu y||")
    alg.add_argument("--foreground-rule", choices=FOREGROUND_RULES, default=d.foreground_rule,
                     help="which side of the cut is foreground: faithful (CutLER's corner rule) or sign_invariant")
    alg.add_argument("--max-iou-previous", type=float, default=d.max_iou_previous,
                     help="reject a new patch mask whose IoU with the previous one exceeds this")
    alg.add_argument("--min-area-fraction", type=float, default=d.min_area_fraction,
                     help="reject a patch mask covering at most this fraction of the patches")
    alg.add_argument("--min-crf-iou", type=float, default=d.min_crf_iou,
                     help="discard a mask whose IoU with its pre-CRF mask is below this")
    crf = parser.add_argument_group("dense CRF")
    add_crf_arguments(crf, MASKCUT_CRF,
                      "dense CRF refinement of each mask (--no-crf: skip it; hole filling still applies)")
    run_ = parser.add_argument_group("execution")
    run_.add_argument("--batch-size", type=int, default=4, help="images per batched eigen solve")
    run_.add_argument("--cpu-workers", type=int, default=MaskCutExecution().cpu_workers,
                      help="worker processes for each image's CPU half (image reading, dense CRF, RLE encoding, "
                           "gallery), overlapping the N-cut of the next batches; 0: all in this process "
                           "(same masks either way)")
    add_device_arguments(run_, default="auto")
    run_.add_argument("--seed", type=int, default=d.seed, help="seed of the eigensolver start and the gallery sample")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out)


def params_from_args(args: argparse.Namespace) -> MaskCutParams:
    """MaskCutParams from the parsed CLI flags (validated)."""
    crf = crf_from_args(args)
    return MaskCutParams(tau=args.tau, eps=args.eps, n_masks=args.n_masks, solver=args.solver,
                         foreground_rule=args.foreground_rule, max_iou_previous=args.max_iou_previous,
                         min_area_fraction=args.min_area_fraction, min_crf_iou=args.min_crf_iou, crf=crf,
                         eigen_tol=args.eigen_tol, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from u2seg.maskcut.shard import maskcut_shard

    return maskcut_shard(manifest_path=args.manifest, features_path=args.features, out_path=args.out,
                         gallery_dir=args.gallery, gallery_size=args.gallery_size, params=params_from_args(args),
                         batch_size=args.batch_size, device=args.device, threads=args.threads,
                         cpu_workers=MaskCutExecution(cpu_workers=args.cpu_workers).cpu_workers)
