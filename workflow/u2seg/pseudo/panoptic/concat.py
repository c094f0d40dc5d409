"""Concatenation (``u2seg concat-panoptic``) of the per-shard panoptic merges -> the dataset's COCO panoptic json, its
PNG folders, gallery and summary (the same paths and formats as ``u2seg merge-panoptic``).

Streaming: one shard json in memory at a time (images written as read, annotations through a spill
file appended after them); PNGs are hard-linked from the shard folders (copied where links are not
possible), so the folders cost no second copy on disk. Beyond one shard, memory holds 8 bytes per
image (the ids, checked for duplicates). Shards are found as ``--shards-dir/shard_{i:05d}.json`` and
``shard_{i:05d}/`` for i < ``--num-shards`` (no command line that grows with the dataset).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from u2seg.atomic import atomic_path, write_json
from u2seg.errors import UserError
from u2seg.jsonio import load_json
from u2seg.pseudo.panoptic.dataset import COUNTS, add_counts, add_source_summaries, summary_of
from u2seg.pseudo.panoptic.outputs import PanopticOutputs
from u2seg.streamjson import dump, finish, first_duplicate

log = logging.getLogger(__name__)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def concat_shards(*, shards_dir: Path, num_shards: int, k: int, num_stuff: int, max_thing_overlap: float,
                  out: PanopticOutputs) -> int:
    """``u2seg concat-panoptic``: stream the per-shard merges into the dataset's outputs."""
    t_start = time.perf_counter()
    if num_shards < 1:
        raise UserError(f"--num-shards must be >= 1, got {num_shards}")
    paths = [shards_dir / f"shard_{i:05d}.json" for i in range(num_shards)]
    missing = [p for p in paths if not p.is_file() or not p.with_suffix("").is_dir()]
    if missing:
        raise UserError(f"{len(missing)} panoptic shard(s) missing, e.g. {missing[0]} (run merge_panoptic_shard)")
    totals: dict[str, Any] = {key: 0 for key in COUNTS}
    ids = array("q")
    gallery: list[str] = []
    scopes: set[str] = set()
    seconds = 0.0
    categories = info = None
    out.json.parent.mkdir(parents=True, exist_ok=True)
    # the json is renamed into place last (outermost): it only exists once the PNG folders do
    with atomic_path(out.json) as tmp, atomic_path(out.panoptic, directory=True) as pano, \
            atomic_path(out.semantic, directory=True) as sem, atomic_path(out.gallery, directory=True) as gal, \
            tempfile.TemporaryFile("w+", dir=out.json.parent) as spill, open(tmp, "w") as fh:
        first = True
        for path in paths:
            shard = load_json(path)
            if categories is None:
                categories, info = shard["categories"], shard["info"]
                fh.write('{"info":' + dump(info) + ',"images":[')
            elif shard["categories"] != categories:
                raise UserError(f"{path}: categories differ from shard 0's (mixed clustering.k / stuff.k?): "
                                "rerun merge_panoptic_shard")
            folder = path.with_suffix("")
            if len(shard["images"]) != len(shard["annotations"]):
                raise UserError(f"{path}: {len(shard['images'])} images but {len(shard['annotations'])} annotations")
            for im, ann in zip(shard["images"], shard["annotations"]):
                ids.append(int(im["id"]))
                fh.write(("" if first else ",") + dump(im))
                spill.write(("" if first else ",") + dump(ann))
                first = False
                link_or_copy(folder / "panoptic" / ann["file_name"], pano / ann["file_name"])
                link_or_copy(folder / "semantic" / ann["file_name"], sem / ann["file_name"])
            for name in shard["stats"]["gallery"]:
                link_or_copy(folder / "gallery" / name, gal / name)
            gallery += shard["stats"]["gallery"]
            scopes.add(shard["stats"]["segment_ids"])
            seconds += float(shard["stats"].get("seconds", 0.0))
            totals = add_counts(totals, shard["stats"])
        finish(fh, spill, categories)
        dup = first_duplicate(ids)
        if dup is not None:
            raise UserError(f"image id {dup} is in more than one panoptic shard")
    summary = summary_of(totals, k, num_stuff, max_thing_overlap, gallery,
                         seconds + time.perf_counter() - t_start)
    summary["segment_ids"] = "unique in the dataset" if scopes == {"dataset"} else "unique within each shard"
    add_source_summaries(summary, out.cluster_summary, out.stuff_summary)
    write_json(out.summary, summary, indent=1)
    log.info("panoptic: %d shards, %d images (%d without instances), %d/%d instances visible", num_shards,
             summary["images"], summary["images_without_instances"], summary["visible_instances"],
             summary["instances"])
    return 0
