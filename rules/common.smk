# Shared helpers for every rule file: dataset keys, result paths, shard lists, the CLI command.
import functools
import json
import os
import re
import shlex
import sys
from pathlib import Path

from u2seg.params import to_flags

RES = config["results"].rstrip("/")
# The package CLI, run with the interpreter that runs Snakemake (works on Slurm nodes too).
U2SEG = shlex.quote(sys.executable) + " -m u2seg"


# Named COCO-format datasets (config `datasets`): each name is its own dataset key.
DATASETS = config.get("datasets") or {}


def dataset_key(kind=None, split=None):
    """Wildcard value naming a dataset: samples, images, coco-val, coco-train or a `datasets` name."""
    kind = kind or config["dataset"]
    if kind == "coco":
        return f"coco-{split or config['split']}"
    return kind


# The dataset the default targets (extract_features, maskcut, pseudo_labels, train) run on.
DS = dataset_key()
COCO_TRAIN = dataset_key("coco", "train")
COCO_VAL = dataset_key("coco", "val")

# Every dataset key (longest first, so that no name is matched by a prefix of another).
DS_PATTERN = "|".join(
    re.escape(k) for k in sorted({"samples", "images", COCO_TRAIN, COCO_VAL, *DATASETS}, key=lambda k: (-len(k), k))
)


wildcard_constraints:
    ds=DS_PATTERN,
    shard=r"\d{5}",


def config_flags(values, exclude=()):
    """A config section (dict) -> the stage's flags: ' --key value ...' for every key not in ``exclude``
    (shell-quoted; lists: several values; booleans: --key / --no-key; u2seg.params.to_flags). The one
    way the rules pass configured values to a stage: the CLI defaults are the paper's values."""
    return to_flags({k: v for k, v in values.items() if k not in exclude})


def dataset_args(wildcards):
    """CLI flags that tell `u2seg ingest` where the images of dataset ``wildcards.ds`` are."""
    ds = wildcards.ds
    if ds == "samples":
        return "--kind samples"
    if ds == "images":
        if not config.get("images_dir"):
            raise ValueError("dataset=images needs `images_dir` in the config")
        return "--kind images --root " + shlex.quote(str(config["images_dir"]))
    if ds in DATASETS:
        return coco_format_args(ds, DATASETS[ds])
    split = ds.split("-", 1)[1]
    args = f"--kind coco --root {shlex.quote(str(config['coco_root']))} --split {split}"
    if config.get("limit"):
        args += f" --limit {int(config['limit'])}"
    return args


def coco_format_args(name, entry):
    """`u2seg ingest` flags of the COCO-format dataset ``name`` (its `datasets` entry)."""
    q = lambda v: shlex.quote(str(v))
    args = f"--kind coco-format --name {q(name)} --root {q(entry['images'])}"
    if entry.get("instances"):
        args += f" --instances {q(entry['instances'])}"
    if entry.get("panoptic"):
        args += f" --panoptic-json {q(entry['panoptic'])}"
    if entry.get("panoptic_dir"):
        args += f" --panoptic-dir {q(entry['panoptic_dir'])}"
    if entry.get("limit"):
        args += f" --limit {int(entry['limit'])}"
    return args


def dataset_protocols(ds):
    """Extra evaluation protocols of dataset ``ds`` (its `datasets` entry's `protocols`)."""
    return list((DATASETS.get(ds) or {}).get("protocols") or [])


def shard_ids(ds):
    """Shard indices of dataset ``ds``: the single function that decides them.

    Normally from the ingest checkpoint's manifest (exact: ingest may skip unreadable images). In a
    dry-run (``snakemake -n``) before ingest has run, from the dataset listing instead
    (:func:`listed_image_count`, an upper bound), so that the per-shard feature / MaskCut / embedding
    jobs and their resources are listed; a real run still waits for the checkpoint.
    """
    size = int(config["features"]["shard_size"])
    manifest = Path(f"{RES}/{ds}/manifest.json")
    n = None
    if workflow.dryrun and not manifest.exists():
        n = listed_image_count(ds)
    if n is None:
        n = manifest_image_count(checkpoints.ingest.get(ds=ds).output.manifest)
    return [f"{i:05d}" for i in range((n + size - 1) // size)]


@functools.lru_cache(maxsize=8)
def _manifest_facts(path, mtime_ns, shard_size):
    """(images, largest image's pixels per shard) of a manifest, read once per (path, mtime)."""
    with open(path) as fh:
        pixels = [im["width"] * im["height"] for im in json.load(fh)["images"]]
    return len(pixels), tuple(max(pixels[i : i + shard_size]) for i in range(0, len(pixels), shard_size))


def manifest_image_count(path):
    """Number of images in the manifest at ``path``."""
    return _manifest_facts(str(path), os.stat(path).st_mtime_ns, int(config["features"]["shard_size"]))[0]


def dataset_size(ds, shard=None):
    """(images of ``ds``, pixels of the largest image of ``shard``, or of the whole dataset when ``shard``
    is None) for resource requests, without waiting for the checkpoint: from the manifest when it exists,
    else (images from the dataset listing, pixels None); (0, None) when neither is known."""
    manifest = Path(f"{RES}/{ds}/manifest.json")
    if not manifest.exists():
        return listed_image_count(ds) or 0, None
    n, pixels = _manifest_facts(str(manifest), os.stat(manifest).st_mtime_ns, int(config["features"]["shard_size"]))
    if shard is None:
        return n, (max(pixels) if pixels else None)
    return n, (pixels[int(shard)] if int(shard) < len(pixels) else None)


def declared_mem(base_mb, per_image_kb=0.0, per_pixel_b=0.0, grid_pixel_b=0.0, grid_cap=0, pixels_unknown=0):
    """``mem_mb`` from measured per-unit figures (docs/benchmarks.md, "Scale"): ``base_mb`` + ``per_image_kb``
    per image of the dataset + ``per_pixel_b`` per pixel of the shard's largest image + ``grid_pixel_b``
    per pixel of it up to ``grid_cap`` (work done on a bounded grid); ``pixels_unknown`` pixels are
    assumed before ingest. Grows by half per Snakemake retry attempt."""

    def _mem(wildcards, attempt):
        n, px = dataset_size(wildcards.ds, getattr(wildcards, "shard", None))
        px = pixels_unknown if px is None else px
        grid = min(px, grid_cap) if grid_cap else px
        mb = base_mb + per_image_kb * n / 1024 + (per_pixel_b * px + grid_pixel_b * grid) / 2**20
        return with_retries(mb, attempt)

    return _mem


def declared_runtime(base_min, per_image_s=0.0, per_shard_image_s=0.0):
    """``runtime`` (minutes) from measured per-unit figures: ``base_min`` + ``per_image_s`` per image of
    the dataset + ``per_shard_image_s`` per image of one shard (``features.shard_size``)."""

    def _runtime(wildcards):
        n, _ = dataset_size(wildcards.ds)
        return int(base_min + (per_image_s * n + per_shard_image_s * int(config["features"]["shard_size"])) / 60)

    return _runtime


@functools.lru_cache(maxsize=16)
def listed_image_count(ds):
    """Images the dataset listing of ``ds`` holds before ingest (None when not known cheaply).

    `images`: image files under `images_dir` (recursively, hidden ones excluded, as ingest lists
    them); COCO: the files of the split's image folder, at most `limit`. Ingest may skip
    unreadable ones, so this is an upper bound; it is used for dry-runs only (see shard_ids).
    """
    from u2seg.images import IMAGE_SUFFIXES

    if ds == "images" and config.get("images_dir"):
        root, limit = Path(config["images_dir"]), None
    elif ds in DATASETS:  # a COCO-format dataset named under `datasets`
        root, limit = Path(DATASETS[ds]["images"]), DATASETS[ds].get("limit")
    elif ds.startswith("coco-"):
        root, limit = Path(config["coco_root"]) / f"{ds.split('-', 1)[1]}2017", config.get("limit")
    else:
        root, limit = None, None
    n = None
    if root is not None and root.is_dir():
        n = 0
        for top, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            n += sum(1 for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if limit:
            n = min(n, int(limit))
    return n or None


# ---- measured per-unit figures for the resource requests (docs/benchmarks.md "Scale") ----
# From `python benchmarks/scale.py` on the 2-core machine (peak RSS per process, with margins noted
# there). Memory in MB (+ KB per image of the dataset, bytes per pixel), runtime in seconds per unit.
MANIFEST_KB_PER_IMAGE = 0.6  # json.load of the manifest (0.45 KB measured): every job that reads it
INGEST_BASE_MB, INGEST_KB_PER_IMAGE, INGEST_S_PER_IMAGE = 500, 3.0, 0.01
MERGE_MASKS_BASE_MB, MERGE_MASKS_KB_PER_IMAGE, MERGE_MASKS_S_PER_IMAGE = 500, 0.01, 0.001
CLUSTER_BASE_MB, CLUSTER_KB_PER_IMAGE, CLUSTER_S_PER_IMAGE = 1500, 1.0, 0.01
MERGE_SHARD_BASE_MB, MERGE_B_PER_PIXEL, MERGE_B_PER_GRID_PIXEL = 300, 14, 90
CONCAT_BASE_MB, CONCAT_KB_PER_IMAGE, CONCAT_S_PER_IMAGE = 300, 0.01, 0.001
VALIDATE_BASE_MB, VALIDATE_B_PER_PIXEL = 300, 60
# predict: the network runs at the test size; full-size outputs are built one mask at a time on its box
# (11.9 B/pixel measured between 4000x3000 and 9000x8000 with a tiny model: 1150 -> 1850 MiB). The base
# is the earlier 6,000 MB request (the ResNet-50 network at the test size; not re-measured here).
# The detections of every image stay in memory until instances_results.json is written: 78 KiB per image
# as Python objects (100 detections of images up to 1200 x 900; 258 KiB at 2400 x 1800) + its json text.
PREDICT_BASE_MB, PREDICT_B_PER_PIXEL, PREDICT_KB_PER_IMAGE = 6000, 16, 120
PREDICT_PIXELS_UNKNOWN = 24_000_000  # assumed before ingest has measured the images (a 6000 x 4000 photo)


def per_shard(pattern):
    """Input function: ``pattern`` (with {ds} and {shard}) expanded over every shard of ``ds``."""

    def _inputs(wildcards):
        return [pattern.format(ds=wildcards.ds, shard=s) for s in shard_ids(wildcards.ds)]

    return _inputs


def with_retries(mb, attempt):
    """``mb`` grown by half per Snakemake retry attempt (attempt 1: ``mb``)."""
    return int(mb * (1 + 0.5 * (attempt - 1)))


def mem_mb(base):
    """Memory request that grows with Snakemake's retry attempt."""
    return lambda wildcards, attempt: with_retries(base, attempt)


def gpu_request(device):
    """`gpu` resource of a rule whose device setting is ``device``: 1 only for an explicit `cuda`.

    (`auto` uses a GPU when the job finds one but does not ask the scheduler for one.)
    """
    return 1 if device == "cuda" else 0
