"""k-means vs trained STEGO stuff maps on the same efficientnet_lite2 shards (docs/benchmarks.md).

    python benchmarks/stego.py --out /tmp/stego_bench [--steps 1500]

coco-mini val (80 images, things-only GT) and the 2-image COCO panoptic sample (things + stuff GT):
features (efficientnet_lite2, 480 px), then both stuff models fitted on coco-mini val (k-means:
``u2seg cluster-stuff``; STEGO: ``u2seg stego knn`` + ``stego train``) and applied to both sets.
The stuff maps (0..26) are shifted to 1..27 and scored with ``u2seg evaluate --semantic-dir``
(stego27 Hungarian PixelAcc / mIoU). Writes ``results.json`` and ``gallery.png`` (image | k-means |
STEGO) under --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def u2seg(*args: str) -> float:
    """Run ``python -m u2seg ...``; wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "u2seg", *map(str, args)], check=True)
    return time.perf_counter() - t0


def prepare(root: Path, out: Path, shard_size: int) -> tuple[Path, int]:
    """Manifest + efficientnet_lite2 feature shards of a COCO val root; (manifest, shard count)."""
    manifest = out / "manifest.json"
    pan_json = root / "annotations" / "panoptic_val2017.json"
    if not manifest.is_file() and not (root / "annotations" / "instances_val2017.json").is_file():
        # the panoptic sample: a manifest over its panoptic GT (no instance json; semantic GT = panoptic)
        pan = json.loads(pan_json.read_text())
        images = sorted(({k: im[k] for k in ("id", "file_name", "width", "height")} for im in pan["images"]),
                        key=lambda im: im["id"])
        inst = out / "instances_empty.json"
        out.mkdir(parents=True, exist_ok=True)
        inst.write_text(json.dumps({"images": images, "annotations": [], "categories": [
            {k: c[k] for k in ("id", "name", "supercategory")} for c in pan["categories"] if c["isthing"]]}))
        manifest.write_text(json.dumps({
            "dataset": {"kind": "coco", "split": "val"}, "root": str((root / "val2017").resolve()), "images": images,
            "annotations": str(inst.resolve()),
            "panoptic": {"json": str(pan_json.resolve()), "png_dir": str((root / "annotations" / "panoptic_val2017").resolve())}}))
    if not manifest.is_file():
        u2seg("ingest", "--kind", "coco", "--root", root, "--split", "val", "--manifest", manifest,
              "--skipped", out / "skipped.json")
    n = len(json.loads(manifest.read_text())["images"])
    shards = (n + shard_size - 1) // shard_size
    for s in range(shards):
        path = out / "features" / f"shard_{s:05d}.zarr"
        if not path.is_dir():
            u2seg("features", "--manifest", manifest, "--shard", s, "--shard-size", shard_size, "--backbone",
                  "efficientnet_lite2", "--input-size", 480, "--batch-size", 4, "--device", "cpu",
                  "--threads", 2, "--out", path)
    return manifest, shards


def apply_model(model_path: Path, manifest: Path, features: Path, shard_size: int, out: Path) -> None:
    """Stuff maps of a saved stuff model on every shard, written as 1..S semantic PNGs (0 = thing unused)."""
    from u2seg.pseudo.io import iter_dense, png_name, shard_iter
    from u2seg.pseudo.stuff.model import stuff_map
    from u2seg.pseudo.stuff.registry import load_stuff_model

    model = load_stuff_model(model_path)
    man = json.loads(manifest.read_text())
    out.mkdir(parents=True, exist_ok=True)
    for s, images in shard_iter(man, shard_size):
        for im, dense in zip(images, iter_dense(features / f"shard_{s:05d}.zarr")):
            labels = stuff_map(model, dense, im["height"], im["width"]).astype(np.uint8) + 1
            Image.fromarray(labels).save(out / png_name(im))


def evaluate(manifest: Path, semantic: Path, out: Path) -> dict:
    u2seg("evaluate", "--manifest", manifest, "--semantic-dir", semantic, "--num-stuff", 27,
          "--out-json", out / "metrics.json", "--out-md", out / "metrics.md")
    return json.loads((out / "metrics.json").read_text())


def palette(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 255, size=(256, 3), dtype=np.uint8)
    return colours[labels]


def gallery(manifest: Path, dirs: list[Path], out: Path, n: int = 3, height: int = 120) -> None:
    """Rows of (image | k-means | STEGO) for the first ``n`` images."""
    from u2seg.manifest import image_path
    from u2seg.pseudo.io import png_name

    man = json.loads(manifest.read_text())
    rows = []
    for im in man["images"][:: max(1, len(man["images"]) // n)][:n]:
        w = int(round(im["width"] * height / im["height"]))
        tiles = [np.asarray(Image.open(image_path(man, im)).convert("RGB").resize((w, height)))]
        for d in dirs:
            lab = np.asarray(Image.open(d / png_name(im)).resize((w, height), Image.NEAREST))
            tiles.append(palette(lab))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows)).quantize(colors=128).save(out, optimize=True)  # small palette PNG


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--coco-mini", type=Path, default=SHARED / "coco-mini")
    p.add_argument("--panoptic-sample", type=Path, default=SHARED / "coco-panoptic-sample")
    p.add_argument("--steps", type=int, default=1500, help="STEGO training steps (STEGO: 7000)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    out = args.out
    ss = 16
    res: dict = {"steps": args.steps, "batch_size": args.batch_size}
    mini, mini_shards = prepare(args.coco_mini, out / "mini", ss)
    pan, _ = prepare(args.panoptic_sample, out / "pan", ss)
    n_mini = len(json.loads(mini.read_text())["images"])
    common = ["--manifest", mini, "--shard-size", ss, "--features-dir", out / "mini" / "features"]
    km = out / "kmeans"
    res["kmeans_fit_s"] = u2seg("cluster-stuff", *common, "--k", 27, "--threads", 2, "--out-model",
                                km / "model.npz", "--out-maps", km / "maps", "--summary", km / "summary.json")
    st = out / "stego"
    res["stego_knn_s"] = u2seg("stego", "knn", *common, "--threads", 2, "--out", st / "knn.npz")
    res["stego_train_wall_s"] = u2seg("stego", "train", *common, "--knn-table", st / "knn.npz", "--k", 27,
                                      "--max-steps", args.steps, "--batch-size", args.batch_size,
                                      "--checkpoint-period", args.steps, "--log-period", 50, "--threads", 2,
                                      "--work-dir", st / "work", "--out-model", st / "model.npz",
                                      "--out-history", st / "history.json", "--out-curve", st / "loss.png")
    hist = json.loads((st / "history.json").read_text())
    res["stego_train"] = {k: hist[k] for k in ("seconds", "peak_rss_mb", "crops", "images")}
    res["stego_loss_first_last"] = [hist["history"][0], hist["history"][-1]]
    res["images_train"] = n_mini
    for name, manifest, feats in (("coco-mini-val", mini, out / "mini" / "features"),
                                  ("panoptic-sample", pan, out / "pan" / "features")):
        for model, path in (("kmeans", km / "model.npz"), ("stego", st / "model.npz")):
            sem = out / "eval" / name / model / "semantic"
            apply_model(path, manifest, feats, ss, sem)
            m = evaluate(manifest, sem, sem.parent)
            res.setdefault(name, {})[model] = m.get("semantic", m)
        gallery(manifest, [out / "eval" / name / "kmeans" / "semantic", out / "eval" / name / "stego" / "semantic"],
                out / f"gallery_{name}.png")
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
