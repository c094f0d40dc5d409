"""The Python API: ``u2seg.load_model(name_or_path)`` -> :class:`Segmenter`, called on images.

It runs the inference of ``u2seg predict`` (:func:`u2seg.detector.predict.predict_images` and
:func:`~u2seg.detector.predict.image_outputs`): the same detections, RLEs, panoptic and semantic maps.

    import u2seg
    seg = u2seg.load_model("path/to/model_final.pth")   # or a named model, e.g. "cutler-cascade"
    result = seg("photo.jpg")                           # a path, PIL image or HxWx3 uint8 array (or a list)
    result.instances.masks, result.panoptic, result.semantic
    PIL.Image.fromarray(result.draw()).save("overlay.png")
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from u2seg.detector.params import PredictConfig

log = logging.getLogger(__name__)


@dataclass
class Instances:
    """Detections of one image at its original size (COCO results order: the detector's)."""

    boxes: np.ndarray  # (N, 4) float32 x0 y0 x1 y1
    scores: np.ndarray  # (N,) float32
    category_ids: np.ndarray  # (N,) int64, 1..K (cluster c = id - 1)
    names: list[str]  # category name of each detection
    rles: list[dict[str, Any]]  # COCO compressed RLE of each mask

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def masks(self) -> np.ndarray:
        """(N, H, W) bool masks (decoded from the RLEs)."""
        from u2seg.coco_format import decode_mask

        if not self.rles:
            return np.zeros((0, 0, 0), dtype=bool)
        h, w = self.rles[0]["size"]
        return np.stack([decode_mask(r, h, w) for r in self.rles])


@dataclass
class SegmentResult:
    """One image's instances, panoptic map (+ segments) and semantic map, as ``u2seg predict`` writes them."""

    instances: Instances
    panoptic: np.ndarray  # int32 (H, W) segment ids, 0 = void
    segments: list[dict[str, Any]]  # COCO panoptic segments_info (id, category_id, isthing, area, bbox, score)
    semantic: np.ndarray | None  # uint8 (H, W) stuff class per pixel (0 = things / none), None without a head
    results: list[dict[str, Any]]  # the COCO instance results (as instances_results.json), image_id 0
    num_things: int
    num_stuff: int
    source: Any = field(repr=False, default=None)  # the input (path or array), for draw()

    def image(self) -> np.ndarray:
        """The RGB image this result is for (read again from its path)."""
        from u2seg.images import as_rgb, load_rgb

        return load_rgb(self.source) if isinstance(self.source, (str, os.PathLike)) else as_rgb(self.source)

    def draw(self, image: np.ndarray | None = None, score_thresh: float | None = None) -> np.ndarray:
        """Overlay: image | instances (cluster ids + scores) | panoptic | semantic, with a legend."""
        from u2seg.segment.draw import draw

        return draw(self.image() if image is None else image, self, score_thresh)


class Segmenter:
    """A loaded model; call it on an image or a list of images."""

    def __init__(self, model: Any, obj: dict[str, Any], device: Any, config: PredictConfig, path: Path):
        from u2seg.detector.predict import categories

        self.model, self.obj, self.device, self.config, self.path = model, obj, device, config, path
        self.categories = categories(obj)
        cfg = obj["model_config"]
        self.num_things, self.num_stuff = int(cfg["num_classes"]), int(cfg["num_stuff"])
        self.names = {int(c["id"]): str(c["name"]) for c in self.categories}

    def __repr__(self) -> str:
        return (f"Segmenter({str(self.path)!r}, K={self.num_things}, S={self.num_stuff}, device={self.device}, "
                f"test size {self.config.min_size}/{self.config.max_size})")

    def __call__(self, images: Any, progress: bool = False) -> SegmentResult | list[SegmentResult]:
        """Segment one image (a path, PIL image or numpy array) -> a result; a list -> a list of results."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        results = list(self.segment(items, progress=progress))
        return results[0] if single else results

    def segment(self, images: Sequence[Any], progress: bool = False):
        """Yield a :class:`SegmentResult` per image, in order (images read one batch at a time)."""
        from PIL import Image

        from u2seg.detector.predict import image_outputs, predict_images
        from u2seg.images import as_rgb

        sources = [img if isinstance(img, (str, os.PathLike)) else as_rgb(img) if isinstance(
            img, (np.ndarray, Image.Image)) else _bad_input(img) for img in images]
        for i, pred in predict_images(self.model, sources, self.config, self.device, progress, what="segment"):
            out = image_outputs(pred, 0, self.num_things, self.config)
            yield self.result(pred, out, images[i] if isinstance(images[i], (str, os.PathLike)) else sources[i])

    def result(self, pred: Any, outputs: Any, source: Any = None) -> SegmentResult:
        """The :class:`SegmentResult` of a prediction and its written outputs (``u2seg.detector.predict``'s
        ``Prediction`` and ``ImageOutputs``)."""
        ids = pred.labels + 1
        inst = Instances(pred.boxes, pred.scores, ids, [self.names.get(int(c), str(c)) for c in ids],
                         [r["segmentation"] for r in outputs.results])
        return SegmentResult(inst, outputs.panoptic, outputs.segments, outputs.semantic, outputs.results,
                             self.num_things, self.num_stuff, source)


def _bad_input(img: Any) -> None:
    from u2seg.errors import UserError

    raise UserError(f"an image must be a path, a PIL image or a numpy array, not {type(img).__name__}")


def predict_config(obj: dict[str, Any], **overrides: Any) -> PredictConfig:
    """Inference settings: the model file's test size, then ``overrides`` (None values ignored)."""
    from u2seg.detector.checkpoint import model_test_size

    values = {**model_test_size(obj), **{k: v for k, v in overrides.items() if v is not None}}
    return dataclasses.replace(PredictConfig(), **values)


def load_model(name_or_path: str | os.PathLike, device: str = "auto", progress: bool = True,
               **overrides: Any) -> Segmenter:
    """A :class:`Segmenter` for a model name (:data:`u2seg.segment.models.MODELS`, downloaded on first use)
    or a model file path; ``overrides`` are :class:`~u2seg.detector.params.PredictConfig` fields
    (``min_size``, ``max_size``, ``batch_size``, ``score_thresh``, ...; default: the model's own)."""
    from u2seg.detector.predict import load_model as load_weights
    from u2seg.device import resolve_device
    from u2seg.segment.models import resolve_model

    path = resolve_model(name_or_path, progress=progress)
    dev = resolve_device(device)
    model, obj = load_weights(path, dev)
    cfg = predict_config(obj, device=device, **overrides)
    log.info("loaded %s (K=%s) on %s", path, obj["model_config"]["num_classes"], dev)
    return Segmenter(model, obj, dev, cfg, path)
