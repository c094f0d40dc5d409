"""Instance-clustering benchmark: streaming Lloyd k-means on synthetic embeddings.

What it measures (printed as json):
  generate   writing N x D seeded synthetic float32 embeddings (a mixture of K Gaussian blobs) to disk
             chunk by chunk (never N x D in memory): a .npy file as `u2seg cluster-instances` does
             (--storage npy, default) or an uncompressed zarr array (--storage zarr, for comparison)
  fit        `u2seg.pseudo.kmeans.kmeans` streaming that file (init pass + Lloyd iterations with
             Hamerly bounds unless --plain); per-iteration times and rows recomputed per iteration
  assign     the final nearest-centroid pass that `u2seg cluster-instances` runs for the labels
  CPU time   process CPU seconds of fit and assign (on a shared machine, wall time also counts waiting)
  peak RSS   resource.getrusage(RUSAGE_SELF).ru_maxrss after each phase (whole process; page cache
             of the zarr file is not resident memory of the process)

  python benchmarks/cluster.py                      # 1,000,000 x 768, K = 800, 100 iterations
  python benchmarks/cluster.py --iterations 5       # per-iteration time + extrapolation
  python benchmarks/cluster.py --rows 20000 --dim 64 --k 50   # quick smoke run
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from u2seg.pseudo.kmeans import ArraySource, NpyRowSource, NpyWriter, assign, cluster_sizes, kmeans


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int, dim: int, centers: int, chunk: int, seed: int, storage: str):
    """Seeded blob mixture written chunk by chunk (.npy file or uncompressed zarr array); the source."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centers, dim), dtype=np.float32) * 2.0
    if storage == "zarr":
        arr = zarr.create_array(store=str(path.with_suffix(".zarr")), shape=(rows, dim), chunks=(chunk, dim),
                                dtype="float32", compressors=None, overwrite=True)
    else:
        writer = NpyWriter(path.with_suffix(".npy"), rows, dim)
    for start in range(0, rows, chunk):
        m = min(chunk, rows - start)
        block = rng.standard_normal((m, dim), dtype=np.float32)
        block += means[rng.integers(0, centers, m)]
        if storage == "zarr":
            arr[start:start + m] = block
        else:
            writer.append(block)
    if storage == "zarr":
        return ArraySource(arr, chunk)
    writer.close()
    return NpyRowSource(path.with_suffix(".npy"), chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=800)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--chunk-size", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", choices=["npy", "zarr"], default="npy")
    ap.add_argument("--plain", action="store_true", help="plain Lloyd passes (no Hamerly bounds)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the zarr array goes (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="also write the json here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    workdir = Path(tempfile.mkdtemp(prefix="u2seg-cluster-bench-", dir=args.workdir))
    try:
        rss0 = peak_rss_mb()
        t0 = time.perf_counter()
        source = generate(workdir / "x", args.rows, args.dim, args.k, args.chunk_size, args.seed, args.storage)
        t_gen = time.perf_counter() - t0
        rss_gen = peak_rss_mb()

        t0, c0 = time.perf_counter(), time.process_time()
        res = kmeans(source, args.k, args.iterations, args.seed, device=args.device,
                     accelerate=not args.plain, scratch_dir=workdir, progress=True)
        t_fit, cpu_fit = time.perf_counter() - t0, time.process_time() - c0
        rss_fit = peak_rss_mb()

        t0, c0 = time.perf_counter(), time.process_time()
        labels, inertia = [], 0.0
        for lab, dist in assign(source, res.centroids, device=args.device):
            labels.append(lab.astype(np.int32))
            inertia += float(dist.astype(np.float64).sum())
        labels = np.concatenate(labels)
        t_assign, cpu_assign = time.perf_counter() - t0, time.process_time() - c0
        rss_all = peak_rss_mb()
        sizes = cluster_sizes(labels, args.k)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    per_it = [h["seconds"] for h in res.history]
    report = {
        "rows": args.rows, "dim": args.dim, "k": args.k, "chunk_size": args.chunk_size,
        "threads": args.threads, "device": args.device, "storage": args.storage, "hamerly": not args.plain,
        "iterations_requested": args.iterations, "iterations_run": res.iterations, "converged": res.converged,
        "seconds": {
            "generate": round(t_gen, 2),
            "fit_total": round(t_fit, 2),  # init pass + iterations_run Lloyd iterations
            "per_iteration_median": round(statistics.median(per_it), 3),
            "per_iteration_min": round(min(per_it), 3),
            "per_iteration_max": round(max(per_it), 3),
            "assign": round(t_assign, 2),
        },
        # CPU seconds (all threads): independent of other processes competing for the cores
        "cpu_seconds": {"fit": round(cpu_fit, 1), "assign": round(cpu_assign, 1)},
        "cpu_share_of_threads": round((cpu_fit + cpu_assign) / max(t_fit + t_assign, 1e-9) / args.threads, 3),
        "per_iteration_seconds": [round(h["seconds"], 2) for h in res.history],
        "recomputed_rows_per_iteration": [h["recomputed"] for h in res.history],
        "peak_rss_mb": {"start": round(rss0), "after_generate": round(rss_gen), "after_fit": round(rss_fit),
                        "after_assign": round(rss_all)},
        "reseeded_empty_clusters": res.reseeded, "empty_clusters_final": int((sizes == 0).sum()),
        "inertia_final": inertia,
        "embeddings_bytes": args.rows * args.dim * 4,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
