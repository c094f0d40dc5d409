"""Streamed writing of large COCO jsons (one shard in memory at a time).

The writer puts ``{"info":...,"images":[`` and every image into the output file as it reads them, the
annotations into a spill file (an unnamed temporary beside the output), then :func:`finish` appends
the spill and the categories. Image ids are kept as 8-byte integers (``array("q")``) and checked for
duplicates at the end (:func:`first_duplicate`).
"""
from __future__ import annotations

import json
import os
import shutil
from array import array
from typing import IO, Any

import numpy as np


def dump(obj: Any) -> str:
    """Compact json (the separators of ``u2seg.atomic.write_json``)."""
    return json.dumps(obj, separators=(",", ":"))


def finish(fh: IO[str], spill: IO[str], categories: list[dict[str, Any]]) -> None:
    """Close the images list, append the spilled annotations and the categories; flush to disk."""
    fh.write('],"annotations":[')
    spill.flush()
    spill.seek(0)
    shutil.copyfileobj(spill, fh, 1 << 20)
    fh.write('],"categories":' + dump(categories) + "}\n")
    fh.flush()
    os.fsync(fh.fileno())


def first_duplicate(ids: array) -> int | None:
    """The smallest id that occurs more than once, or None."""
    uniq, counts = np.unique(np.frombuffer(ids, dtype=np.int64), return_counts=True)
    dup = uniq[counts > 1]
    return int(dup[0]) if len(dup) else None
