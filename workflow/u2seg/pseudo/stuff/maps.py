"""``u2seg cluster-stuff``: fit the stuff model on sampled patches of every shard, then write one
stuff label map (PNG, values 0..S-1, image size) per image."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.cliargs import add_device_arguments
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.images import load_rgb
from u2seg.manifest import image_path
from u2seg.pseudo.io import (check_shard_images, iter_dense, png_name, read_manifest, save_png_plain,
                             set_threads, shard_files, shard_iter)
from u2seg.pseudo.stuff.model import CRFParams, KMeansStuffModel, fit_stuff_model, sample_patches, stuff_map

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--k", type=int, default=27, help="stuff clusters (config stuff.k)")
    parser.add_argument("--sample-patches", type=int, default=200000,
                        help="patch features sampled (seeded) to fit the stuff k-means")
    parser.add_argument("--iterations", type=int, default=100, help="maximum k-means iterations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patch sample and the k-means initialisation")
    parser.add_argument("--chunk-size", type=int, default=65536, help="rows per streamed k-means chunk")
    add_crf_arguments(parser)
    parser.add_argument("--model", default="kmeans", choices=["kmeans", "stego", "stego_checkpoint"],
                        help="stuff model (config stuff.model); stego*: gather the maps of `u2seg stego infer`")
    parser.add_argument("--stego-maps-dir", type=Path, default=None, help="stego*: folder of shard_XXXXX/ maps")
    parser.add_argument("--stego-model", type=Path, default=None, help="stego*: the STEGO stuff model (.npz)")
    add_device_arguments(parser)
    parser.add_argument("--out-model", type=Path, required=True, help="stuff model (.npz)")
    parser.add_argument("--out-maps", type=Path, required=True, help="folder of stuff PNGs")
    parser.add_argument("--summary", type=Path, required=True, help="stuff summary json")


def add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """The dense-CRF flags (config stuff.crf)."""
    parser.add_argument("--crf", action="store_true", help="refine the maps with a dense CRF")
    parser.add_argument("--crf-gaussian-sxy", type=float, default=1.0,
                        help="CRF Gaussian (smoothness) kernel: spatial std in pixels")
    parser.add_argument("--crf-gaussian-compat", type=float, default=3.0, help="CRF Gaussian kernel: Potts weight")
    parser.add_argument("--crf-bilateral-sxy", type=float, default=67.0,
                        help="CRF bilateral (appearance) kernel: spatial std in pixels")
    parser.add_argument("--crf-bilateral-srgb", type=float, default=3.0, help="CRF bilateral kernel: colour std")
    parser.add_argument("--crf-bilateral-compat", type=float, default=4.0, help="CRF bilateral kernel: Potts weight")
    parser.add_argument("--crf-iterations", type=int, default=10, help="CRF mean-field iterations")
    parser.add_argument("--crf-alpha", type=float, default=2.0, help="probabilities = softmax(alpha * cosine)")


def crf_params(args: argparse.Namespace) -> CRFParams | None:
    """CRFParams of the CRF flags, None when --crf is off."""
    if not args.crf:
        return None
    return CRFParams(args.crf_gaussian_sxy, args.crf_gaussian_compat, args.crf_bilateral_sxy,
                     args.crf_bilateral_srgb, args.crf_bilateral_compat, args.crf_iterations, args.crf_alpha)


def run_gather(args: argparse.Namespace) -> int:
    """stego / stego_checkpoint: collect the per-shard maps into the k-means model's outputs."""
    from u2seg.pseudo.stuff.stego.cli import gather_maps
    from u2seg.pseudo.stuff.model import load_stuff_model

    if args.stego_maps_dir is None or args.stego_model is None:
        raise UserError(f"--model {args.model} needs --stego-maps-dir and --stego-model")
    manifest = read_manifest(args.manifest)
    model = load_stuff_model(args.stego_model)
    if model.num_classes != args.k:
        raise UserError(f"the STEGO model has {model.num_classes} clusters, stuff.k is {args.k}")
    t0 = time.perf_counter()
    pixels, n_images = gather_maps(manifest, args.shard_size, args.stego_maps_dir, args.out_maps)
    model.save(args.out_model)
    meta, _ = model.state()
    summary = {
        "model": args.model, "k": args.k, "feature_dim": int(meta["in_channels"]), "code_dim": int(meta["dim"]),
        "crf": bool(args.crf), "images": n_images,
        "pixel_fraction": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "empty_clusters": int((pixels == 0).sum()), "seconds": {"gather": round(time.perf_counter() - t0, 3)},
    }
    write_json(args.summary, summary, indent=1)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model != "kmeans":
        return run_gather(args)
    set_threads(args.threads)
    from u2seg.backbones import resolve_device

    device = resolve_device(args.device)
    if not 1 <= args.k <= 254:
        raise UserError(f"stuff.k must be in 1..254 (the semantic PNG is uint8 with 255 = void), got {args.k}")
    manifest = read_manifest(args.manifest)
    paths = shard_files(manifest, args.shard_size, args.features_dir, ".zarr")
    shards = list(shard_iter(manifest, args.shard_size))
    grids = set()
    for (_, images), path in zip(shards, paths):
        group = open_shard(path)
        check_shard_images(group, images, path)
        grids.add(tuple(group["dense"].shape[1:]))
    if len(grids) != 1:
        raise UserError(f"feature shards disagree on the dense shape: {sorted(grids)} (mixed backbones?)")
    channels, gh, gw = grids.pop()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    # the shards' dense arrays: the sample reads only the images holding sampled patches
    sample = sample_patches([lambda p=p: open_shard(p)["dense"] for p in paths], [len(im) for _, im in shards],
                            gh * gw, args.sample_patches, args.seed)
    timings["sample"] = time.perf_counter() - t0
    if len(sample) < args.k:
        raise UserError(f"only {len(sample)} patches for stuff.k={args.k} clusters")
    log.info("stuff: %d sampled patches of dim %d from %d images", len(sample), channels,
             sum(len(im) for _, im in shards))

    t0 = time.perf_counter()
    model = fit_stuff_model(KMeansStuffModel(args.k, args.iterations, args.seed, device), sample,
                            args.chunk_size)
    del sample
    timings["fit"] = time.perf_counter() - t0

    crf = crf_params(args)
    t0 = time.perf_counter()
    pixels = np.zeros(args.k, dtype=np.int64)
    n_images = sum(len(im) for _, im in shards)
    with atomic_path(args.out_maps, directory=True) as tmp:
        bar = tqdm(total=n_images, desc="stuff maps", unit="img")
        for (_, images), path in zip(shards, paths):
            for im, dense in zip(images, iter_dense(path)):
                rgb = load_rgb(image_path(manifest, im)) if crf is not None else None
                labels = stuff_map(model, dense, im["height"], im["width"], rgb, crf)
                pixels += np.bincount(labels.ravel(), minlength=args.k)[:args.k]
                save_png_plain(tmp / png_name(im), labels)
                bar.update(1)
        bar.close()
    timings["predict"] = time.perf_counter() - t0
    model.save(args.out_model)
    summary = {
        "model": model.kind, "k": args.k, "feature_dim": int(channels), "grid": [int(gh), int(gw)],
        "sampled_patches": int(model.fit_info["rows"]), "fit": model.fit_info, "crf": crf is not None,
        "images": n_images, "pixel_fraction": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "empty_clusters": int((pixels == 0).sum()),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    write_json(args.summary, summary, indent=1)
    log.info("stuff: %d maps -> %s (%d clusters unused)", n_images, args.out_maps, summary["empty_clusters"])
    return 0
