# Shared helpers for every rule file: dataset keys, result paths, shard lists, the CLI command.
import functools
import json
import os
import shlex
import sys
from pathlib import Path

RES = config["results"].rstrip("/")
# The package CLI, run with the interpreter that runs Snakemake (works on Slurm nodes too).
U2SEG = shlex.quote(sys.executable) + " -m u2seg"


def dataset_key(kind=None, split=None):
    """Wildcard value naming a dataset: samples, images, coco-val, coco-train."""
    kind = kind or config["dataset"]
    if kind == "coco":
        return f"coco-{split or config['split']}"
    return kind


# The dataset the default targets (extract_features, maskcut, pseudo_labels, train) run on.
DS = dataset_key()
COCO_TRAIN = dataset_key("coco", "train")
COCO_VAL = dataset_key("coco", "val")

wildcard_constraints:
    ds="samples|images|coco-train|coco-val",
    shard=r"\d{5}",


def dataset_args(wildcards):
    """CLI flags that tell `u2seg ingest` where the images of dataset ``wildcards.ds`` are."""
    ds = wildcards.ds
    if ds == "samples":
        return "--kind samples"
    if ds == "images":
        if not config.get("images_dir"):
            raise ValueError("dataset=images needs `images_dir` in the config")
        return "--kind images --root " + shlex.quote(str(config["images_dir"]))
    split = ds.split("-", 1)[1]
    args = f"--kind coco --root {shlex.quote(str(config['coco_root']))} --split {split}"
    if config.get("limit"):
        args += f" --limit {int(config['limit'])}"
    return args


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


@functools.lru_cache(maxsize=16)
def _count_manifest(path, mtime_ns):
    """Images of a manifest, cached per (path, mtime): the DAG asks once per aggregate job."""
    with open(path) as fh:
        return len(json.load(fh)["images"])


def manifest_image_count(path):
    """Number of images in the manifest at ``path``."""
    return _count_manifest(path, os.stat(path).st_mtime_ns)


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


def per_shard(pattern):
    """Input function: ``pattern`` (with {ds} and {shard}) expanded over every shard of ``ds``."""
    def _inputs(wildcards):
        return [pattern.format(ds=wildcards.ds, shard=s) for s in shard_ids(wildcards.ds)]
    return _inputs


def mem_mb(base):
    """Memory request that grows with Snakemake's retry attempt."""
    return lambda wildcards, attempt: int(base * (1 + 0.5 * (attempt - 1)))


def gpu_request(device):
    """`gpu` resource of a rule whose device setting is ``device``: 1 only for an explicit `cuda`.

    (`auto` uses a GPU when the job finds one but does not ask the scheduler for one.)
    """
    return 1 if device == "cuda" else 0
