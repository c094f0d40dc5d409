"""Benchmark: PQ computation time on synthetic 640x480 panoptic (GT, prediction) pairs.

    .venv/bin/python benchmarks/evaluate.py                 # 5,000 pairs, 2 worker processes
    .venv/bin/python benchmarks/evaluate.py --n 500 --workers 1

Pairs are written as COCO panoptic PNGs into a temporary folder first (not timed); the timed part
is ``u2seg.evaluation.panoptic.pq_compute``: reading both PNGs, matching and accumulating PQ
statistics, exactly as ``u2seg evaluate`` does. Each GT holds ~4 stuff regions and ~16 things
(133 COCO-like categories, some crowd); the prediction is the GT shifted by a few pixels with some
segments relabelled or dropped. Prints a JSON line: wall-clock ``pq_s`` (depends on other load on
the machine, see ``load_avg_1min``) and the CPU time per pair of a single-process re-run of
``--cpu-sample`` pairs, with ``cpu_bound_s`` = n x CPU time / workers (the time on idle cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from u2seg.coco_format import id2rgb
from u2seg.evaluation.gt import Category
from u2seg.evaluation.panoptic import mp_context, pq_compute

H, W = 480, 640
N_THING, N_STUFF = 80, 53


def categories() -> list[Category]:
    """80 thing + 53 stuff categories (ids 1..133)."""
    return ([Category(i, f"thing{i}", True, "t") for i in range(1, N_THING + 1)]
            + [Category(N_THING + i, f"stuff{i}", False, "s") for i in range(1, N_STUFF + 1)])


def make_pair(seed: int) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """One synthetic (GT ids, GT segments, predicted ids, predicted segments)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((H, W), np.int64)
    segs: list[dict] = []
    next_id = 1
    cuts = np.sort(rng.choice(np.arange(40, H - 40), 3, replace=False))
    bands = np.split(np.arange(H), cuts)
    for rows in bands:  # stuff: horizontal bands
        gt[rows[0]:rows[-1] + 1] = next_id
        segs.append({"id": next_id, "category_id": int(N_THING + rng.integers(1, N_STUFF + 1)), "iscrowd": 0})
        next_id += 1
    for _ in range(16):  # things: random rectangles, later ones on top
        h, w = rng.integers(10, 160), rng.integers(10, 200)
        y, x = rng.integers(0, H - h), rng.integers(0, W - w)
        gt[y:y + h, x:x + w] = next_id
        segs.append({"id": next_id, "category_id": int(rng.integers(1, N_THING + 1)),
                     "iscrowd": int(rng.random() < 0.05)})
        next_id += 1
    gt[rng.integers(0, H - 30):, :][:20] = 0  # a VOID strip
    present = set(np.unique(gt).tolist())
    segs = [s for s in segs if s["id"] in present]
    area = np.bincount(gt.ravel(), minlength=next_id)
    for s in segs:
        s["area"] = int(area[s["id"]])
    # prediction: shifted GT, some segments relabelled / merged / dropped
    pred = np.roll(gt, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    psegs = []
    for s in segs:
        r = rng.random()
        if r < 0.1:
            pred[pred == s["id"]] = 0
            continue
        cat = s["category_id"]
        if r < 0.2:
            cat = int(rng.integers(1, N_THING + 1)) if cat <= N_THING else int(N_THING + rng.integers(1, N_STUFF + 1))
        psegs.append({"id": s["id"], "category_id": cat, "iscrowd": 0})
    present = set(np.unique(pred).tolist())
    psegs = [s for s in psegs if s["id"] in present]
    return gt, segs, pred, psegs


def _write(args: tuple[int, str]) -> tuple[int, list[dict], list[dict]]:
    seed, folder = args
    gt, segs, pred, psegs = make_pair(seed)
    Image.fromarray(id2rgb(gt)).save(os.path.join(folder, f"gt_{seed}.png"), compress_level=1)
    Image.fromarray(id2rgb(pred)).save(os.path.join(folder, f"pred_{seed}.png"), compress_level=1)
    return seed, segs, psegs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="number of synthetic pairs")
    parser.add_argument("--workers", type=int, default=2, help="PQ worker processes")
    parser.add_argument("--cpu-sample", type=int, default=200, help="pairs re-timed in one process (CPU time)")
    parser.add_argument("--dir", type=Path, help="folder for the PNGs (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max(1, args.workers), mp_context=mp_context()) as pool:
            made = list(pool.map(_write, [(i, folder) for i in range(args.n)], chunksize=32))
        t_gen = time.perf_counter() - t0
        gt_sources = {i: ("png", os.path.join(folder, f"gt_{i}.png"), segs) for i, segs, _ in made}
        preds = {i: (os.path.join(folder, f"pred_{i}.png"), psegs) for i, _, psegs in made}
        t0 = time.perf_counter()
        res = pq_compute(gt_sources, preds, categories(), workers=args.workers)
        t_pq = time.perf_counter() - t0
        # CPU time per pair in this process (independent of other load on the machine)
        sample = list(gt_sources)[: max(1, min(args.cpu_sample, args.n))]
        c0 = time.process_time()
        pq_compute({i: gt_sources[i] for i in sample}, {i: preds[i] for i in sample}, categories(), workers=1)
        cpu_ms = 1000 * (time.process_time() - c0) / len(sample)
    out = {"pairs": args.n, "size": [H, W], "workers": args.workers, "generate_s": round(t_gen, 2),
           "pq_s": round(t_pq, 2), "pairs_per_s": round(args.n / t_pq, 1),
           "pq": round(res["all"]["pq"], 3), "cpu_ms_per_pair": round(cpu_ms, 2),
           "cpu_bound_s": round(args.n * cpu_ms / 1000 / max(1, args.workers), 1),
           "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
