"""The CPU half of ``u2seg maskcut`` for one image, torch-free (runs inline or in a CPU worker process).

The shard loop (:mod:`u2seg.maskcut.shard`) runs the accelerator half (``patch_masks_batch``) on a batch
and hands each image's patch masks to :func:`finish_shard_image`: read and resize the image (when the
CRF or the gallery needs it), CRF-refine, filter and resize the masks (:func:`finish_image`), encode them
as COCO RLE annotations and write the gallery overlay. Only the small patch masks go in and the RLE
annotations come out, so a worker process costs little to feed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from u2seg.atomic import save_png
from u2seg.coco_format import instance_annotation
from u2seg.errors import UserError
from u2seg.gallery import overlay
from u2seg.images import load_rgb, resize_square
from u2seg.maskcut.params import MaskCutParams
from u2seg.maskcut.refine import Timer, finish_image


@dataclass(frozen=True)
class ImageJob:
    """What the CPU half needs to know about one image of the shard (picklable)."""

    image_id: int
    file_name: str
    path: str  # the image file
    width: int  # original size (manifest)
    height: int
    input_size: int  # the square size the features were computed at
    gallery_png: str | None = None  # where to write the overlay PNG (None: not in the gallery sample)


def finish_shard_image(job: ImageJob, patch: Sequence[np.ndarray], params: MaskCutParams
                       ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Patch masks of one image -> its COCO annotations (``id`` 0: the caller numbers them) and the
    seconds spent per step (read_images, crf, resize, encode, gallery)."""
    timer = Timer()
    rgb = resized = None
    if params.crf.enabled or job.gallery_png is not None:
        with timer.time("read_images"):
            rgb = load_rgb(job.path)
            if rgb.shape[:2] != (job.height, job.width):
                raise UserError(f"{job.file_name}: size changed since ingestion "
                                f"({rgb.shape[1]}x{rgb.shape[0]} vs {job.width}x{job.height})")
            if params.crf.enabled:
                resized = resize_square(rgb, job.input_size)
    masks = finish_image(patch, resized, job.input_size, job.width, job.height, params, timer)
    with timer.time("encode"):
        annotations = [instance_annotation(m, 0, job.image_id, 1) for m in masks]
    if job.gallery_png is not None and rgb is not None:
        with timer.time("gallery"):
            save_png(job.gallery_png, overlay(rgb, masks))
    return annotations, dict(timer.seconds)
