"""Ingestion of every odd image kind: converted to RGB or refused with a reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from u2seg.images import ImageReadError, load_rgb, probe_image, resize_square


def _photo(h: int = 40, w: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w)[None, :]
    img[..., 1] = np.linspace(0, 255, h)[:, None]
    img[..., 2] = rng.integers(0, 255, (h, w))
    return img


def test_rgb_jpeg(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(_photo()).save(p, quality=95)
    arr = load_rgb(p)
    assert arr.shape == (40, 60, 3) and arr.dtype == np.uint8


def test_grayscale_png(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(_photo()[..., 0], mode="L").save(p)
    arr = load_rgb(p)
    assert arr.shape == (40, 60, 3)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], _photo()[..., 0])


def test_rgba_composited_on_white(tmp_path):
    p = tmp_path / "rgba.png"
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red-ish, bottom transparent
    Image.fromarray(rgba, mode="RGBA").save(p)
    arr = load_rgb(p)
    assert arr.shape == (10, 10, 3)
    assert tuple(arr[0, 0]) == (200, 0, 0)
    assert tuple(arr[9, 9]) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo()).convert("CMYK").save(p, quality=95)
    with Image.open(p) as im:
        assert im.mode == "CMYK"
    arr = load_rgb(p)
    assert arr.shape == (40, 60, 3)
    assert abs(int(arr[..., 0].mean()) - int(_photo()[..., 0].mean())) < 20


def test_16bit_png(tmp_path):
    p = tmp_path / "deep.png"
    deep = (np.linspace(0, 65535, 50 * 30).reshape(30, 50)).astype(np.uint16)
    Image.fromarray(deep).save(p)
    with Image.open(p) as im:
        assert im.mode.startswith("I")
    arr = load_rgb(p)
    assert arr.shape == (30, 50, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255


def test_exif_rotation_applied(tmp_path):
    p = tmp_path / "rot.jpg"
    img = Image.fromarray(_photo(20, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    img.save(p, exif=exif, quality=95)
    arr = load_rgb(p)
    assert arr.shape == (80, 20, 3)  # displayed as portrait


def test_palette_png(tmp_path):
    p = tmp_path / "pal.png"
    Image.fromarray(_photo()).convert("P").save(p)
    assert load_rgb(p).shape == (40, 60, 3)


@pytest.mark.parametrize("kind", ["empty", "truncated", "not_an_image", "tiny", "huge"])
def test_bad_images_refused_with_reason(tmp_path, kind):
    p = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        p.write_bytes(b"")
        expected = "empty"
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(_photo(200, 200)).save(buf, format="JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        expected = "truncated"
    elif kind == "not_an_image":
        p.write_text("this is a text file, not a JPEG\n")
        expected = "not a recognised image"
    elif kind == "tiny":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(p.with_suffix(".png"))
        p = p.with_suffix(".png")
        expected = "smaller than min_side"
    else:
        Image.new("L", (20001, 2)).save(p.with_suffix(".png"))
        p = p.with_suffix(".png")
        expected = "decompression-bomb"
    with pytest.raises(ImageReadError, match=expected):
        load_rgb(p, max_side=20000, min_side=8)
    with pytest.raises(ImageReadError, match=expected):  # ingest's probe refuses it for the same reason
        probe_image(p, max_side=20000, min_side=8)


@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 7, 8])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK", "I;16"])
def test_probe_gives_the_size_load_rgb_decodes(tmp_path, orientation, mode):
    """Ingest's probe (no RGB copy) reports exactly the (width, height) of load_rgb's array."""
    img = Image.fromarray(_photo(20, 52))
    img = img.convert(mode) if mode != "I;16" else Image.fromarray(_photo(20, 52)[..., 0].astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / ("x.jpg" if mode in ("RGB", "L", "CMYK") else "x.png")
    img.save(p, exif=exif)
    arr = load_rgb(p)
    assert probe_image(p) == (arr.shape[1], arr.shape[0])


def test_resize_square():
    out = resize_square(_photo(40, 60), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
