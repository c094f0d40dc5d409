"""Fused per-shard pass vs the separate jobs: CPU seconds and wall time per image on the same images.

For each shard size, every shard of the first ``--images`` images of a COCO split is processed twice,
each step a fresh process as the rules run them:
  separate  `u2seg features` -> `u2seg maskcut` -> `u2seg embed` (three processes per shard, zarr written
            and read back)
  fused     `u2seg shard-pass` (one process per shard; ``--no-keep-features``: the features stay in memory)
with the demo config's stage settings (config.yaml: efficientnet_lite2 at 480 px, MaskCut with the CRF,
pooled embeddings) and ``--threads``. CPU seconds = user + system time of the child processes
(``os.wait4`` of each process, which also gives its peak RSS). The modes alternate per shard so that load drift hits both
alike; the outputs of both modes are compared (benchmarks/outputs_digest.py) and must be equal.

    python benchmarks/shard_pass.py --coco-root ../shared/data/coco-mini --images 64 --shard-sizes 16 64

``--stego-checkpoint``: the paper preset's stuff branch instead (stuff.model stego_checkpoint): a seeded random
ViT-S/8 in the official DINO and STEGO checkpoint layouts (the same ViT in both, as with the official
dino_vitb8 weights and cocostuff27_vit_base_5.ckpt), backbone dino_vits8; separate adds `u2seg stego infer`
(a second ViT forward per image), fused makes the maps from the feature forward's tokens.

    python benchmarks/shard_pass.py --coco-root ../shared/data/coco-mini --images 16 --shard-sizes 16 \
        --stego-checkpoint --input-size 240

``--paper-shape``: the u2seg-imagenet preset's pass shape instead of the demo's: a seeded random ViT-B/8 in the
DINO layout as dino_vitb8 (the speed does not depend on the weights' values), crop_cls embeddings at 480 px,
the preset's batch sizes (features 32, MaskCut 16, crops 64); with ``--device cuda --cpu-workers N
--modes fused`` it is benchmarks/gpu_check.sh's figure of the fused pass on one GPU (images/s).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
U2SEG = [sys.executable, "-m", "u2seg"]


def _run(cmd: list[str]) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, peak RSS in MiB) of one command (a fresh process, reaped with wait4)."""
    import os

    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err.read()[-3000:]}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024


def stego_demo_weights(folder: Path) -> tuple[Path, Path]:
    """(DINO ViT-S/8 weights file, STEGO checkpoint) holding the same seeded random ViT."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6, num_classes=0)
    weights, ckpt = folder / "dino_deitsmall8_pretrain.pth", folder / "stego_vits8.ckpt"
    torch.save(vit.state_dict(), weights)
    sd = {f"net.model.{k}": v for k, v in vit.state_dict().items()}
    dim, k = 70, 27
    sd.update({"net.cluster1.0.weight": torch.randn(dim, 384, 1, 1), "net.cluster1.0.bias": torch.randn(dim),
               "net.cluster2.0.weight": torch.randn(384, 384, 1, 1), "net.cluster2.0.bias": torch.randn(384),
               "net.cluster2.2.weight": torch.randn(dim, 384, 1, 1), "net.cluster2.2.bias": torch.randn(dim),
               "cluster_probe.clusters": torch.randn(k, dim)})
    torch.save({"global_step": 0, "state_dict": sd}, ckpt)
    return weights, ckpt


def vitb8_weights(folder: Path) -> Path:
    """A seeded random ViT-B/8 in the official DINO layout (dino_vitbase8_pretrain.pth's keys)."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=224, patch_size=8, embed_dim=768, depth=12, num_heads=12, num_classes=0)
    path = folder / "dino_vitbase8_pretrain.pth"
    torch.save(vit.state_dict(), path)
    return path


def segments(res: Path, manifest: Path, shard: int, size: int, threads: int, input_size: int = 480,
             stego: tuple[Path, Path] | None = None, device: str = "cpu", paper: Path | None = None,
             cpu_workers: int = 0) -> dict[str, list[str]]:
    """The demo config's flags of each stage for one shard (as rules/*.smk pass them); with ``stego``
    (weights, checkpoint): dino_vits8 features and a `stego infer` segment; with ``paper`` (ViT-B/8
    weights): the u2seg-imagenet preset's backbone, embeddings and batch sizes."""
    zarr = str(res / "features" / f"shard_{shard:05d}.zarr")
    masks = str(res / "maskcut" / f"shard_{shard:05d}.json")
    common = ["--manifest", str(manifest)]
    sh = ["--shard", str(shard), "--shard-size", str(size)]
    t = ["--threads", str(threads)]
    backbone = ["--backbone", "dino_vits8", f"--weights={stego[0]}"] if stego else \
        ["--backbone", "dino_vitb8", f"--weights={paper}"] if paper else \
        ["--backbone", "efficientnet_lite2", "--weights="]
    dev = ["--device", device]
    batches = ("32", "16", "64") if paper else ("4", None, None)
    embed = ["--method", "crop_cls", *backbone, "--crop-size", str(input_size), "--batch-size", batches[2]] \
        if paper else ["--method", "pooled"]
    out = {
        "features": [*common, *sh, *backbone, "--input-size", str(input_size),
                     "--batch-size", batches[0], *dev, *t, "--out", zarr],
        "maskcut": [*common, "--features", zarr, "--out", masks,
                    "--gallery", str(res / "maskcut" / f"shard_{shard:05d}_gallery"), *dev, *t,
                    *(["--batch-size", batches[1]] if paper else []),
                    *(["--cpu-workers", str(cpu_workers)] if cpu_workers else [])],
        "embed": [*common, *sh, "--masks", masks, "--features", zarr, *embed, *dev, *t,
                  "--out", str(res / "pseudo" / "embed" / f"shard_{shard:05d}.npz")],
    }
    if stego:
        out["stego"] = ["infer", *common, *sh, "--features", zarr, "--checkpoint", str(stego[1]), "--input-size",
                        str(input_size), "--no-flip", *dev, *t,
                        "--out-maps", str(res / "pseudo" / "stego" / "maps" / f"shard_{shard:05d}")]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-root", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--shard-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=480, help="features.input_size")
    parser.add_argument("--stego-checkpoint", action="store_true",
                        help="stuff.model stego_checkpoint with a seeded random ViT-S/8 (see above)")
    parser.add_argument("--paper-shape", action="store_true",
                        help="the u2seg-imagenet preset's pass shape with a seeded random ViT-B/8 (see above)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="every stage's device")
    parser.add_argument("--cpu-workers", type=int, default=0, help="maskcut --cpu-workers")
    parser.add_argument("--modes", nargs="+", default=["separate", "fused"], choices=("separate", "fused"))
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="u2seg-shard-pass-bench-"))
    manifest = work / "manifest.json"
    _run([*U2SEG, "ingest", "--kind", "coco", "--root", str(args.coco_root), "--split", args.split,
          "--limit", str(args.images), "--manifest", str(manifest), "--skipped", str(work / "skipped.json")])
    n_images = len(json.loads(manifest.read_text())["images"])
    stego = stego_demo_weights(work) if args.stego_checkpoint else None
    paper = vitb8_weights(work) if args.paper_shape else None
    stages = ("features", "maskcut", "embed", "stego") if stego else ("features", "maskcut", "embed")
    spec = importlib.util.spec_from_file_location("outputs_digest", HERE / "outputs_digest.py")
    digest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digest)
    rows = []
    for size in args.shard_sizes:
        shards = (n_images + size - 1) // size
        totals = {m: [0.0, 0.0] for m in args.modes}
        peak = {m: 0.0 for m in args.modes}
        roots = {mode: work / f"{mode}-{size}" for mode in totals}
        for shard in range(shards):
            order = args.modes if shard % 2 == 0 else args.modes[::-1]
            for mode in order:
                segs = segments(roots[mode], manifest, shard, size, args.threads, args.input_size, stego,
                                args.device, paper, args.cpu_workers)
                if mode == "separate":
                    cmds = [[*U2SEG, name, *segs[name]] for name in stages]
                else:
                    cmds = [[*U2SEG, "shard-pass", "--no-keep-features",
                             *[t for name in stages for t in ("::", name, *segs[name])]]]
                for cmd in cmds:
                    cpu, wall, rss = _run(cmd)
                    totals[mode][0] += cpu
                    totals[mode][1] += wall
                    peak[mode] = max(peak[mode], rss)
        both = len(totals) == 2
        if both:
            a = {k: v for k, v in digest.digest(roots["separate"]).items() if ".zarr/" not in k}
            diff = digest.compare(a, digest.digest(roots["fused"]))
        else:
            diff = []
        row = {"shard_size": size, "images": n_images, "input_size": args.input_size, "device": args.device,
               "paper_shape": args.paper_shape, "cpu_workers": args.cpu_workers,
               "stuff": "stego_checkpoint" if stego else "kmeans", "shards": shards,
               "same_outputs": not diff if both else None,
               **{f"{m}_cpu_s_per_image": round(v[0] / n_images, 3) for m, v in totals.items()},
               **{f"{m}_wall_s_per_image": round(v[1] / n_images, 3) for m, v in totals.items()},
               **{f"{m}_images_per_s": round(n_images / v[1], 3) for m, v in totals.items()}}
        row.update({f"{m}_peak_rss_mib": round(v) for m, v in peak.items()})
        if both:
            row["cpu_ratio"] = round(totals["separate"][0] / totals["fused"][0], 3)
            row["wall_ratio"] = round(totals["separate"][1] / totals["fused"][1], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if diff:
            print("outputs differ:", diff[:10], file=sys.stderr)
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["same_outputs"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
