"""The jobs of the STEGO stuff model (``u2seg stego <action>``): ``knn`` (crop kNN table), ``train`` (head +
cluster probe, resumable), ``infer`` (stuff maps of one shard; also for ``stego_checkpoint``) and ``import``.

``u2seg cluster-stuff --model stego|stego_checkpoint`` then gathers the per-shard maps into the same
``stuff/`` folder, ``stuff_model.npz`` and ``stuff_summary.json`` the k-means model writes.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from u2seg.atomic import atomic_path, write_json
from u2seg.crf import CRFParams
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.pseudo.io import check_shard_images, png_name, read_manifest, set_threads, shard_files, shard_iter
from u2seg.pseudo.stuff.stego.params import StegoInferenceParams, StegoTrainParams

if TYPE_CHECKING:
    from u2seg.features import ShardArrays

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


# --------------------------------------------------------------------------------------------- knn
def knn_job(*, manifest_path: Path, shard_size: int, features_dir: Path, crop_type: str, crop_ratio: float,
            knn: int, device: str, threads: int | None, out: Path) -> int:
    """``stego knn``: the kNN table (``knn`` neighbours, self included) of every image's crop descriptors."""
    from u2seg.device import resolve_device
    from u2seg.pseudo.stuff.stego.model import crop_boxes, crop_descriptors, knn_table

    set_threads(threads)
    t0 = time.perf_counter()
    shards, (c, h, w) = _shards(read_manifest(manifest_path), shard_size, features_dir)
    boxes = crop_boxes(h, w, crop_type, crop_ratio)
    desc = []
    for _, dense in shards:
        for i in range(dense.shape[0]):
            desc.append(crop_descriptors(np.asarray(dense[i], dtype=np.float32), boxes))
    desc_arr = np.concatenate(desc)
    nns = knn_table(desc_arr, knn, device=resolve_device(device))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, nns=nns, boxes=np.asarray(boxes, dtype=np.int64), grid=np.asarray([c, h, w]),
                     crop_type=np.array(crop_type))
    log.info("stego-knn: %d crops of %d images, %d neighbours, %.1f s", len(nns), len(desc),
             nns.shape[1], time.perf_counter() - t0)
    return 0


# ------------------------------------------------------------------------------------------- train
def train_job(*, manifest_path: Path, shard_size: int, features_dir: Path, knn_table: Path,
              params: StegoTrainParams, preload_mb: float, device: str, threads: int | None, work_dir: Path,
              out_model: Path, out_history: Path, out_curve: Path | None) -> int:
    """``stego train``: the head + cluster probe on the crops of the stored dense maps (resumable in
    ``work_dir``); the model npz, the loss history json and, with ``out_curve``, its PNG."""
    import resource

    import torch
    from tqdm import tqdm

    from u2seg.device import resolve_device
    from u2seg.pseudo.stuff.stego.train import CropStore, train_stego

    set_threads(threads)
    for name in ("batch_size", "max_steps", "checkpoint_period", "log_period", "dim", "k"):
        if getattr(params, name) < 1:
            raise UserError(f"stuff.stego.{name} must be >= 1, got {getattr(params, name)}")
    device = resolve_device(device)
    shards, (c, h, w) = _shards(read_manifest(manifest_path), shard_size, features_dir)
    with np.load(knn_table, allow_pickle=False) as data:
        nns, boxes, grid = data["nns"], [tuple(b) for b in data["boxes"].tolist()], data["grid"].tolist()
    if grid != [c, h, w]:
        raise UserError(f"{knn_table} was made for dense maps {grid}, the shards are {[c, h, w]}; rerun stego_knn")
    read, n_images = _reader(shards)
    preload = n_images * c * h * w * 2 / 2**20 <= preload_mb
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
    model, history = train_stego(store, nns, c, params, device, work_dir, progress)
    t_train = time.perf_counter() - t0
    bar.close()
    model.save(out_model)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"history": history, "crops": len(store), "images": n_images, "grid": [c, h, w],
           "device": str(device), "preloaded": preload,
           "seconds": {"load": round(t_load, 3), "train": round(t_train, 3)},
           "peak_rss_mb": round(peak_mb, 1),
           "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None}
    write_json(out_history, out, indent=1)
    if out_curve is not None:
        plot_history(history, out_curve)
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
def infer_job(*, manifest_path: Path, shard: int, shard_size: int, features: "Path | ShardArrays", model_path: Path | None,
              checkpoint: str | None, input_size: int, crf: CRFParams | None, device: str, threads: int | None,
              out_maps: Path, inference: StegoInferenceParams | None = None) -> int:
    """``stego infer``: the stuff maps of one shard from a trained model npz or an official checkpoint
    (``inference``: how the checkpoint labels an image, :mod:`u2seg.pseudo.stuff.stego.inference`; a
    trained model labels the shard's stored dense maps, without flip or crop)."""
    from u2seg.device import resolve_device
    from u2seg.images import load_rgb
    from u2seg.manifest import image_path, shard_images
    from u2seg.pseudo.io import save_png_plain
    from u2seg.pseudo.stuff.model import stuff_map
    from u2seg.pseudo.stuff.registry import load_stuff_model

    set_threads(threads)
    if (model_path is None) == (checkpoint is None):
        raise UserError("give exactly one of --model (trained STEGO head) or --checkpoint (official STEGO .ckpt)")
    device = resolve_device(device)
    manifest = read_manifest(manifest_path)
    images = shard_images(manifest, shard, shard_size)
    group = open_shard(features)
    check_shard_images(group, images, features)
    tokens = None
    if checkpoint is not None:
        from u2seg.pseudo.stuff.stego.checkpoint import load_stego_checkpoint
        from u2seg.pseudo.stuff.stego.inference import checkpoint_stuff_map

        model, tokens = load_stego_checkpoint(checkpoint)
        tokens.to(device)
    else:
        model = load_stuff_model(model_path)
    if getattr(model, "kind", "") != "stego":
        raise UserError(f"{model_path}: not a STEGO stuff model")
    model.head.to(device)
    model.probe.to(device)
    model.device = device
    inference = inference or StegoInferenceParams()
    if tokens is not None:
        log.info("stego-infer: checkpoint inference, flip %s, view %s%s", inference.flip, inference.crop,
                 f" {inference.crop_size} px (void outside the crop)" if inference.crop == "center" else "")
    t0 = time.perf_counter()
    pixels = np.zeros(model.num_classes, dtype=np.int64)
    with atomic_path(out_maps, directory=True) as tmp:
        for i, im in enumerate(images):
            rgb = load_rgb(image_path(manifest, im)) if (crf is not None or tokens is not None) else None
            if tokens is not None:
                labels = checkpoint_stuff_map(model, tokens, rgb, input_size, inference, crf)
            else:
                dense = np.asarray(group["dense"][i], dtype=np.float32)
                labels = stuff_map(model, dense, im["height"], im["width"], rgb, crf)
            pixels += np.bincount(labels.ravel(), minlength=model.num_classes)[:model.num_classes]
            save_png_plain(tmp / png_name(im), labels)
        write_json(tmp / "_shard.json", {"images": len(images), "pixels": pixels.tolist(),
                                          "seconds": round(time.perf_counter() - t0, 3)})
    log.info("stego-infer: shard %d, %d maps -> %s", shard, len(images), out_maps)
    return 0


# ------------------------------------------------------------------------------------------ import
def import_job(*, checkpoint: str, out: Path) -> int:
    """``stego import``: the head + cluster probe of an official STEGO checkpoint as a stuff model npz."""
    from u2seg.pseudo.stuff.stego.checkpoint import (
        read_checkpoint,
        resolve_checkpoint,
        stego_model_from_checkpoint,
    )

    model = stego_model_from_checkpoint(read_checkpoint(resolve_checkpoint(checkpoint)))
    model.save(out)
    log.info("stego-import: %s -> %s (%d clusters, code dim %d)", checkpoint, out,
             model.num_classes, model.head.dim)
    return 0


