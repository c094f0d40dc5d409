"""Scale benchmark: peak memory and time of every whole-dataset step at N images (synthetic inputs).

Builds, under ``--work``, synthetic per-shard outputs for N images (no real images, no features):
a manifest (as ingest writes it), MaskCut shard jsons (``--masks-per-image`` RLE masks of a
``--height`` x ``--width`` image each, realistic RLE lengths), per-shard embeddings (``--dim``),
stuff PNGs and per-shard panoptic merges (PNG entries are hard links to one small file: the
concatenation's work per image is the same, the disk cost is not), per-shard validation reports.
Then runs, each as its own process (peak RSS of that process from ``os.wait4``), the steps that see
every image:

  manifest_load        json.load of the manifest: the floor of every job that reads it (per-shard jobs too)
  merge_masks          u2seg merge-masks --shards-dir (streamed)
  cluster_instances    u2seg cluster-instances --out-shards (consolidate, --iterations Lloyd iterations of
                       dim --dim, assign, streamed instances.json + per-shard instance jsons); the k-means
                       fit itself at full dim is benchmarks/cluster.py
  merge_panoptic_shard one per-shard panoptic job (the first shard; real PNGs), for its per-job cost
  validate_shard       u2seg validate-panoptic on that shard
  concat_panoptic      u2seg concat-panoptic over every shard (streamed json, hard links)
  concat_validation    u2seg concat-validation over every shard
  dry_run_*            snakemake -n pseudo_labels from scratch, after ingest (manifest only) and before it
                       (shard count from the images folder listing) (optional: --dry-run)

Prints one json object (also written to ``--out``): per step seconds (wall), peak RSS MiB, and the
sizes of the big files. Rows of docs/benchmarks.md come from it.

  python benchmarks/scale.py --images 1000 --work /tmp/scale          # smoke
  python benchmarks/scale.py --images 118287 --shard-size 16 --work /tmp/scale --dry-run
  python benchmarks/scale.py --images 1281167 --shard-size 2000 --work /tmp/scale
  python benchmarks/scale.py --huge-image 9000 8000 --max-merge-pixels 4194304 --work /tmp/huge
  python benchmarks/scale.py --ingest-images 20000 --work /tmp/ingest
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from u2seg.pseudo.panoptic.merge import panoptic_categories

REPO = Path(__file__).resolve().parents[1]
K, S = 8, 27


# A small launcher between this process and each measured command: a child inherits the parent's
# peak RSS as the floor of its own ru_maxrss (Linux keeps the high-water mark across fork + exec), and
# this process is large after building the inputs; the launcher (python -S, ~10 MB) is not.
_LAUNCH = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write('%d %f %d' % (os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss))\n"
)


def run_measured(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, CPU seconds and peak RSS (MiB) of that process (and its waited-for children)."""
    usage = log.with_suffix(".usage")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-S", "-c", _LAUNCH, str(usage), *cmd], stdout=fh, stderr=subprocess.STDOUT,
                       check=True)
    seconds = time.perf_counter() - t0
    rc, cpu, maxrss = usage.read_text().split()
    if int(rc) != 0:
        raise SystemExit(f"{cmd[:4]} failed ({rc}); see {log}:\n{log.read_text()[-3000:]}")
    return {"seconds": round(seconds, 2), "cpu_seconds": round(float(cpu), 2), "peak_rss_mb": round(int(maxrss) / 1024, 1)}


def u2seg(*args: str) -> list[str]:
    return [sys.executable, "-m", "u2seg", *args]


def _templates(h: int, w: int, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` MaskCut-like annotations (blobby masks with ragged borders) of an h x w image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
        angle = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.15 * np.sin(7 * angle + rng.uniform(0, 6)) + 0.05 * rng.standard_normal((h, w))
        m = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < wobble
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({"segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return out


class Linker:
    """Hard links to copies of one file (a new copy every 20,000 links: ext4 allows 65,000 per inode, and concat-panoptic links each PNG again)."""

    def __init__(self, src: Path):
        self.src, self.copy, self.n = src, src, 0

    def __call__(self, dst: Path) -> None:
        if self.n and self.n % 20000 == 0:
            self.copy = self.src.with_name(f"{self.src.stem}_{self.n}{self.src.suffix}")
            shutil.copyfile(self.src, self.copy)
        os.link(self.copy, dst)
        self.n += 1


def build(work: Path, n: int, shard_size: int, masks_per_image: int, h: int, w: int, dim: int) -> dict[str, Any]:
    """Write the synthetic dataset and per-shard outputs; returns their sizes."""
    t0 = time.perf_counter()
    res = work / "results" / "images"
    img_root = work / "images"
    img_root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 150)).save(work / "template.jpg")
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": w, "height": h} for i in range(n)]
    manifest = {"dataset": {"kind": "images", "root": str(img_root)}, "root": str(img_root), "images": images,
                "annotations": None, "panoptic": None, "num_skipped": 0}
    res.mkdir(parents=True, exist_ok=True)
    (res / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (res / "skipped.json").write_text(json.dumps({"num_images": n, "skipped": []}))
    templates = _templates(h, w, 16, 0)
    n_shards = (n + shard_size - 1) // shard_size
    mc, emb_dir, stuff_dir = res / "maskcut", res / "pseudo" / "embed", res / "pseudo" / "stuff"
    pan_dir = res / "pseudo" / "panoptic_shards"
    for d in (mc, emb_dir, stuff_dir, pan_dir):
        d.mkdir(parents=True, exist_ok=True)
    stuff = np.zeros((h, w), dtype=np.uint8)
    stuff[h // 2:] = 1
    Image.fromarray(stuff).save(work / "stuff.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(work / "tiny.png")
    link_stuff, link_tiny = Linker(work / "stuff.png"), Linker(work / "tiny.png")
    rng = np.random.default_rng(0)
    categories = panoptic_categories(K, S)
    params = {"tau": 0.15, "n_masks": 3}
    for s in range(n_shards):
        shard_imgs = images[s * shard_size:(s + 1) * shard_size]
        anns = []
        for im in shard_imgs:
            for j in range(masks_per_image):
                t = templates[(im["id"] * 7 + j) % len(templates)]
                anns.append(dict(t, id=len(anns) + 1, image_id=im["id"], category_id=1, iscrowd=0, score=1.0))
        shard = {"info": {}, "images": shard_imgs, "annotations": anns,
                 "categories": [{"id": 1, "name": "fg", "supercategory": "fg"}],
                 "stats": {"params": params, "seconds": {"ncut": 1.0}, "seconds_total": 1.0, "eigen": {"solves": 3}}}
        (mc / f"shard_{s:05d}.json").write_text(json.dumps(shard, separators=(",", ":")))
        (mc / f"shard_{s:05d}_gallery").mkdir(exist_ok=True)
        np.savez(emb_dir / f"shard_{s:05d}.npz",
                 embeddings=rng.standard_normal((len(anns), dim)).astype(np.float32),
                 image_id=np.array([a["image_id"] for a in anns], np.int64),
                 ann_index=np.arange(len(anns), dtype=np.int64), meta=np.array(json.dumps({"method": "pooled"})))
        # synthetic per-shard panoptic merges (the first shard is recomputed for real by the benchmark)
        folder = pan_dir / f"shard_{s:05d}"
        for sub in ("panoptic", "semantic", "gallery"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        pan_anns = []
        for im in shard_imgs:
            name = f"{im['id']:012d}.png"
            link_stuff(stuff_dir / name)
            link_tiny(folder / "panoptic" / name)
            link_tiny(folder / "semantic" / name)
            segs = [{"id": 1 + k, "category_id": 1 + k, "iscrowd": 0, "area": 1000 + k,
                     "bbox": [0.0, 0.0, 10.0, 10.0]} for k in range(masks_per_image)]
            segs += [{"id": 10 + k, "category_id": K + 1 + k, "iscrowd": 0, "area": 5000,
                      "bbox": [0.0, 0.0, 640.0, 240.0]} for k in range(5)]
            pan_anns.append({"image_id": im["id"], "file_name": name, "segments_info": segs})
        stats = {"images": len(shard_imgs), "images_without_instances": 0,
                 "instances": masks_per_image * len(shard_imgs), "visible_instances": masks_per_image * len(shard_imgs),
                 "hidden_instances_dropped": 0, "stuff_segments": 5 * len(shard_imgs),
                 "stuff_segments_dropped_by_overlap": 0, "void_pixels": 0, "thing_pixels": 1000 * len(shard_imgs),
                 "total_pixels": h * w * len(shard_imgs), "instances_histogram": [0] * masks_per_image + [len(shard_imgs)],
                 "visible_instances_histogram": [0] * masks_per_image + [len(shard_imgs)],
                 "segment_ids": "shard", "gallery": [], "seconds": 1.0}
        (pan_dir / f"shard_{s:05d}.json").write_text(json.dumps(
            {"info": {"description": "u2seg panoptic pseudo-labels", "k": K, "num_stuff": S}, "images": shard_imgs,
             "annotations": pan_anns, "categories": categories, "stats": stats}, separators=(",", ":")))
        (pan_dir / f"shard_{s:05d}.validation.json").write_text(json.dumps(
            {"panoptic": {"images": len(shard_imgs), "annotations": len(shard_imgs), "segments": 8 * len(shard_imgs),
                          "categories": K + S, "errors": 0, "messages": []},
             "instances": {"images": len(shard_imgs), "annotations": len(anns), "categories": K, "errors": 0,
                           "messages": []}, "ok": True}))
    for name in ("cluster_summary.json", "stuff_summary.json"):
        (res / "pseudo" / name).write_text("{}")
    return {"shards": n_shards, "build_seconds": round(time.perf_counter() - t0, 1),
            "manifest_mb": round((res / "manifest.json").stat().st_size / 2**20, 1),
            "maskcut_shards_mb": round(sum(p.stat().st_size for p in mc.glob("shard_*.json")) / 2**20, 1)}


def measure(work: Path, n_shards: int, shard_size: int, dim: int, iterations: int, dry_run: bool) -> dict[str, Any]:
    res = work / "results" / "images"
    pseudo = res / "pseudo"
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    out: dict[str, Any] = {}
    man = str(res / "manifest.json")
    out["manifest_load"] = run_measured(
        [sys.executable, "-c", f"import json; json.load(open({man!r}))"], logs / "manifest.log")
    out["merge_masks"] = run_measured(u2seg(
        "merge-masks", "--shards-dir", str(res / "maskcut"), "--num-shards", str(n_shards),
        "--out", str(res / "maskcut" / "masks.json"), "--summary", str(res / "maskcut" / "summary.json"),
        "--gallery-out", str(res / "maskcut" / "gallery")), logs / "merge_masks.log")
    out["merge_masks"]["masks_json_mb"] = round((res / "maskcut" / "masks.json").stat().st_size / 2**20, 1)
    out["cluster_instances"] = run_measured(u2seg(
        "cluster-instances", "--manifest", man, "--shard-size", str(shard_size), "--embed-dir", str(pseudo / "embed"),
        "--masks-dir", str(res / "maskcut"), "--k", str(K), "--iterations", str(iterations), "--threads", "2",
        "--out-instances", str(pseudo / "instances.json"), "--out-centroids", str(pseudo / "centroids.npy"),
        "--summary", str(pseudo / "cluster_summary_run.json"), "--out-shards", str(pseudo / "instances_shards")),
        logs / "cluster_instances.log")
    out["cluster_instances"].update(dim=dim, iterations=iterations,
                                    instances_json_mb=round((pseudo / "instances.json").stat().st_size / 2**20, 1))
    shard0 = pseudo / "panoptic_shards" / "shard_00000"
    shutil.rmtree(shard0)
    out["merge_panoptic_shard"] = run_measured(u2seg(
        "merge-panoptic-shard", "--manifest", man, "--instances-dir", str(pseudo / "instances_shards"),
        "--shard", "0", "--shard-size", str(shard_size), "--stuff-dir", str(pseudo / "stuff"), "--k", str(K),
        "--num-stuff", str(S), "--gallery-size", "0", "--out-json", str(shard0) + ".json", "--out-dir", str(shard0)),
        logs / "merge_panoptic_shard.log")
    out["validate_shard"] = run_measured(u2seg(
        "validate-panoptic", "--panoptic-json", str(shard0) + ".json", "--panoptic-dir", str(shard0 / "panoptic"),
        "--semantic-dir", str(shard0 / "semantic"), "--instances", str(pseudo / "instances_shards" / "shard_00000.json"),
        "--num-things", str(K), "--report", str(shard0) + ".validation.json"), logs / "validate_shard.log")
    out["concat_panoptic"] = run_measured(u2seg(
        "concat-panoptic", "--shards-dir", str(pseudo / "panoptic_shards"), "--num-shards", str(n_shards),
        "--k", str(K), "--num-stuff", str(S), "--max-thing-overlap", "0.7",
        "--out-json", str(pseudo / "panoptic.json"), "--out-panoptic", str(pseudo / "panoptic"),
        "--out-semantic", str(pseudo / "semantic"), "--gallery", str(pseudo / "gallery"),
        "--summary", str(pseudo / "summary.json")), logs / "concat_panoptic.log")
    out["concat_panoptic"]["panoptic_json_mb"] = round((pseudo / "panoptic.json").stat().st_size / 2**20, 1)
    out["concat_validation"] = run_measured(u2seg(
        "concat-validation", "--reports-dir", str(pseudo / "panoptic_shards"), "--num-shards", str(n_shards),
        "--report", str(pseudo / "validation.json")), logs / "concat_validation.log")
    if dry_run:
        out.update(dry_runs(work, shard_size))
    return out


def _dry_run(work: Path, name: str, shard_size: int, results: Path) -> dict[str, Any]:
    cfg = work / f"{name}.yaml"
    cfg.write_text(json.dumps({"results": str(results), "dataset": "images", "images_dir": str(work / "images"),
                               "features": {"shard_size": shard_size}}))
    (work / name).mkdir(exist_ok=True)
    log = work / "logs" / f"{name}.log"
    row = run_measured([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                        str(work / name), "-n", "--cores", "2", "--quiet", "rules", "--configfile", str(cfg),
                        "--", "pseudo_labels"], log)
    row["jobs"] = {line.split()[0]: int(line.split()[1]) for line in log.read_text().splitlines()
                   if len(line.split()) == 2 and line.split()[1].isdigit()}
    return row


def dry_runs(work: Path, shard_size: int) -> dict[str, Any]:
    """``snakemake -n pseudo_labels`` from scratch: after ingest (a results folder holding only the
    manifest) and before it (no manifest: the shard count comes from listing the images folder, whose
    N entries are hard links to one JPEG)."""
    fresh = work / "fresh_results" / "images"
    fresh.mkdir(parents=True)
    for name in ("manifest.json", "skipped.json"):
        os.link(work / "results" / "images" / name, fresh / name)
    out = {"dry_run_after_ingest": _dry_run(work, "dry_after", shard_size, work / "fresh_results")}
    images = json.loads((fresh / "manifest.json").read_text())["images"]
    link_jpeg = Linker(work / "template.jpg")
    for im in images:
        link_jpeg(work / "images" / im["file_name"])
    del images
    out["dry_run_before_ingest"] = _dry_run(work, "dry_before", shard_size, work / "empty_results")
    return out


def huge_image(work: Path, h: int, w: int, max_pixels: int) -> dict[str, Any]:
    """Peak RSS and time of the per-shard panoptic merge + validation of one h x w image (3 masks)."""
    res = work / "huge"
    (res / "inst").mkdir(parents=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 60, 40)
    Image.fromarray(img).save(work / "huge.jpg", quality=90)
    stuff = np.zeros((h, w), np.uint8)
    stuff[h // 2:] = 1
    (res / "stuff").mkdir()
    Image.fromarray(stuff).save(res / "stuff" / "huge.png")
    del img, stuff
    im = {"id": 1, "file_name": "huge.jpg", "width": w, "height": h}
    (res / "manifest.json").write_text(json.dumps({"root": str(work), "images": [im], "annotations": None}))
    anns = [dict(t, id=i + 1, image_id=1, category_id=1 + i, iscrowd=0) for i, t in enumerate(_templates(h, w, 3, 1))]
    (res / "inst" / "shard_00000.json").write_text(json.dumps(
        {"info": {}, "images": [im], "annotations": anns, "categories": panoptic_categories(K, 0)}))
    (res / "inst" / "index.json").write_text(json.dumps({"k": K, "shard_size": 1, "shards": [{"images": 1, "annotations": 3}]}))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    out = {"image": [h, w], "max_merge_pixels": max_pixels}
    out["merge_panoptic_shard"] = run_measured(u2seg(
        "merge-panoptic-shard", "--manifest", str(res / "manifest.json"), "--instances-dir", str(res / "inst"),
        "--shard", "0", "--shard-size", "1", "--stuff-dir", str(res / "stuff"), "--k", str(K), "--num-stuff", "2",
        "--gallery-size", "1", "--max-merge-pixels", str(max_pixels), "--out-json", str(res / "p.json"),
        "--out-dir", str(res / "p")), logs / "huge_merge.log")
    out["validate_shard"] = run_measured(u2seg(
        "validate-panoptic", "--panoptic-json", str(res / "p.json"), "--panoptic-dir", str(res / "p" / "panoptic"),
        "--semantic-dir", str(res / "p" / "semantic"), "--instances", str(res / "inst" / "shard_00000.json"),
        "--num-things", str(K)), logs / "huge_validate.log")
    return out


def ingest(work: Path, n: int) -> dict[str, Any]:
    """Peak RSS and time of ``u2seg ingest --kind images`` over n hard links to one small JPEG."""
    root = work / "ingest_images"
    for d in range(0, n, 1000):  # folders of 1,000, as ImageNet's class folders
        (root / f"d{d // 1000:04d}").mkdir(parents=True)
    Image.new("RGB", (64, 48), (90, 120, 150)).save(work / "small.jpg")
    link = Linker(work / "small.jpg")
    for i in range(n):
        link(root / f"d{i // 1000:04d}" / f"{i:08d}.jpg")
    (work / "logs").mkdir(exist_ok=True)
    row = run_measured(u2seg("ingest", "--kind", "images", "--root", str(root), "--workers", "2",
                             "--manifest", str(work / "manifest.json"), "--skipped", str(work / "skipped.json")),
                       work / "logs" / "ingest.log")
    return {"images": n, "ingest": row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--masks-per-image", type=int, default=3)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--dim", type=int, default=16, help="embedding dim of the synthetic embeddings")
    ap.add_argument("--iterations", type=int, default=2, help="k-means iterations of cluster_instances")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (emptied first)")
    ap.add_argument("--dry-run", action="store_true", help="also time `snakemake -n pseudo_labels`")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--out", type=Path, default=None, help="write the result json here too")
    ap.add_argument("--huge-image", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="instead: the per-shard panoptic merge + validation of one H x W image")
    ap.add_argument("--max-merge-pixels", type=int, default=0, help="with --huge-image (0 = full resolution)")
    ap.add_argument("--ingest-images", type=int, default=None,
                    help="instead: u2seg ingest over this many hard links to one small JPEG")
    args = ap.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    if args.huge_image or args.ingest_images:
        try:
            result = (huge_image(args.work, *args.huge_image, args.max_merge_pixels) if args.huge_image
                      else ingest(args.work, args.ingest_images))
        finally:
            if not args.keep:
                shutil.rmtree(args.work, ignore_errors=True)
        print(json.dumps(result, indent=1))
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
    try:
        built = build(args.work, args.images, args.shard_size, args.masks_per_image, args.height, args.width,
                      args.dim)
        steps = measure(args.work, built["shards"], args.shard_size, args.dim, args.iterations, args.dry_run)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    result = {"images": args.images, "shard_size": args.shard_size, "masks_per_image": args.masks_per_image,
              "image_size": [args.height, args.width], **built, "steps": steps}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
