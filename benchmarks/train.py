"""Detector training throughput: seconds per iteration of the Panoptic Cascade Mask R-CNN.

One iteration = what `u2seg train` does per step after data loading: forward (RPN, 3 cascade stages,
mask head, semantic head) under autocast on CUDA, backward, gradient clipping, SGD step. Inputs are
seeded synthetic images of a fixed size with rectangle instances, so only the model is measured.

Presets:
  demo   the `model:` section of config.yaml (the samples demo: efficientnet_lite2, FPN 128, 500 RPN
         proposals, 64 RoIs / image); run it at the demo's input size (short side 192-224, long <= 320)
  paper  docs/method.md §7.1 (ResNet-50 FPN 256, 4000 RPN proposals, 512 RoIs / image; random init)
  u2seg-coco  the `model:` section of configs/u2seg-coco.yaml (as paper, with BN in backbone and FPN;
         random init instead of the DINO file; K = clustering.k of the preset unless --k is given)

  python benchmarks/train.py                                  # demo preset, 2 x 224x320, CPU
  python benchmarks/train.py --preset paper --height 800 --width 1216 --batch-size 2 --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

# as rules/train.smk runs training: OpenMP threads sleep while waiting (set before torch loads OpenMP)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from u2seg.detector.data import Sample, to_model_inputs  # noqa: E402
from u2seg.detector.model import ModelConfig, build_model  # noqa: E402
from u2seg.detector.train import TrainConfig, build_optimizer, resolve_device, train_step  # noqa: E402

PAPER = dict(backbone="resnet50", fpn_channels=256, rpn_post_nms_topk_train=4000, roi_batch_per_image=512)


def demo_preset() -> dict:
    """The model settings of config.yaml (one source of truth with the samples demo)."""
    import dataclasses
    from pathlib import Path

    import yaml

    section = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())["model"]
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return {k: v for k, v in section.items() if k in names and k != "backbone_weights"}


def preset_file(name: str) -> tuple[dict, int]:
    """(model settings, K) of a preset in configs/ (backbone weights left out: random init)."""
    import dataclasses
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml").read_text())
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    model = {k: v for k, v in cfg["model"].items() if k in names and k != "backbone_weights"}
    return model, int(cfg["clustering"]["k"])


def synthetic_batch(n: int, h: int, w: int, k: int, stuff: int, instances: int, seed: int) -> list[Sample]:
    """Seeded random images with ``instances`` rectangles each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        masks = np.zeros((instances, h, w), dtype=bool)
        for m in masks:
            bh, bw = int(rng.integers(h // 8, h // 2)), int(rng.integers(w // 8, w // 2))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            m[y:y + bh, x:x + bw] = True
        sem = rng.integers(1, stuff + 1, (h, w)).astype(np.uint8)
        sem[masks.any(0)] = 0
        out.append(Sample(img, masks, rng.integers(0, k, instances), sem, i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["demo", "paper", "u2seg-coco"], default="demo")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--instances", type=int, default=5, help="pseudo-instances per image")
    parser.add_argument("--k", type=int, default=None, help="thing classes (default 8; u2seg-coco: its K)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    k = 8
    if args.preset == "u2seg-coco":
        preset, k = preset_file("u2seg-coco")
    else:
        preset = demo_preset() if args.preset == "demo" else PAPER
    args.k = args.k or k
    mcfg = ModelConfig(num_classes=args.k, num_stuff=27, backbone_weights=None, **preset)
    model = build_model(mcfg).to(device).train()
    tcfg = TrainConfig(base_lr=0.001, device=str(device.type))
    optimizer = build_optimizer(model, tcfg)
    use_amp = device.type == "cuda" and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    samples = synthetic_batch(args.batch_size, args.height, args.width, args.k, 27, args.instances, 0)
    images, targets = to_model_inputs(samples, device)
    times, cpu_times = [], []
    for i in range(args.warmup + args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        train_step(model, model, optimizer, scaler, images, targets, tcfg, use_amp, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    result = {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "amp": use_amp,
        "input": f"{args.batch_size} x {args.height}x{args.width}", "instances_per_image": args.instances,
        "k": args.k,
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "s_per_iter_median": round(statistics.median(times), 3), "s_per_iter_min": round(min(times), 3),
        "images_per_s": round(args.batch_size / statistics.median(times), 2),
        # CPU seconds of this process per iteration (robust to other load on a shared machine)
        "cpu_s_per_iter_median": round(statistics.median(cpu_times), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if device.type == "cuda":
        result["peak_gpu_mem_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
