"""Images of the report: bounded gallery copies, JPEG thumbnails, cluster legends.

Gallery PNGs are copied into the report as JPEG (quality ``JPEG_QUALITY``; on the samples demo
6-8x smaller than PNG, see docs/benchmarks.md) bounded in size (at most ``MAX_PIXELS`` pixels and a long
side of at most ``MAX_SIDE``: a single 1024 x 1024 overlay, or a 320 px high multi-panel strip) and,
where the stage's panoptic json says which clusters an image shows, a legend strip (cluster id
and colour) appended below the panel. Colours follow ``u2seg.gallery``: thing cluster c
(category id 1..K) = ``palette(K)[c - 1]``, stuff cluster s (category id K + s) =
``palette(S, offset=0.31)[s - 1]``.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from u2seg.atomic import atomic_path, write_bytes
from u2seg.report.pages import esc

# Size bound of every image copied into the report (larger ones are downscaled, aspect kept).
MAX_PIXELS = 1024 * 1024
MAX_SIDE = 2048
JPEG_QUALITY = 88
GALLERY_SUFFIX = ".jpg"  # the report rules' gallery patterns: "{image}.jpg"
STUFF_PALETTE_OFFSET = 0.31  # u2seg.gallery's stuff colours


def _jpeg_data_uri(png: Path, max_width: int = 560) -> str:
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGB")
        if im.width > max_width:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(pngs: Sequence[Path], max_width: int = 560) -> str:
    figs = [f"<figure><img src='{_jpeg_data_uri(p, max_width)}' alt='{esc(p.stem)}'>"
            f"<figcaption>{esc(p.name)}</figcaption></figure>" for p in pngs]
    return "<div class='grid'>" + "".join(figs) + "</div>"


def bounded(image: np.ndarray, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``image`` (H, W, 3) uint8 downscaled (area interpolation) to at most ``max_pixels`` pixels and a
    long side of at most ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    scale = min(max_side / max(h, w), (max_pixels / (h * w)) ** 0.5)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)


def cluster_legend(segments: Sequence[dict[str, Any]], num_things: int, num_stuff: int) -> list[tuple[str, np.ndarray]]:
    """(label, colour) of every cluster in ``segments`` (COCO panoptic segments_info): thing clusters
    as ``c<id>`` (the number drawn on the instances), stuff clusters as ``s<n>``; sorted, unique."""
    from u2seg.gallery import palette

    thing_colors = palette(max(num_things, 1))
    stuff_colors = palette(max(num_stuff, 1), offset=STUFF_PALETTE_OFFSET)
    cats = sorted({int(s["category_id"]) for s in segments})
    out = []
    for c in cats:
        if c <= num_things:
            out.append((f"c{c}", thing_colors[(c - 1) % len(thing_colors)]))
        else:
            out.append((f"s{c - num_things}", stuff_colors[(c - num_things - 1) % len(stuff_colors)]))
    return out


def legend_strip(width: int, entries: Sequence[tuple[str, np.ndarray]], title: str = "clusters") -> np.ndarray:
    """A white strip ``width`` pixels wide: ``title:`` then a swatch + label per entry, wrapped over rows."""
    import cv2

    font, scale, row_h, sw = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 20, 12
    items = [(f"{title}:", None)] + [(label, color) for label, color in entries] if entries else \
        [(f"{title}: none", None)]
    rows: list[list[tuple[int, str, Any]]] = [[]]
    x = 6
    for label, color in items:
        (tw, _), _ = cv2.getTextSize(label, font, scale, 1)
        need = tw + (sw + 4 if color is not None else 0) + 10
        if rows[-1] and x + need > width:
            rows.append([])
            x = 6
        rows[-1].append((x, label, color))
        x += need
    strip = np.full((row_h * len(rows) + 4, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = r * row_h + 4
        for x0, label, color in row:
            if color is not None:
                cv2.rectangle(strip, (x0, y + 2), (x0 + sw, y + 2 + sw), tuple(int(v) for v in color), -1)
                cv2.rectangle(strip, (x0, y + 2), (x0 + sw, y + 2 + sw), (60, 60, 60), 1)
                x0 += sw + 4
            cv2.putText(strip, label, (x0, y + 13), font, scale, (30, 41, 59), 1, cv2.LINE_AA)
    return strip


def with_legend(panel: np.ndarray, entries: Sequence[tuple[str, np.ndarray]], title: str = "clusters") -> np.ndarray:
    """``panel`` with a legend strip of ``entries`` below it."""
    return np.concatenate([panel, legend_strip(panel.shape[1], entries, title)], axis=0)


def save_jpeg(path: Path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """Atomically save an (H, W, 3) uint8 image as a JPEG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality)
    write_bytes(path, buf.getvalue())


def copy_gallery(src: Path | None, dst: Path, legends: dict[str, list[tuple[str, np.ndarray]]] | None = None,
                 max_side: int = MAX_SIDE) -> list[Path]:
    """Copy the PNGs of a stage's gallery folder into ``dst`` (atomically) as JPEGs, each bounded to
    ``max_side`` / ``MAX_PIXELS`` and, when ``legends`` has an entry for its stem, with that legend below it."""
    from PIL import Image

    pngs = sorted(src.glob("*.png")) if src is not None and src.is_dir() else []
    with atomic_path(dst, directory=True) as tmp:
        for p in pngs:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
            rgb = bounded(rgb, max_side)
            if legends is not None and p.stem in legends:
                rgb = bounded(with_legend(rgb, legends[p.stem]), max_side)
            save_jpeg(tmp / (p.stem + GALLERY_SUFFIX), rgb)
    return [dst / (p.stem + GALLERY_SUFFIX) for p in pngs]
