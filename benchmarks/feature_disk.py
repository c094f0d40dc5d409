"""Peak feature disk of a pseudo-labels run, computed from the DAG that `snakemake -n` prints.

Builds a synthetic results folder holding only a manifest of N images (as ingest writes it; no
images, no features), runs `snakemake -n pseudo_labels` with a preset's settings (measured: wall,
CPU seconds, peak RSS) and parses the printed jobs (rule, input and output files, shell command).
Feature files are the zarr shards (`features/shard_*.zarr`) that features_shard / shard_pass write;
each is `images in the shard x --bytes-per-image` (default: dino_vitb8 at 480 px, 60 x 60 x 768
float16 + the 768 float32 global embedding = 5,532,672 B). They are temp() exactly when
features.keep_features is false (rules/features.smk, rules/shard_pass.smk), and Snakemake removes a
temp() file once every job that reads it has finished. A shard_pass job run with
`--no-keep-features` writes no feature file: it holds its shard in memory (its mem_mb), not on disk.

A state of the run is a set D of finished jobs (closed under dependencies) and up to J running jobs
whose inputs are all in D. The feature disk of a state is the kept feature files made by D, the
temp() ones made by D that a job outside D still reads, and the outputs of the running jobs. The peak is the maximum over every state Snakemake may pass through with J jobs in flight:
`peak_exhaustive` enumerates the states (small DAGs: the tests); `peak_bound` gives, for any size,
the upper bound U = every feature file, and the state "every feature
producer and its dependencies finished, J more ready jobs running" that reaches it when each feature
file has a reader outside that set (then the peak is exactly U; the json says whether it is reached).

  python benchmarks/feature_disk.py --images 1281167 --work /tmp/fdisk \
      --mode fused-checkpoint fused-kmeans separate-kmeans --jobs 1 8
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# dino_vitb8 at 480 px: 60 x 60 patches x 768 float16 + the global embedding (768 float32)
BYTES_PER_IMAGE = 60 * 60 * 768 * 2 + 768 * 4
_FEATURE = re.compile(r"/features/shard_(\d+)\.zarr$")

# pipeline.fused, stuff.model, features.keep_features of each mode
MODES: dict[str, dict[str, Any]] = {
    "fused-checkpoint": {"pipeline": {"fused": True}, "stuff": "stego_checkpoint", "keep": False},
    "fused-checkpoint-kept": {"pipeline": {"fused": True}, "stuff": "stego_checkpoint", "keep": True},
    "fused-kmeans": {"pipeline": {"fused": True}, "stuff": "kmeans", "keep": False},
    "separate-kmeans": {"pipeline": {"fused": False}, "stuff": "kmeans", "keep": False},
    "separate-checkpoint": {"pipeline": {"fused": False}, "stuff": "stego_checkpoint", "keep": False},
}


@dataclass
class Job:
    """One job of the dry-run: its rule and files."""

    jobid: int
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of `snakemake -n` output (blocks `rule NAME:` with `input:`, `output:`, `jobid:`)."""
    jobs: list[Job] = []
    cur: Job | None = None
    for line in text.splitlines():
        if line.startswith("rule ") or line.startswith("localrule "):
            cur = Job(-1, line.split()[1].rstrip(":"))
            jobs.append(cur)
        elif cur is None:
            continue
        elif line.startswith("    input: "):
            cur.inputs = line[len("    input: "):].split(", ")
        elif line.startswith("    output: "):
            cur.outputs = line[len("    output: "):].split(", ")
        elif line.startswith("    jobid: "):
            cur.jobid = int(line.split()[1])
    return jobs


def shard_bytes(shard: int, n_images: int, shard_size: int, bytes_per_image: int) -> int:
    """Feature bytes of one shard (the last one may be smaller)."""
    return max(0, min(shard_size, n_images - shard * shard_size)) * bytes_per_image


@dataclass
class FeatureDag:
    """Jobs, their dependencies and the feature files with sizes and temp() flags."""

    jobs: list[Job]
    sizes: dict[str, int]          # feature file -> bytes
    temp: set[str]                 # feature files removed after their last reader
    deps: list[set[int]]           # job index -> indices of the jobs it needs
    readers: dict[str, set[int]]   # feature file -> indices of the jobs reading it
    producer: dict[str, int]       # feature file -> index of the job writing it


def build_dag(jobs: list[Job], n_images: int, shard_size: int, bytes_per_image: int, keep: bool) -> FeatureDag:
    """Dependencies from the files (an input made by another job) and the feature files' sizes."""
    made = {o: i for i, j in enumerate(jobs) for o in j.outputs}
    deps = [{made[f] for f in j.inputs if f in made} for j in jobs]
    sizes: dict[str, int] = {}
    producer: dict[str, int] = {}
    for i, j in enumerate(jobs):
        for o in j.outputs:
            m = _FEATURE.search(o)
            if m:
                sizes[o] = shard_bytes(int(m.group(1)), n_images, shard_size, bytes_per_image)
                producer[o] = i
    readers: dict[str, set[int]] = {f: set() for f in sizes}
    for i, j in enumerate(jobs):
        for f in j.inputs:
            if f in readers:
                readers[f].add(i)
    return FeatureDag(jobs, sizes, set() if keep else set(sizes), deps, readers, producer)


def state_bytes(dag: FeatureDag, done: set[int], running: set[int]) -> int:
    """Feature bytes on disk with ``done`` finished and ``running`` in flight."""
    total = 0
    for f, size in dag.sizes.items():
        p = dag.producer[f]
        if p in running:
            total += size
        elif p in done and (f not in dag.temp or not dag.readers[f] <= done):
            total += size
    return total


def _ready(dag: FeatureDag, done: set[int]) -> list[int]:
    return [i for i in range(len(dag.jobs)) if i not in done and dag.deps[i] <= done]


def peak_exhaustive(dag: FeatureDag, jobs_in_flight: int) -> int:
    """Maximum feature bytes over every reachable state (finished set + up to J ready jobs running).

    Exponential: for small DAGs (tests) only."""
    best = 0
    seen: set[frozenset[int]] = set()
    stack = [frozenset()]
    while stack:
        done = stack.pop()
        if done in seen:
            continue
        seen.add(done)
        ready = _ready(dag, set(done))
        for r in range(0, min(jobs_in_flight, len(ready)) + 1):
            for running in itertools.combinations(ready, r):
                best = max(best, state_bytes(dag, set(done), set(running)))
        stack.extend(done | {i} for i in ready)
    return best


def _closure(dag: FeatureDag, seeds: set[int]) -> set[int]:
    out, todo = set(), list(seeds)
    while todo:
        i = todo.pop()
        if i not in out:
            out.add(i)
            todo.extend(dag.deps[i])
    return out


def peak_bound(dag: FeatureDag, jobs_in_flight: int) -> dict[str, Any]:
    """Upper bound U (every feature file) and the bytes of the state that finishes every feature
    producer (and its dependencies) and runs J ready jobs; when that state reaches U the peak is
    exactly U. Linear in the DAG."""
    upper = sum(dag.sizes.values())
    done = _closure(dag, set(dag.producer.values()))
    ready = _ready(dag, done)[:jobs_in_flight]
    reached = state_bytes(dag, done, set(ready))
    return {"upper_bound_bytes": upper, "state_bytes": reached, "exact": reached == upper}


def _manifest(work: Path, n: int) -> Path:
    res = work / "results" / "images"
    res.mkdir(parents=True, exist_ok=True)
    root = work / "images"
    root.mkdir(exist_ok=True)
    with open(res / "manifest.json", "w") as fh:  # streamed: no 1.28M-entry list in memory
        fh.write('{"dataset": {"kind": "images", "root": %s}, "root": %s, "images": [\n'
                 % (json.dumps(str(root)), json.dumps(str(root))))
        for i in range(n):
            fh.write('%s{"id": %d, "file_name": "%012d.jpg", "width": 640, "height": 480}'
                     % (",\n" if i else "", i + 1, i + 1))
        fh.write('\n], "annotations": null, "panoptic": null, "num_skipped": 0}\n')
    (res / "skipped.json").write_text(json.dumps({"num_images": n, "skipped": []}))
    (work / "stego.ckpt").write_bytes(b"")  # stego_checkpoint needs a path; the dry-run reads nothing
    return work / "results"


def dry_run(work: Path, results: Path, mode: str, preset: Path, shard_size: int) -> tuple[dict[str, Any], str]:
    """`snakemake -n pseudo_labels` with ``preset`` and the mode's keys; (measured row, printed text)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from scale import run_measured  # the same launcher as the scale benchmark (peak RSS via wait4)

    m = MODES[mode]
    stuff: dict[str, Any] = {"model": m["stuff"]}
    if m["stuff"] == "stego_checkpoint":
        stuff["checkpoint"] = str(work / "stego.ckpt")
    cfg = work / f"{mode}.yaml"
    cfg.write_text(json.dumps({"results": str(results), "images_dir": str(work / "images"), "stuff": stuff,
                               "pipeline": m["pipeline"], "features": {"shard_size": shard_size,
                                                                       "keep_features": m["keep"]}}))
    (work / mode).mkdir(exist_ok=True)
    log = work / f"{mode}.log"
    row = run_measured([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                        str(work / mode), "-n", "--cores", "2", "--configfile", str(preset), str(cfg),
                        "--", "pseudo_labels"], log)
    return row, log.read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1281167)
    ap.add_argument("--shard-size", type=int, default=None, help="default: the preset's features.shard_size")
    ap.add_argument("--bytes-per-image", type=int, default=BYTES_PER_IMAGE)
    ap.add_argument("--preset", type=Path, default=REPO / "configs" / "u2seg-imagenet.yaml")
    ap.add_argument("--mode", nargs="+", default=["fused-checkpoint"], choices=sorted(MODES))
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 8], help="jobs in flight (J)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (emptied first)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.shard_size is None:
        import yaml

        args.shard_size = int(yaml.safe_load(args.preset.read_text())["features"]["shard_size"])
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    results = _manifest(args.work, args.images)
    out: dict[str, Any] = {"images": args.images, "shard_size": args.shard_size,
                           "bytes_per_image": args.bytes_per_image, "preset": args.preset.name, "modes": {}}
    try:
        for mode in args.mode:
            row, text = dry_run(args.work, results, mode, args.preset, args.shard_size)
            jobs = parse_dry_run(text)
            dag = build_dag(jobs, args.images, args.shard_size, args.bytes_per_image, MODES[mode]["keep"])
            row["jobs"] = len(jobs)
            row["feature_files"] = len(dag.sizes)
            row["all_shards_gb"] = round(args.images * args.bytes_per_image / 1e9, 1)
            for j in args.jobs:
                b = peak_bound(dag, j)
                peak = b["upper_bound_bytes"] if b["exact"] else b["state_bytes"]
                row[f"peak_J{j}"] = {**b, "peak_gb": round(peak / 1e9, 2), "peak_is": "exact" if b["exact"]
                                     else "lower bound (the state above; U is the upper bound)"}
            out["modes"][mode] = row
            print(json.dumps({mode: row}), flush=True)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
