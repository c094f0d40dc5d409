# Shared helpers for every rule file: dataset keys, result paths, shard lists, the CLI command.
import json
import re
import shlex
import sys
from pathlib import Path

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
DS_PATTERN = "|".join(re.escape(k) for k in sorted(
    {"samples", "images", COCO_TRAIN, COCO_VAL, *DATASETS}, key=lambda k: (-len(k), k)))

wildcard_constraints:
    ds=DS_PATTERN,
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
    """Shard indices of dataset ``ds`` (read from the ingest checkpoint's manifest)."""
    manifest = checkpoints.ingest.get(ds=ds).output.manifest
    with open(manifest) as fh:
        n = len(json.load(fh)["images"])
    size = int(config["features"]["shard_size"])
    return [f"{i:05d}" for i in range((n + size - 1) // size)]


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
