"""Overlapping CPU and accelerator work: ``u2seg maskcut`` wall time per image with --cpu-workers 0 vs N.

Steps (every stage through the ``u2seg`` CLI, each run in its own process, as the workflow does):
  1. ingest the first --images images of a COCO split (default: ../shared/data/coco-mini val2017; the 8
     bundled sample photos where that folder is missing);
  2. one feature shard of them (--backbone, --input-size; features on --device);
  3. ``u2seg maskcut`` on that shard, for each --workers value, --repeats times (values alternating so
     that load drift hits each alike). Threads as the maskcut rule gives them: --threads torch threads with
     0 workers, 1 torch thread + N worker processes otherwise.
Printed as one JSON line per run and a summary: the shard's in-process seconds (``stats.seconds_total``:
shard open to json written, worker start-up included), the process wall (Python start and imports
included) and the main process's time blocked on the CPU half (the accelerator's idle time) per image, the CPU seconds of the run and its workers per image, and whether every run wrote the
same masks json (stats aside) as the first.

  python benchmarks/overlap.py                                   # CPU, 16 coco-mini images, 0 vs 2 workers
  python benchmarks/overlap.py --device cuda --images 64 --batch-size 16 --workers 0 4 8   # one GPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _u2seg(*args: str) -> tuple[float, float]:
    """Run ``python -m u2seg ARGS``; (wall s, CPU s of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "u2seg", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"u2seg {args[0]} failed:\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data/coco-mini"), help="COCO root")
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--images", type=int, default=16, help="images (one shard)")
    ap.add_argument("--backbone", default="efficientnet_lite2")
    ap.add_argument("--input-size", type=int, default=480)
    ap.add_argument("--batch-size", type=int, default=4, help="MaskCut images per batched eigen solve")
    ap.add_argument("--device", default="cpu", help="features and MaskCut device (cpu / cuda)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads with 0 workers (the job's cores)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="--cpu-workers values compared")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="u2seg-overlap-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest, shard = work / "manifest.json", work / "shard.zarr"
    if not manifest.exists():
        if (args.root / "annotations").is_dir():
            source = ("--kind", "coco", "--root", str(args.root), "--split", args.split, "--limit", str(args.images))
        else:  # no shared data here (a bare GPU machine): the 8 bundled sample photos
            print(json.dumps({"note": f"{args.root} not found: using the 8 sample photos"}), flush=True)
            source = ("--kind", "samples", "--samples-dir", str(work / "samples"))
        _u2seg("ingest", *source, "--manifest", str(manifest), "--skipped", str(work / "skipped.json"))
    n = len(json.loads(manifest.read_text())["images"])
    if not shard.exists():
        wall, _ = _u2seg("features", "--manifest", str(manifest), "--shard", "0", "--shard-size", str(n),
                         "--backbone", args.backbone, "--input-size", str(args.input_size), "--device", args.device,
                         "--threads", str(args.threads), "--out", str(shard))
        print(json.dumps({"step": "features", "images": n, "wall_s": round(wall, 2)}), flush=True)

    runs: dict[int, list[dict]] = {w: [] for w in args.workers}
    reference = None
    same = True
    for rep in range(args.repeats):
        for w in args.workers:
            out = work / f"masks_w{w}_r{rep}.json"
            torch_threads = args.threads if w == 0 else 1
            wall, cpu = _u2seg("maskcut", "--manifest", str(manifest), "--features", str(shard), "--out", str(out),
                               "--gallery", str(work / f"gallery_w{w}_r{rep}"), "--gallery-size", "0",
                               "--batch-size", str(args.batch_size), "--device", args.device,
                               "--threads", str(torch_threads), "--cpu-workers", str(w))
            data = json.loads(out.read_text())
            stats = data.pop("stats")
            text = json.dumps(data)
            reference = reference or text
            same = same and text == reference
            row = {"workers": w, "repeat": rep, "torch_threads": torch_threads, "images": n,
                   "masks": len(data["annotations"]),
                   "shard_s_per_image": round(stats["seconds_total"] / n, 3),
                   "process_wall_s_per_image": round(wall / n, 3), "cpu_s_per_image": round(cpu / n, 3),
                   "main_waiting_for_cpu_s_per_image": round(stats["seconds_waiting_for_cpu"] / n, 3),
                   "steps_s": stats["seconds"]}
            runs[w].append(row)
            print(json.dumps(row), flush=True)
    summary = {
        "device": args.device, "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "backbone": args.backbone, "input_size": args.input_size, "images": n, "batch_size": args.batch_size,
        "same_masks_json": same,
        "median_shard_s_per_image": {w: statistics.median(r["shard_s_per_image"] for r in rs) for w, rs in runs.items()},
        "median_process_wall_s_per_image": {w: statistics.median(r["process_wall_s_per_image"] for r in rs)
                                            for w, rs in runs.items()},
        "median_cpu_s_per_image": {w: statistics.median(r["cpu_s_per_image"] for r in rs) for w, rs in runs.items()},
        "median_main_waiting_for_cpu_s_per_image": {w: statistics.median(r["main_waiting_for_cpu_s_per_image"]
                                                                         for r in rs) for w, rs in runs.items()},
    }
    print(json.dumps({"summary": summary}), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
