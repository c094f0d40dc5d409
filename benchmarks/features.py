"""Feature extraction throughput: the full shard job vs the bare backbone forward.

Measures, on the same images:
  forward      backbone forward on already-preprocessed tensors
  +preprocess  decode-free LANCZOS resize + normalisation + forward
  full         what `u2seg features` does: image decoding, preprocessing, forward, zarr v3 write
and prints images/s and the overhead of I/O + zarr writing (full vs +preprocess).

  python benchmarks/features.py --dataset coco --root ../shared/data/coco-mini --split val --limit 32
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from u2seg import atomic
from u2seg.backbones import build_backbone
from u2seg.cli import main as cli_main
from u2seg.images import load_rgb
from u2seg.ingest import build_manifest
from u2seg.manifest import image_path


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="samples", choices=["samples", "coco", "images"])
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--backbone", default="efficientnet_lite2")
    ap.add_argument("--input-size", type=int, default=480)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest, _ = build_manifest(args.dataset, args.root or tmp, split=args.split, limit=args.limit,
                                     samples_dir=tmp / "samples")
        manifest["images"] = manifest["images"][: args.limit]
        atomic.write_json(tmp / "manifest.json", manifest)
        n = len(manifest["images"])
        backbone = build_backbone(args.backbone, device="cpu")
        rgb = [load_rgb(image_path(manifest, im)) for im in manifest["images"]]
        batches = [backbone.preprocess(rgb[i:i + args.batch_size], args.input_size)
                   for i in range(0, n, args.batch_size)]

        @torch.inference_mode()
        def forward():
            for x in batches:
                backbone(x)

        @torch.inference_mode()
        def preprocess_forward():
            for i in range(0, n, args.batch_size):
                backbone(backbone.preprocess(rgb[i:i + args.batch_size], args.input_size))

        def full():
            cli_main(["features", "--manifest", str(tmp / "manifest.json"), "--shard", "0", "--shard-size", str(n),
                      "--backbone", args.backbone, "--input-size", str(args.input_size),
                      "--batch-size", str(args.batch_size), "--device", "cpu", "--threads", str(args.threads),
                      "--out", str(tmp / "shard.zarr")])

        forward()  # warm-up
        t_fwd = _best(forward, args.repeats)
        t_pre = _best(preprocess_forward, args.repeats)
        t_full = _best(full, args.repeats)

    print(f"{n} images, backbone {args.backbone}, input {args.input_size}px, batch {args.batch_size}, "
          f"{args.threads} CPU threads (best of {args.repeats})")
    print(f"{'path':<14}{'seconds':>9}{'images/s':>10}")
    for name, t in [("forward", t_fwd), ("+preprocess", t_pre), ("full (CLI)", t_full)]:
        print(f"{name:<14}{t:>9.2f}{n / t:>10.2f}")
    print(f"overhead of decoding + zarr writing (full vs +preprocess): {100 * (t_full - t_pre) / t_full:.1f} %")
    print(f"overhead of everything but the forward (full vs forward): {100 * (t_full - t_fwd) / t_full:.1f} %")


if __name__ == "__main__":
    main()
