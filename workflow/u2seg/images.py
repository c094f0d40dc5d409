"""Robust image reading: EXIF orientation, any mode -> RGB uint8, clear errors for bad files."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from u2seg.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


class ImageReadError(UserError):
    """An image file that cannot be used; the message is the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, 1, ...) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            arr = arr / 65535.0 * 255.0
        elif img.mode == "I":
            arr = arr / max(arr.max(), 1.0) * 255.0 if arr.max() > 255 else arr
        else:  # float images: assume [0, 1] when in range, else rescale by max
            arr = arr * 255.0 if arr.max() <= 1.0 else arr / max(arr.max(), 1e-12) * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


@contextmanager
def _decoded(path: Path, max_side: int) -> Iterator[Image.Image]:
    """The fully decoded PIL image of ``path``; every way of failing becomes an ImageReadError.

    Empty, unreadable, too large (decompression-bomb guard: a side > ``max_side``), not an image,
    truncated or corrupt files; errors raised by the caller's ``with`` body map the same way.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max(width, height) > max_side:
                    raise ImageReadError(
                        f"{path}: {width}x{height} px exceeds max_side={max_side} (decompression-bomb guard)")
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                img.load()
                yield img
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{path}: too many pixels (decompression-bomb guard: {exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from exc


def _check_min_side(path: Path, width: int, height: int, min_side: int) -> None:
    if min(width, height) < min_side:
        raise ImageReadError(f"{path}: {width}x{height} px is smaller than min_side={min_side}")


def probe_image(path: str | Path, max_side: int = 20000, min_side: int = 1) -> tuple[int, int]:
    """(width, height) after EXIF orientation, with the checks of :func:`load_rgb`, at less memory.

    The image is decoded in full (a truncated or corrupt file fails as in :func:`load_rgb`), but no
    oriented copy, RGB conversion or numpy array is made: ingest's peak is one decoded image
    (9000 x 8000 JPEG: 304 MiB vs 992 MiB through load_rgb, measured with 2 threads).
    """
    path = Path(path)
    with _decoded(path, max_side) as img:
        width, height = img.size
        if img.getexif().get(0x0112) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
    _check_min_side(path, width, height, min_side)
    return width, height


def load_rgb(path: str | Path, max_side: int = 20000, min_side: int = 1) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3) with its EXIF orientation applied.

    Raises ImageReadError (with the reason) for empty, truncated, corrupt, non-image,
    too large (decompression-bomb guard: a side > ``max_side``) or too small images.
    """
    path = Path(path)
    with _decoded(path, max_side) as img:
        arr = np.array(_to_rgb(ImageOps.exif_transpose(img)), dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(f"{path}: unexpected decoded shape {arr.shape}")
    _check_min_side(path, arr.shape[1], arr.shape[0], min_side)
    return arr


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """LANCZOS resize to ``size`` x ``size`` (aspect ratio not kept, as MaskCut does; docs/method.md §2.1)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a PIL image (EXIF orientation applied, any mode, as :func:`load_rgb`) or of
    a numpy image ((H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or uint16 / float as PIL reads them)."""
    if isinstance(image, Image.Image):
        return np.array(_to_rgb(ImageOps.exif_transpose(image)), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.ndim == 2 and arr.dtype in (np.uint8, np.uint16, np.int32, np.float32, np.float64):
        # PIL modes L, I;16, I, F: converted as a decoded file of that mode
        return np.array(_to_rgb(Image.fromarray(arr.astype(np.float32) if arr.dtype.kind == "f" else arr)),
                        dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8:
        return np.array(_to_rgb(Image.fromarray(arr, mode="RGBA")), dtype=np.uint8)
    raise UserError(f"an image array must be (H, W), (H, W, 3) uint8 or (H, W, 4) uint8, got "
                    f"{arr.shape} {arr.dtype}")
