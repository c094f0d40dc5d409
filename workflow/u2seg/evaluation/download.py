"""Download COCO 2017 images and annotations into a COCO root when they are absent.

Only what is missing is fetched: ``{split}2017/`` images, ``annotations/instances_{split}2017.json``
and (optionally) ``annotations/panoptic_{split}2017.json`` + ``annotations/panoptic_{split}2017/``.
Archives are downloaded to ``{root}/.download/`` (``.part`` file renamed when complete), then
extracted into a temporary sibling and renamed into place, so an interrupted run never leaves a
half-written folder under its final name. Nothing that already exists is touched or deleted.
Without network access a ``UserError`` says what is missing and where to put it.
"""
from __future__ import annotations

import io
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from u2seg import atomic
from u2seg.errors import UserError
from u2seg.preflight import coco_download_plan, coco_missing

log = logging.getLogger(__name__)

BASE_URL = "http://images.cocodataset.org"
ARCHIVES = {
    "images": "zips/{split}2017.zip",
    "annotations": "annotations/annotations_trainval2017.zip",
    "panoptic": "annotations/panoptic_annotations_trainval2017.zip",
}
Opener = Callable[..., Any]  # urllib.request.urlopen-compatible: (url, timeout=...) -> response


def missing_parts(root: Path, split: str, panoptic: bool) -> list[str]:
    """Which of ``images``, ``annotations``, ``panoptic`` a COCO root lacks for ``split``."""
    return coco_missing(Path(root), split, panoptic)


def fetch(url: str, target: Path, timeout: float = 60.0, opener: Opener | None = None,
          chunk: int = 1 << 22) -> Path:
    """Download ``url`` to ``target`` (via ``target.part``); UserError when it cannot be reached."""
    opener = opener or urllib.request.urlopen
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    log.info("downloading %s -> %s", url, target)
    total = 0
    try:
        with opener(url, timeout=timeout) as resp, open(part, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) if getattr(resp, "headers", None) else 0
            log.info("%s: %s", url, f"{total / 1e9:.2f} GB" if total else "size unknown")
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=target.name) as bar:
                while True:
                    block = resp.read(chunk)
                    if not block:
                        break
                    fh.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise UserError(
            f"cannot download {url} ({exc}). Without network access, put COCO into the root yourself "
            f"(images in <root>/<split>2017/, annotations in <root>/annotations/) "
            f"from https://cocodataset.org/#download") from exc
    if total and part.stat().st_size != total:
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        raise UserError(f"{url}: incomplete download ({size} of {total} bytes); run again")
    part.rename(target)
    return target


def _extract_dir(zf: zipfile.ZipFile, prefix: str, dest: Path) -> None:
    """Extract the members under ``prefix`` (a folder in the archive) into folder ``dest`` atomically."""
    members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
    if not members:
        raise UserError(f"archive has no folder {prefix!r}")
    with atomic.atomic_path(dest, directory=True) as tmp:
        for m in tqdm(members, desc=f"extract {dest.name}", unit="file", disable=len(members) < 100):
            rel = Path(m.filename[len(prefix):])
            if rel.is_absolute() or ".." in rel.parts:
                raise UserError(f"unsafe path in archive: {m.filename}")
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_file(zf: zipfile.ZipFile, name: str, dest: Path) -> None:
    try:
        data = zf.read(name)
    except KeyError as exc:
        raise UserError(f"archive has no {name}") from exc
    atomic.write_bytes(dest, data)


def ensure_coco(root: str | Path, split: str = "val", panoptic: bool = True, allow_download: bool = True,
                base_url: str = BASE_URL, timeout: float = 60.0, opener: Opener | None = None,
                keep_archives: bool = False) -> dict[str, Any]:
    """Make sure the COCO root holds ``split``'s images and annotations; download what is missing.

    Returns a summary {root, split, present, downloaded}."""
    root = Path(root)
    if split not in ("train", "val"):
        raise UserError(f"COCO split must be train or val, got {split!r}")
    missing = missing_parts(root, split, panoptic)
    summary: dict[str, Any] = {"root": str(root.resolve()), "split": split, "downloaded": [],
                               "present": [p for p in ("images", "annotations", "panoptic")
                                           if p not in missing and (panoptic or p != "panoptic")]}
    if not missing:
        return summary
    if not allow_download:
        raise UserError(f"COCO root {root} lacks {', '.join(missing)} for {split}2017 and downloading is "
                        f"disabled (evaluate.download: false)")
    log.warning("downloading %s (archives under %s, removed after extraction)",
                coco_download_plan(root, split, missing), root / ".download")
    cache = root / ".download"
    for part in missing:
        name = ARCHIVES[part].format(split=split)
        archive = fetch(f"{base_url.rstrip('/')}/{name}", cache / Path(name).name, timeout, opener)
        try:
            with zipfile.ZipFile(archive) as zf:
                if part == "images":
                    _extract_dir(zf, f"{split}2017/", root / f"{split}2017")
                elif part == "annotations":
                    for s in ("train", "val"):
                        dest = root / "annotations" / f"instances_{s}2017.json"
                        if not dest.is_file():
                            _extract_file(zf, f"annotations/instances_{s}2017.json", dest)
                else:
                    _extract_file(zf, f"annotations/panoptic_{split}2017.json",
                                  root / "annotations" / f"panoptic_{split}2017.json")
                    inner = zipfile.ZipFile(io.BytesIO(zf.read(f"annotations/panoptic_{split}2017.zip")))
                    with inner:
                        _extract_dir(inner, f"panoptic_{split}2017/", root / "annotations" / f"panoptic_{split}2017")
        except (zipfile.BadZipFile, KeyError) as exc:
            archive.unlink(missing_ok=True)
            raise UserError(f"{archive}: corrupt or unexpected archive ({exc}); removed, run again") from exc
        if not keep_archives:
            archive.unlink(missing_ok=True)
        summary["downloaded"].append(part)
    still = missing_parts(root, split, panoptic)
    if still:
        raise UserError(f"COCO root {root} still lacks {', '.join(still)} after downloading")
    summary["present"] = ["images", "annotations"] + (["panoptic"] if panoptic else [])
    return summary
