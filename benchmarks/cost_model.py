"""Cost of a pseudo-labels + training run at paper scale, from measured per-image figures.

For COCO train2017 (118,287 images, configs/u2seg-coco.yaml) and ImageNet-1K train (1,281,167 images,
configs/u2seg-imagenet.yaml) at each preset's settings, prints: images, shards, the peak feature disk
(features kept vs not kept), the GPU-hours of the fused per-shard pass, MaskCut's CPU-hours (the dense
CRF), clustering and training. Every figure says where it comes from: measured on this project's CPU
machine (docs/benchmarks.md), measured on a GPU (the figures file `benchmarks/gpu_check.sh` writes,
given with --gpu-figures), or a projection that no measurement backs yet (marked "projection, not
measured").

    python benchmarks/cost_model.py                                   # projections + CPU figures
    python benchmarks/cost_model.py --gpu-figures gpu_check/figures.txt --json cost.json
    python benchmarks/cost_model.py --markdown                        # the table of docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9


@dataclass(frozen=True)
class Figure:
    """One per-unit figure and where it comes from."""

    value: float
    source: str
    measured: bool

    def label(self) -> str:
        return self.source if self.measured else f"{self.source} (projection, not measured)"


def vit_forward_flops(tokens: int, dim: int = 768, depth: int = 12) -> float:
    """FLOPs of one ViT forward (2 per multiply-add): per layer 24 N d^2 (QKV, projection, MLP) + 4 N^2 d
    (attention)."""
    return depth * (24 * tokens * dim ** 2 + 4 * tokens ** 2 * dim)


# Assumed sustained throughput of a ViT-B/8 forward with AMP on one H100-class GPU (a fraction of its
# dense fp16 peak); only used while no GPU figure exists.
ASSUMED_GPU_FLOPS = 100e12


def default_figures() -> dict[str, Figure]:
    """The figures of docs/benchmarks.md (CPU: 2-core machine under load) and the projections."""
    return {
        # dino_vitb8 at 480 px: 60 x 60 x 768 float16 + the global embedding (768 float32)
        "feature_bytes_per_image": Figure(60 * 60 * 768 * 2 + 768 * 4, "dino_vitb8 at 480 px, zarr arrays", True),
        "crf_cpu_s_per_image": Figure(
            0.8, "MaskCut's dense CRF + RLE, CPU-s per image (docs/benchmarks.md 'MaskCut', 30 x 30 coco-mini)", True),
        # images/s of `u2seg shard-pass` on one GPU: from gpu_check.sh, else the FLOP projection (per preset)
        "gpu_pass_images_per_s": Figure(0.0, "ViT-B/8 forwards per image x FLOPs / 100 TFLOP/s", False),
        "kmeans_s_per_million_points_k800": Figure(
            163.1, "instance k-means fit + assignment, 1M x 768, K = 800, 2 threads (benchmarks/cluster.py)", True),
        "train_s_per_iter_8gpu_batch16": Figure(
            0.317, "Cascade Mask R-CNN R50-FPN, 8 GPUs, batch 16 (detectron2 model zoo, V100)", False),
    }


@dataclass(frozen=True)
class Preset:
    """What the cost depends on in one preset (values of configs/u2seg-*.yaml)."""

    name: str
    dataset: str
    images: int
    shard_size: int
    keep_features: bool
    stuff_model: str
    stego_flip: bool
    n_masks: int
    k: int
    max_iter: int
    train_gpus: int


PRESETS = (
    Preset("u2seg-coco", "COCO train2017", 118_287, 256, True, "stego_checkpoint", True, 3, 300, 90_000, 8),
    Preset("u2seg-imagenet", "ImageNet-1K train", 1_281_167, 1000, False, "kmeans", False, 3, 800, 90_000, 8),
)


def forwards_per_image(p: Preset) -> int:
    """ViT-B/8 forwards at 480 px per image in the pass: the features, one per mask crop (crop_cls
    embeddings at crop_size 480) and, for stego_checkpoint, STEGO's own (twice with flip averaging; with
    flip off the features' forward serves it), and for k-means stuff without kept features the maps' forward."""
    stego = (2 if p.stego_flip else 0) if p.stuff_model == "stego_checkpoint" else 0
    # k-means stuff with features not kept (fused): its maps recompute the features (rule stuff_maps_shard)
    kmeans_maps = 1 if p.stuff_model == "kmeans" and not p.keep_features else 0
    return 1 + p.n_masks + stego + kmeans_maps


# ViT-B/8 forwards per image of the pass gpu_check.sh measures (benchmarks/shard_pass.py --paper-shape: the
# u2seg-imagenet preset's features + 3 crop_cls crops)
MEASURED_FORWARDS = 4


def projected_images_per_s(p: Preset) -> float:
    """GPU images/s of the pass from the FLOPs alone (no CPU limit): a projection."""
    return ASSUMED_GPU_FLOPS / (forwards_per_image(p) * vit_forward_flops(60 * 60))


def feature_disk(p: Preset, figs: dict[str, Figure], jobs_in_flight: int) -> dict[str, float]:
    """Peak feature bytes (GB): kept; not kept with this preset's stuff model; at the preset's settings; and
    the memory of the shard's features in one fused pass (not kept, the pass holds them in memory and
    writes no feature file: 0 GB of feature disk). benchmarks/feature_disk.py computes the disk from the DAG."""
    b = figs["feature_bytes_per_image"].value
    every = p.images * b / GB
    # fused presets: stego_checkpoint maps in the pass; k-means fits on the shards' sample shares and its maps
    # recompute the features; a trained STEGO head (stuff.model stego) reads every stored shard
    in_memory = p.stuff_model in ("stego_checkpoint", "kmeans")
    not_kept = 0.0 if in_memory else every
    return {"kept_gb": every, "not_kept_gb": not_kept, "preset_gb": every if p.keep_features else not_kept,
            "pass_memory_gb": min(p.shard_size, p.images) * b / GB,
            "passes_memory_gb": min(jobs_in_flight, math.ceil(p.images / p.shard_size)) * p.shard_size * b / GB}


def cost(p: Preset, figs: dict[str, Figure], jobs_in_flight: int = 8, cpu_cores_per_gpu: int = 16) -> dict[str, Any]:
    """Every cost of one preset (hours, GB) with the label of each figure used."""
    gpu = figs["gpu_pass_images_per_s"]
    # gpu_check.sh measures the u2seg-imagenet pass shape; other presets scale by their ViT forwards
    gpu_ips = gpu.value * MEASURED_FORWARDS / forwards_per_image(p) if gpu.measured else projected_images_per_s(p)
    crf = figs["crf_cpu_s_per_image"].value
    cpu_ips = cpu_cores_per_gpu / crf  # the CPU half (CRF) on the GPU's cores, fully overlapped
    pass_ips = min(gpu_ips, cpu_ips) if not gpu.measured else gpu_ips  # a measured figure already includes it
    instances = p.images * p.n_masks
    kmeans_s = figs["kmeans_s_per_million_points_k800"].value * instances / 1e6 * p.k / 800
    train = figs["train_s_per_iter_8gpu_batch16"]
    return {
        "preset": p.name, "dataset": p.dataset, "images": p.images, "shard_size": p.shard_size,
        "shards": math.ceil(p.images / p.shard_size), "keep_features": p.keep_features, "stuff_model": p.stuff_model,
        "feature_disk": {k: round(v, 1) for k, v in feature_disk(p, figs, jobs_in_flight).items()},
        "jobs_in_flight": jobs_in_flight,
        "fused_pass": {"forwards_per_image": forwards_per_image(p), "gpu_images_per_s": round(gpu_ips, 2),
                       "cpu_bound_images_per_s": round(cpu_ips, 2), "images_per_s": round(pass_ips, 2),
                       "gpu_hours": round(p.images / pass_ips / 3600, 1),
                       "source": f"{gpu.label()} x {MEASURED_FORWARDS} / {forwards_per_image(p)} forwards"
                       if gpu.measured else
                       f"{gpu.label()}; CPU half: {cpu_cores_per_gpu} cores / {crf} CPU-s per image"},
        "maskcut_crf_cpu_hours": round(p.images * crf / 3600, 1),
        "clustering_cpu_hours": round(kmeans_s * 2 / 3600, 2),  # measured with 2 threads: CPU = 2 x wall
        "training_gpu_hours": round(p.max_iter * train.value * p.train_gpus / 3600, 1),
        "sources": {k: f.label() for k, f in figs.items()},
    }


def read_gpu_figures(path: Path) -> dict[str, str]:
    """``key: value`` lines of gpu_check.sh's figures file (a json object is read as is)."""
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return {k: str(v) for k, v in json.loads(text).items()}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def apply_gpu_figures(figs: dict[str, Figure], gpu: dict[str, str]) -> dict[str, Figure]:
    """Replace the projections by what gpu_check.sh measured (keys shard_pass.images_per_s and
    u2seg_coco_speed.result, the json of benchmarks/train.py at batch 2 per GPU)."""
    figs = dict(figs)
    where = f"measured by benchmarks/gpu_check.sh on {gpu.get('gpu', 'a GPU')} ({gpu.get('date', '')})"
    if gpu.get("shard_pass.images_per_s", "").replace(".", "", 1).isdigit():
        figs["gpu_pass_images_per_s"] = Figure(float(gpu["shard_pass.images_per_s"]), where, True)
    result = gpu.get("u2seg_coco_speed.result", "")
    if result.startswith("{"):
        s = json.loads(result).get("s_per_iter_median")
        if s:  # 2 images per GPU, 8 GPUs = batch 16; data loading and all-reduce not included
            figs["train_s_per_iter_8gpu_batch16"] = Figure(float(s), where + ", batch 2 per GPU", True)
    return figs


def markdown(rows: list[dict[str, Any]]) -> str:
    """The cost table of docs/benchmarks.md."""
    lines = ["| | " + " | ".join(f"{r['dataset']} ({r['preset']})" for r in rows) + " |",
             "| --- |" + " --- |" * len(rows)]

    def row(name: str, fn) -> None:
        lines.append(f"| {name} | " + " | ".join(fn(r) for r in rows) + " |")

    def kind(r: dict[str, Any], figure: str) -> str:
        """Whether a GPU figure is measured or the projection (every cell says which)."""
        return ", projection" if "projection" in r["sources"][figure] else ", measured on a GPU"

    row("images / shards", lambda r: f"{r['images']:,} / {r['shards']:,} of {r['shard_size']}")
    row("feature disk, kept", lambda r: f"{r['feature_disk']['kept_gb']:,.0f} GB")
    row("feature disk, not kept, this preset's stuff model",
        lambda r: f"{r['feature_disk']['not_kept_gb']:,.1f} GB ({r['stuff_model']})")
    row("feature disk at the preset's settings", lambda r: f"{r['feature_disk']['preset_gb']:,.1f} GB")
    row(f"shard features in memory, one fused pass / {rows[0]['jobs_in_flight']} in flight",
        lambda r: f"{r['feature_disk']['pass_memory_gb']:,.2f} / {r['feature_disk']['passes_memory_gb']:,.1f} GB")
    row("fused pass: ViT-B/8 forwards per image", lambda r: str(r["fused_pass"]["forwards_per_image"]))
    row("fused pass: images/s on one GPU (GPU bound / CPU-half bound)",
        lambda r: f"{r['fused_pass']['images_per_s']} ({r['fused_pass']['gpu_images_per_s']} / "
                  f"{r['fused_pass']['cpu_bound_images_per_s']}){kind(r, 'gpu_pass_images_per_s')}")
    row("fused pass: GPU-hours", lambda r: f"{r['fused_pass']['gpu_hours']}{kind(r, 'gpu_pass_images_per_s')}")
    row("MaskCut CRF: CPU-hours (measured per image on CPU)", lambda r: f"{r['maskcut_crf_cpu_hours']:,}")
    row("instance clustering: CPU-hours", lambda r: f"{r['clustering_cpu_hours']}")
    row("training (90,000 iterations, batch 16, 8 GPUs): GPU-hours",
        lambda r: f"{r['training_gpu_hours']}{kind(r, 'train_s_per_iter_8gpu_batch16')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-figures", type=Path, default=None, help="figures file of benchmarks/gpu_check.sh")
    ap.add_argument("--jobs-in-flight", type=int, default=8, help="shard passes running at once")
    ap.add_argument("--cpu-cores-per-gpu", type=int, default=16, help="cores for MaskCut's CPU half per GPU")
    ap.add_argument("--markdown", action="store_true", help="print the markdown table instead of json")
    ap.add_argument("--json", type=Path, default=None, help="write the json here too")
    args = ap.parse_args(argv)
    figs = default_figures()
    if args.gpu_figures is not None:
        figs = apply_gpu_figures(figs, read_gpu_figures(args.gpu_figures))
    rows = [cost(p, figs, args.jobs_in_flight, args.cpu_cores_per_gpu) for p in PRESETS]
    text = json.dumps(rows, indent=1)
    print(markdown(rows) if args.markdown else text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

