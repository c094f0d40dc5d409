"""Named models: released checkpoints by name, downloaded on first use into the torch hub cache.

A name resolves to a u2seg model file: the raw download is kept as ``<hub>/checkpoints/u2seg/<file>``
(checked against its sha256 when one is recorded) and a detectron2 checkpoint is converted once with
``import-d2`` into ``<hub>/checkpoints/u2seg/<name>.u2seg.pth``. ``<hub>`` is ``torch.hub.get_dir()``
(``$TORCH_HOME/hub``). A path resolves to itself, converted the same way when it is a detectron2 checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from u2seg.atomic import atomic_path
from u2seg.errors import UserError
from u2seg.progress import ProgressLog

log = logging.getLogger(__name__)

KINDS = ("u2seg-panoptic", "cutler-agnostic", "u2seg-model-file")
FORMATS = ("detectron2", "u2seg")
U2SEG_DRIVE = "https://drive.google.com/drive/folders/186GBbIhEW7W0eidGOGRTmTyM_HedSOQh"
CHUNK = 1 << 20


@dataclass(frozen=True)
class NamedModel:
    """One downloadable model."""

    name: str
    url: str  # direct download URL (http(s):// or file://), or a page to download it from by hand
    file_name: str  # the downloaded file's name in the cache
    kind: str  # one of KINDS
    format: str = "detectron2"  # one of FORMATS: detectron2 checkpoints are converted with import-d2
    sha256: str | None = None  # None: not recorded (the download is not checked)
    direct: bool = True  # False: ``url`` is a page (a Google Drive folder): the file is fetched by hand
    category_names: tuple[str, ...] | None = None  # thing class names where the model has them
    input_format: str = "RGB"  # detectron2 INPUT.FORMAT of its config
    description: str = ""


# The released checkpoints (docs/model-zoo.md). Their checksums are not recorded: nothing was downloaded
# on the machine that wrote this table. U2Seg's files are in a Google Drive folder (no direct URLs).
MODELS: dict[str, NamedModel] = {m.name: m for m in (
    NamedModel("u2seg-coco-k300", U2SEG_DRIVE, "cocotrain_300_0089999.pth", "u2seg-panoptic", direct=False,
               description="U2Seg trained on COCO with K = 300 instance clusters (+ 27 stuff)"),
    NamedModel("u2seg-coco-k800", U2SEG_DRIVE, "cocotrain_800_0089999.pth", "u2seg-panoptic", direct=False,
               description="U2Seg trained on COCO with K = 800 instance clusters (+ 27 stuff)"),
    NamedModel("cutler-cascade", "http://dl.fbaipublicfiles.com/cutler/checkpoints/cutler_cascade_final.pth",
               "cutler_cascade_final.pth", "cutler-agnostic", category_names=("object",),
               description="CutLER Cascade Mask R-CNN R50, class-agnostic, 3 self-training rounds on ImageNet"),
)}


def cache_dir() -> Path:
    """``<torch hub dir>/checkpoints/u2seg``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / "u2seg"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(model: NamedModel, dest: Path, reason: str) -> UserError:
    return UserError(f"model {model.name!r}: {reason}; download {model.file_name} from {model.url} "
                     f"and put it at {dest}")


def download(model: NamedModel, dest: Path, progress: bool = True) -> Path:
    """Fetch ``model.url`` to ``dest`` (atomically, size and progress logged), checking its sha256."""
    if not model.direct:
        raise _by_hand(model, dest, "no direct download URL")
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", model.name, model.url)
    try:
        with urllib.request.urlopen(model.url, timeout=60) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0)
            log.info("%s: %s", model.file_name, f"{total / 2**20:.1f} MiB" if total else "size unknown")
            prog = ProgressLog(log, f"download {model.file_name}", max(total >> 20, 1), "MiB", period=10.0)
            with open(tmp, "wb") as fh, tqdm(total=total or None, unit="B", unit_scale=True,
                                             desc=model.file_name, disable=not progress) as bar:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
                    bar.update(len(block))
                    prog.update(len(block) >> 20 if total else 0)
            _check_sha(model, Path(tmp))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise _by_hand(model, dest, f"cannot download ({getattr(exc, 'reason', exc)})") from exc
    return dest


def _check_sha(model: NamedModel, path: Path) -> None:
    if model.sha256 and sha256_of(path) != model.sha256.lower():
        raise UserError(f"model {model.name!r}: {path} does not have the recorded sha256 {model.sha256} "
                        f"(a partial or different file: delete it and download {model.url} again)")


def _is_u2seg_file(path: Path) -> bool:
    """Whether ``path`` is a u2seg model file (False for anything else, e.g. a detectron2 .pkl)."""
    from u2seg.detector import checkpoint as ckpt

    try:
        obj = ckpt.load(path)
    except UserError:
        return False
    return "model" in obj and "model_config" in obj


def _convert(source: Path, dest: Path, input_format: str, category_names: tuple[str, ...] | None) -> Path:
    """``import-d2`` of ``source`` into ``dest`` (once)."""
    from u2seg.detector.d2_import import import_checkpoint

    if dest.is_file():
        return dest
    log.info("converting detectron2 checkpoint %s -> %s (once)", source, dest)
    import_checkpoint(source, dest, input_format, list(category_names) if category_names else None)
    return dest


def resolve_model(name_or_path: str | os.PathLike, models: dict[str, NamedModel] | None = None,
                  progress: bool = True) -> Path:
    """A u2seg model file for a model name (downloaded + converted into the cache on first use) or a
    path (a u2seg model file, or a detectron2 checkpoint converted once into the cache)."""
    models = MODELS if models is None else models
    text = os.fspath(name_or_path)
    if text in models:
        model = models[text]
        raw = cache_dir() / model.file_name
        if raw.is_file():
            _check_sha(model, raw)
        else:
            download(model, raw, progress)
        if model.format == "u2seg":
            return raw
        return _convert(raw, cache_dir() / f"{model.name}.u2seg.pth", model.input_format, model.category_names)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"no model {text!r}: not a file and not a model name (named models: "
                        f"{', '.join(sorted(models))})")
    if _is_u2seg_file(path):
        return path
    digest = sha256_of(path)[:16]
    try:
        return _convert(path, cache_dir() / f"{path.stem}-{digest}.u2seg.pth", "RGB", None)
    except UserError as exc:
        raise UserError(f"{path} is neither a u2seg model file nor a detectron2 checkpoint of a U2Seg / CutLER "
                        f"model ({exc})") from exc
