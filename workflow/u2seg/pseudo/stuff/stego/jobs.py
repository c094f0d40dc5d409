"""STEGO stuff model stage ``u2seg stego <action>``: ``knn`` (crop kNN table), ``train`` (head + cluster
probe, resumable) and ``infer`` (stuff maps of one shard; also for ``stego_checkpoint``).

``u2seg cluster-stuff --model stego|stego_checkpoint`` then gathers the per-shard maps into the same
``stuff/`` folder, ``stuff_model.npz`` and ``stuff_summary.json`` the k-means model writes.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from u2seg.atomic import atomic_path, write_json
from u2seg.cliargs import add_device_arguments
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.pseudo.io import check_shard_images, png_name, read_manifest, set_threads, shard_files, shard_iter

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ shared
def _shards(manifest: dict[str, Any], shard_size: int, features_dir: Path):
    """[(images, zarr dense array)] of every shard (checked against the manifest) and the grid (C, h, w)."""
    out, grids = [], set()
    for (_, images), path in zip(shard_iter(manifest, shard_size),
                                 shard_files(manifest, shard_size, features_dir, ".zarr")):
        group = open_shard(path)
        check_shard_images(group, images, path)
        out.append((images, group["dense"]))
        grids.add(tuple(group["dense"].shape[1:]))
    if len(grids) != 1:
        raise UserError(f"feature shards disagree on the dense shape: {sorted(grids)} (mixed backbones?)")
    return out, grids.pop()


def _reader(shards):
    """read(i) -> dense map (C, h, w) of global image i (shard order)."""
    starts = np.cumsum([0] + [len(im) for im, _ in shards])

    def read(i: int) -> np.ndarray:
        s = int(np.searchsorted(starts, i, side="right") - 1)
        return np.asarray(shards[s][1][i - starts[s]])

    return read, int(starts[-1])


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crop-type", default="five", choices=["five", "none"],
                        help="five: STEGO's five crops of each feature map; none: the whole map")
    parser.add_argument("--crop-ratio", type=float, default=0.5, help="crop side as a fraction of the map side")


# --------------------------------------------------------------------------------------------- knn
def add_knn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    add_crop_arguments(parser)
    parser.add_argument("--knn", type=int, default=30, help="neighbours stored per crop (self included)")
    add_device_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="kNN table (.npz)")


def run_knn(args: argparse.Namespace) -> int:
    from u2seg.backbones import resolve_device
    from u2seg.pseudo.stuff.stego.model import crop_boxes, crop_descriptors, knn_table

    set_threads(args.threads)
    t0 = time.perf_counter()
    shards, (c, h, w) = _shards(read_manifest(args.manifest), args.shard_size, args.features_dir)
    boxes = crop_boxes(h, w, args.crop_type, args.crop_ratio)
    desc = []
    for _, dense in shards:
        for i in range(dense.shape[0]):
            desc.append(crop_descriptors(np.asarray(dense[i], dtype=np.float32), boxes))
    desc_arr = np.concatenate(desc)
    nns = knn_table(desc_arr, args.knn, device=resolve_device(args.device))
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, nns=nns, boxes=np.asarray(boxes, dtype=np.int64), grid=np.asarray([c, h, w]),
                     crop_type=np.array(args.crop_type))
    log.info("stego-knn: %d crops of %d images, %d neighbours, %.1f s", len(nns), len(desc),
             nns.shape[1], time.perf_counter() - t0)
    return 0


# ------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from u2seg.pseudo.stuff.stego.model import StegoLossParams
    from u2seg.pseudo.stuff.stego.train import StegoTrainParams

    t, lp = StegoTrainParams(), StegoLossParams()
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--features-dir", type=Path, required=True, help="folder of shard_{i:05d}.zarr")
    parser.add_argument("--knn-table", type=Path, required=True, help="kNN table (.npz) from `u2seg stego knn`")
    for name in ("dim", "k", "batch_size", "max_steps", "num_neighbors", "seed", "checkpoint_period",
                 "log_period"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(t, name),
                            help=f"training setting {name} (config {'stuff.k' if name == 'k' else 'stuff.stego.' + name})")
    for name in ("dropout", "lr", "cluster_lr"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(t, name),
                            help=f"training setting {name} (config {'stuff.k' if name == 'k' else 'stuff.stego.' + name})")
    for name in ("pos_intra_weight", "pos_inter_weight", "neg_inter_weight", "pos_intra_shift",
                 "pos_inter_shift", "neg_inter_shift"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(lp, name),
                            help=f"loss setting {name} (config stuff.stego.{name})")
    for name in ("feature_samples", "neg_samples"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(lp, name),
                            help=f"loss setting {name} (config stuff.stego.{name})")
    for name, default in (("pointwise", lp.pointwise), ("zero_clamp", lp.zero_clamp),
                          ("stabilize", lp.stabilize), ("dropout_target", t.dropout_target)):
        parser.add_argument("--" + name.replace("_", "-"), default=default, action=argparse.BooleanOptionalAction,
                            help=f"STEGO switch {name} (config stuff.stego.{name})")
    parser.add_argument("--preload-mb", type=float, default=4096.0,
                        help="keep the dense maps in memory (float16) when they fit in this many MB")
    add_device_arguments(parser)
    parser.add_argument("--work-dir", type=Path, required=True, help="resumable checkpoints")
    parser.add_argument("--out-model", type=Path, required=True, help="trained stuff model (.npz)")
    parser.add_argument("--out-history", type=Path, required=True, help="loss history + timings (json)")
    parser.add_argument("--out-curve", type=Path, default=None, help="loss curve (png)")


def train_params(args: argparse.Namespace):
    from u2seg.pseudo.stuff.stego.model import StegoLossParams
    from u2seg.pseudo.stuff.stego.train import StegoTrainParams

    loss = StegoLossParams(args.pos_intra_weight, args.pos_inter_weight, args.neg_inter_weight,
                           args.pos_intra_shift, args.pos_inter_shift, args.neg_inter_shift,
                           args.feature_samples, args.neg_samples, args.pointwise, args.zero_clamp, args.stabilize)
    for name in ("batch_size", "max_steps", "checkpoint_period", "log_period", "dim", "k"):
        if getattr(args, name) < 1:
            raise UserError(f"stuff.stego.{name} must be >= 1, got {getattr(args, name)}")
    return StegoTrainParams(args.dim, args.k, args.dropout, args.dropout_target, True, args.lr, args.cluster_lr,
                            args.batch_size, args.max_steps, args.num_neighbors, args.seed,
                            args.checkpoint_period, args.log_period, loss)


def run_train(args: argparse.Namespace) -> int:
    import resource

    import torch
    from tqdm import tqdm

    from u2seg.backbones import resolve_device
    from u2seg.pseudo.stuff.stego.train import CropStore, train_stego

    set_threads(args.threads)
    params = train_params(args)
    device = resolve_device(args.device)
    shards, (c, h, w) = _shards(read_manifest(args.manifest), args.shard_size, args.features_dir)
    with np.load(args.knn_table, allow_pickle=False) as data:
        nns, boxes, grid = data["nns"], [tuple(b) for b in data["boxes"].tolist()], data["grid"].tolist()
    if grid != [c, h, w]:
        raise UserError(f"{args.knn_table} was made for dense maps {grid}, the shards are {[c, h, w]}; rerun stego_knn")
    read, n_images = _reader(shards)
    preload = n_images * c * h * w * 2 / 2**20 <= args.preload_mb
    t0 = time.perf_counter()
    store = CropStore(n_images, read, boxes, preload)
    t_load = time.perf_counter() - t0
    bar = tqdm(total=params.max_steps, desc="stego head", unit="step")

    def progress(step: int, row: dict[str, float]) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{row['total']:.4f}", refresh=True)
        log.info("stego-train: step %d/%d loss %.5f (corr %.5f cluster %.4f) %.2f steps/s ETA %.0f s",
                 step, params.max_steps, row["total"], row["corr"], row["cluster"], row["rate"], row["eta_s"])

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, history = train_stego(store, nns, c, params, device, args.work_dir, progress)
    t_train = time.perf_counter() - t0
    bar.close()
    model.save(args.out_model)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"history": history, "crops": len(store), "images": n_images, "grid": [c, h, w],
           "device": str(device), "preloaded": preload,
           "seconds": {"load": round(t_load, 3), "train": round(t_train, 3)},
           "peak_rss_mb": round(peak_mb, 1),
           "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None}
    write_json(args.out_history, out, indent=1)
    if args.out_curve is not None:
        plot_history(history, args.out_curve)
    return 0


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    """Loss curve PNG (total, correspondence terms, cluster) of a training history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [r["step"] for r in history]
    for key in ("total", "corr", "self", "knn", "rand", "cluster"):
        ax.plot(steps, [r[key] for r in history], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("STEGO head training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------- infer
def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard", type=int, required=True, help="index of the shard to label")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--features", type=Path, required=True, help="the shard's zarr store")
    parser.add_argument("--model", type=Path, default=None, help="trained stuff model (.npz) from stego-train")
    parser.add_argument("--checkpoint", default=None, help="official STEGO .ckpt (path or URL) instead of --model")
    parser.add_argument("--input-size", type=int, default=480, help="checkpoint mode: image size (features.input_size)")
    from u2seg.pseudo.stuff.cli import add_crf_arguments

    add_crf_arguments(parser)
    add_device_arguments(parser)
    parser.add_argument("--out-maps", type=Path, required=True, help="folder of this shard's stuff PNGs")


def run_infer(args: argparse.Namespace) -> int:
    from u2seg.backbones import resolve_device
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path, shard_images
    from u2seg.pseudo.io import save_png_plain
    from u2seg.pseudo.stuff.model import load_stuff_model, stuff_map
    from u2seg.pseudo.stuff.cli import crf_params

    set_threads(args.threads)
    if (args.model is None) == (args.checkpoint is None):
        raise UserError("give exactly one of --model (trained STEGO head) or --checkpoint (official STEGO .ckpt)")
    device = resolve_device(args.device)
    manifest = read_manifest(args.manifest)
    images = shard_images(manifest, args.shard, args.shard_size)
    group = open_shard(args.features)
    check_shard_images(group, images, args.features)
    tokens = None
    if args.checkpoint is not None:
        from u2seg.pseudo.stuff.stego.checkpoint import image_tokens, load_stego_checkpoint

        model, tokens = load_stego_checkpoint(args.checkpoint)
        tokens.to(device)
    else:
        model = load_stuff_model(args.model)
    if getattr(model, "kind", "") != "stego":
        raise UserError(f"{args.model}: not a STEGO stuff model")
    model.head.to(device)
    model.probe.to(device)
    model.device = device
    crf = crf_params(args)
    t0 = time.perf_counter()
    pixels = np.zeros(model.num_classes, dtype=np.int64)
    with atomic_path(args.out_maps, directory=True) as tmp:
        for i, im in enumerate(images):
            rgb = load_rgb(image_path(manifest, im)) if (crf is not None or tokens is not None) else None
            if tokens is not None:
                dense = image_tokens(tokens, [rgb], args.input_size)[0]
            else:
                dense = np.asarray(group["dense"][i], dtype=np.float32)
            labels = stuff_map(model, dense, im["height"], im["width"], rgb, crf)
            pixels += np.bincount(labels.ravel(), minlength=model.num_classes)[:model.num_classes]
            save_png_plain(tmp / png_name(im), labels)
        write_json(tmp / "_shard.json", {"images": len(images), "pixels": pixels.tolist(),
                                          "seconds": round(time.perf_counter() - t0, 3)})
    log.info("stego-infer: shard %d, %d maps -> %s", args.shard, len(images), args.out_maps)
    return 0


# ------------------------------------------------------------------------------------------ import
def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="official STEGO .ckpt (path or URL)")
    parser.add_argument("--out", type=Path, required=True, help="its head + cluster probe as a stuff model (.npz)")


def run_import(args: argparse.Namespace) -> int:
    from u2seg.pseudo.stuff.stego.checkpoint import read_checkpoint, resolve_checkpoint, stego_model_from_checkpoint

    model = stego_model_from_checkpoint(read_checkpoint(resolve_checkpoint(args.checkpoint)))
    model.save(args.out)
    log.info("stego-import: %s -> %s (%d clusters, code dim %d)", args.checkpoint, args.out,
             model.num_classes, model.head.dim)
    return 0


# ------------------------------------------------------------------------------------------ gather
def gather_maps(manifest: dict[str, Any], shard_size: int, maps_dir: Path, out_maps: Path) -> tuple[np.ndarray, int]:
    """Copy every shard's maps (``maps_dir/shard_XXXXX/``) into ``out_maps``; (pixel counts, images)."""
    pixels = None
    n = 0
    with atomic_path(out_maps, directory=True) as tmp:
        for s, images in shard_iter(manifest, shard_size):
            folder = maps_dir / f"shard_{s:05d}"
            info_path = folder / "_shard.json"
            if not info_path.is_file():
                raise UserError(f"{folder}: missing STEGO stuff maps of shard {s} (rerun stego_infer)")
            info = json.loads(info_path.read_text())
            counts = np.asarray(info["pixels"], dtype=np.int64)
            pixels = counts if pixels is None else pixels + counts
            for im in images:
                src = folder / png_name(im)
                if not src.is_file():
                    raise UserError(f"{src}: missing stuff map (stale stego_infer output?)")
                shutil.copyfile(src, tmp / png_name(im))
                n += 1
    assert pixels is not None
    return pixels, n


# --------------------------------------------------------------------------------------- dispatch
ACTIONS = {"knn": (add_knn_arguments, run_knn, "kNN table of the dense-map crops"),
           "train": (add_train_arguments, run_train, "train the STEGO head + cluster probe (resumable)"),
           "infer": (add_infer_arguments, run_infer, "stuff maps of one shard"),
           "import": (add_import_arguments, run_import, "head + cluster probe of an official STEGO checkpoint")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, (add, _, help_text) in ACTIONS.items():
        add(sub.add_parser(name, help=help_text))


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.action][1](args)
