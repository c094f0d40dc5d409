"""Stuff label maps of a dataset (``u2seg cluster-stuff``): fit the k-means stuff model on sampled
patches of every shard and write one stuff label map (PNG, values 0..S-1, image size) per image; or, for
the per-shard stuff models (STEGO), gather the maps of ``u2seg stego infer`` into the same outputs."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from u2seg.atomic import atomic_path, write_json
from u2seg.crf import CRFParams
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.images import load_rgb
from u2seg.manifest import image_path
from u2seg.pseudo.io import (check_shard_images, iter_dense, png_name, read_manifest, save_png_plain, set_threads,
                             shard_files, shard_iter)
from u2seg.pseudo.stuff.model import KMeansStuffModel, fit_stuff_model, sample_patches, stuff_map
from u2seg.pseudo.stuff.registry import STUFF_MODELS, load_stuff_model

log = logging.getLogger(__name__)


def gather_maps(manifest: dict[str, Any], shard_size: int, maps_dir: Path, out_maps: Path) -> tuple[np.ndarray, int]:
    """Copy every shard's maps (``maps_dir/shard_XXXXX/``) into ``out_maps``; (pixel counts, images)."""
    pixels = None
    n = 0
    with atomic_path(out_maps, directory=True) as tmp:
        for s, images in shard_iter(manifest, shard_size):
            folder = maps_dir / f"shard_{s:05d}"
            info_path = folder / "_shard.json"
            if not info_path.is_file():
                raise UserError(f"{folder}: missing the stuff maps of shard {s} (rerun stego_infer / stuff_maps_shard)")
            info = json.loads(info_path.read_text())
            counts = np.asarray(info["pixels"], dtype=np.int64)
            pixels = counts if pixels is None else pixels + counts
            for im in images:
                src = folder / png_name(im)
                if not src.is_file():
                    raise UserError(f"{src}: missing stuff map (stale stego_infer / stuff_maps_shard output?)")
                shutil.copyfile(src, tmp / png_name(im))
                n += 1
    assert pixels is not None
    return pixels, n


def gather_stuff_maps(*, model_name: str, manifest_path: Path, shard_size: int, k: int, crf: bool,
                      maps_dir: Path | None, model_path: Path | None, out_model: Path, out_maps: Path,
                      summary_path: Path) -> int:
    """Per-shard stuff models (stego / stego_checkpoint): collect the per-shard maps into the same
    outputs as the k-means model (maps folder, model npz, summary json)."""
    if maps_dir is None or model_path is None:
        raise UserError(f"--model {model_name} needs --stego-maps-dir and --stego-model")
    manifest = read_manifest(manifest_path)
    model = load_stuff_model(model_path)
    if model.num_classes != k:
        raise UserError(f"the STEGO model has {model.num_classes} clusters, stuff.k is {k}")
    t0 = time.perf_counter()
    pixels, n_images = gather_maps(manifest, shard_size, maps_dir, out_maps)
    model.save(out_model)
    meta, _ = model.state()
    summary = {
        "model": model_name, "k": k, "feature_dim": int(meta["in_channels"]), "code_dim": int(meta["dim"]),
        "crf": bool(crf), "images": n_images,
        "pixel_fraction": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "empty_clusters": int((pixels == 0).sum()), "seconds": {"gather": round(time.perf_counter() - t0, 3)},
    }
    write_json(summary_path, summary, indent=1)
    return 0


def stuff_maps(*, model_name: str, manifest_path: Path, shard_size: int, features_dir: Path, k: int,
               n_sample: int, iterations: int, seed: int, chunk_size: int, crf: CRFParams | None,
               maps_dir: Path | None, model_path: Path | None, device: str, threads: int | None,
               out_model: Path, out_maps: Path, summary_path: Path) -> int:
    """The stuff stage: the registered model ``model_name`` (config stuff.model) -> maps, model, summary."""
    if model_name not in STUFF_MODELS:
        raise UserError(f"unknown stuff model {model_name!r}; choose one of {', '.join(STUFF_MODELS)}")
    if STUFF_MODELS[model_name].per_shard_maps:
        return gather_stuff_maps(model_name=model_name, manifest_path=manifest_path, shard_size=shard_size, k=k,
                                 crf=crf is not None, maps_dir=maps_dir, model_path=model_path,
                                 out_model=out_model, out_maps=out_maps, summary_path=summary_path)
    return kmeans_stuff_maps(manifest_path=manifest_path, shard_size=shard_size, features_dir=features_dir, k=k,
                             n_sample=n_sample, iterations=iterations, seed=seed, chunk_size=chunk_size, crf=crf,
                             device=device, threads=threads, out_model=out_model, out_maps=out_maps,
                             summary_path=summary_path)


def kmeans_stuff_maps(*, manifest_path: Path, shard_size: int, features_dir: Path, k: int, n_sample: int,
                      iterations: int, seed: int, chunk_size: int, crf: CRFParams | None, device: str,
                      threads: int | None, out_model: Path, out_maps: Path, summary_path: Path) -> int:
    """Fit cosine k-means on a seeded patch sample of every shard, then write every image's stuff map."""
    set_threads(threads)
    from u2seg.device import resolve_device

    torch_device = resolve_device(device)
    if not 1 <= k <= 254:
        raise UserError(f"stuff.k must be in 1..254 (the semantic PNG is uint8 with 255 = void), got {k}")
    manifest = read_manifest(manifest_path)
    paths = shard_files(manifest, shard_size, features_dir, ".zarr")
    shards = list(shard_iter(manifest, shard_size))
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
                            gh * gw, n_sample, seed)
    timings["sample"] = time.perf_counter() - t0
    if len(sample) < k:
        raise UserError(f"only {len(sample)} patches for stuff.k={k} clusters")
    log.info("stuff: %d sampled patches of dim %d from %d images", len(sample), channels,
             sum(len(im) for _, im in shards))

    t0 = time.perf_counter()
    model = fit_stuff_model(KMeansStuffModel(k, iterations, seed, torch_device), sample,
                            chunk_size)
    del sample
    timings["fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pixels = np.zeros(k, dtype=np.int64)
    n_images = sum(len(im) for _, im in shards)
    with atomic_path(out_maps, directory=True) as tmp:
        bar = tqdm(total=n_images, desc="stuff maps", unit="img")
        for (_, images), path in zip(shards, paths):
            for im, dense in zip(images, iter_dense(path)):
                rgb = load_rgb(image_path(manifest, im)) if crf is not None else None
                labels = stuff_map(model, dense, im["height"], im["width"], rgb, crf)
                pixels += np.bincount(labels.ravel(), minlength=k)[:k]
                save_png_plain(tmp / png_name(im), labels)
                bar.update(1)
        bar.close()
    timings["predict"] = time.perf_counter() - t0
    model.save(out_model)
    summary = {
        "model": model.kind, "k": k, "feature_dim": int(channels), "grid": [int(gh), int(gw)],
        "sampled_patches": int(model.fit_info["rows"]), "fit": model.fit_info, "crf": crf is not None,
        "images": n_images, "pixel_fraction": (pixels / max(pixels.sum(), 1)).round(6).tolist(),
        "empty_clusters": int((pixels == 0).sum()),
        "seconds": {name: round(v, 3) for name, v in timings.items()},
    }
    write_json(summary_path, summary, indent=1)
    log.info("stuff: %d maps -> %s (%d clusters unused)", n_images, out_maps, summary["empty_clusters"])
    return 0
