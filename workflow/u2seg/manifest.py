"""The dataset manifest: a COCO-style ``images`` list plus where the files live."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class LoadedManifest(os.PathLike):
    """A manifest already read, passed where a manifest path is expected: the fused pass (``u2seg
    shard-pass``) hands its one copy to MaskCut, embed and stego infer instead of each reading the file again
    (1.6 CPU-s and 550 MiB per copy at 1.28M images). It is its path for messages and ``os.fspath``; its
    content for :func:`load_manifest`."""

    def __init__(self, path: str | Path, data: dict[str, Any]):
        self.path, self.data = Path(path), data

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def load_manifest(path: str | Path | LoadedManifest) -> dict[str, Any]:
    """Read a manifest written by ``u2seg ingest`` (a :class:`LoadedManifest` gives its content as it is)."""
    if isinstance(path, LoadedManifest):
        return path.data
    with open(path) as fh:
        manifest = json.load(fh)
    for key in ("root", "images"):
        if key not in manifest:
            raise ValueError(f"{path}: not a u2seg manifest (missing {key!r})")
    return manifest


def image_path(manifest: dict[str, Any], image: dict[str, Any]) -> Path:
    """Absolute path of one manifest image."""
    return Path(manifest["root"]) / image["file_name"]


def num_shards(manifest: dict[str, Any], shard_size: int) -> int:
    """Number of feature shards of ``shard_size`` images."""
    return (len(manifest["images"]) + shard_size - 1) // shard_size


def shard_images(manifest: dict[str, Any], shard_index: int, shard_size: int) -> list[dict[str, Any]]:
    """The manifest images of shard ``shard_index`` (``images[i*S:(i+1)*S]``)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if not 0 <= shard_index < max(num_shards(manifest, shard_size), 1):
        raise ValueError(f"shard {shard_index} out of range for {len(manifest['images'])} images")
    return manifest["images"][shard_index * shard_size:(shard_index + 1) * shard_size]


def image_stem(image: dict[str, Any]) -> str:
    """File-name stem used for per-image outputs (PNG names), unique within a manifest.

    Derived from ``file_name`` (``sub/a.jpg`` -> ``sub__a``) unless ingestion stored an explicit
    ``stem`` because two derived stems would collide (``a.jpg`` and ``a.png``; see assign_stems).
    """
    if image.get("stem"):
        return str(image["stem"])
    return _derived_stem(image)


def _derived_stem(image: dict[str, Any]) -> str:
    return Path(image["file_name"]).with_suffix("").as_posix().replace("/", "__")


def assign_stems(images: list[dict[str, Any]]) -> None:
    """Make :func:`image_stem` unique (also case-insensitively) over ``images``, in place.

    The first image keeps its derived stem; a later one whose stem collides gets an explicit
    ``stem`` = derived stem + ``__id{id}``. Images without a collision are left unchanged
    (COCO file names never collide), so the manifest stays the same for ordinary datasets.
    """
    seen: set[str] = set()
    for image in images:
        stem = image_stem(image)
        if stem.casefold() in seen:
            base, n = f"{_derived_stem(image)}__id{image['id']}", 1
            stem = base
            while stem.casefold() in seen:
                n += 1
                stem = f"{base}_{n}"
            image["stem"] = stem
        seen.add(stem.casefold())
