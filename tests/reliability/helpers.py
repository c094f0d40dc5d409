"""Helpers of the reliability tests: odd image files, digests, comparing the outputs of two runs.

The runs themselves go through tests/snakemake_runner.py with tests/configs/small.yaml."""
from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def digests(root: Path, suffixes: tuple[str, ...] = (".json", ".png"), exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``root`` with one of ``suffixes`` (relative posix path -> hex)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.suffix in suffixes and not any(rel.startswith(e) or rel == e for e in exclude):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------ odd images
def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with some structure (a disc on a gradient) and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * xx / max(w - 1, 1)
    img[..., 1] = 255 * yy / max(h - 1, 1)
    img[..., 2] = 80
    disc = (yy - h * 0.55) ** 2 + (xx - w * 0.45) ** 2 < (min(h, w) * 0.3) ** 2
    img[disc] = (230, 40, 40)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _exif_rotated_jpeg(path: Path) -> None:
    """A 64x40 (w x h) JPEG with EXIF Orientation=6: displayed (and ingested) as 40x64."""
    img = Image.fromarray(_photo(40, 64, seed=3))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif.tobytes())


# file name -> (kind, expected): expected is ("ok", (width, height)) or ("skip", reason substring)
ODD_IMAGES: dict[str, tuple[str, tuple[str, Any]]] = {
    "photo_rgb.jpg": ("RGB JPEG", ("ok", (96, 72))),
    "photo_rgb.png": ("RGB PNG", ("ok", (80, 80))),
    "gray.png": ("grayscale (L)", ("ok", (72, 56))),
    "rgba.png": ("RGBA", ("ok", (64, 64))),
    "cmyk.jpg": ("CMYK JPEG", ("ok", (64, 48))),
    "depth16.png": ("16-bit grayscale PNG (I;16)", ("ok", (60, 60))),
    "palette.png": ("palette with transparency (P)", ("ok", (48, 48))),
    "exif_rotated.jpg": ("EXIF Orientation=6", ("ok", (40, 64))),
    "small_12x12.png": ("smaller than a 16 px patch, >= min_side", ("ok", (12, 12))),
    "sub dir/nested.png": ("in a sub-folder with a space", ("ok", (50, 70))),
    "zero.jpg": ("zero bytes", ("skip", "empty file (0 bytes)")),
    "truncated.jpg": ("truncated JPEG", ("skip", "truncated")),
    "not_an_image.png": ("text with an image extension", ("skip", "not a recognised image format")),
    "tiny_1x1.png": ("1x1", ("skip", "smaller than min_side=8")),
    "thin_5x40.png": ("one side below min_side", ("skip", "smaller than min_side=8")),
    "bomb_30000.png": ("30000x30000 px header", ("skip", "decompression-bomb")),
    "wide_20001.png": ("20001 px wide header", ("skip", "exceeds max_side=20000")),
}


def make_odd_images(root: Path) -> None:
    """Write every file of ODD_IMAGES (plus ignored extras) into ``root``."""
    (root / "sub dir").mkdir(parents=True, exist_ok=True)
    Image.fromarray(_photo(72, 96, 1)).save(root / "photo_rgb.jpg", quality=92)
    Image.fromarray(_photo(80, 80, 2)).save(root / "photo_rgb.png")
    Image.fromarray(_photo(56, 72, 4)[..., 0], mode="L").save(root / "gray.png")
    rgba = np.dstack([_photo(64, 64, 5), np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(_photo(48, 64, 6)).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    depth = (np.linspace(0, 65535, 60 * 60).reshape(60, 60)).astype(np.uint16)
    Image.fromarray(depth).save(root / "depth16.png")
    pal = Image.fromarray(_photo(48, 48, 7)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    _exif_rotated_jpeg(root / "exif_rotated.jpg")
    Image.fromarray(_photo(12, 12, 8)).save(root / "small_12x12.png")
    Image.fromarray(_photo(70, 50, 9)).save(root / "sub dir" / "nested.png")
    (root / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_photo(64, 64, 10)).save(buf, format="JPEG", quality=92)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "not_an_image.png").write_text("this is not a PNG\n")
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(root / "tiny_1x1.png")
    Image.fromarray(_photo(40, 5, 11)).save(root / "thin_5x40.png")
    (root / "bomb_30000.png").write_bytes(_png_header_only(30000, 30000))
    (root / "wide_20001.png").write_bytes(_png_header_only(20001, 100))
    # ignored: not an image suffix, hidden
    (root / "notes.txt").write_text("not an image suffix: ignored\n")
    Image.fromarray(_photo(20, 20)).save(root / ".hidden.png")


def expected_split() -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """({file: (width, height)} of the ingested images, {file: reason substring} of the skipped)."""
    ok = {f: exp[1] for f, (_, exp) in ODD_IMAGES.items() if exp[0] == "ok"}
    skip = {f: exp[1] for f, (_, exp) in ODD_IMAGES.items() if exp[0] == "skip"}
    return ok, skip


# ------------------------------------------------------------------------------ comparing outputs
# Keys holding wall-clock measurements: the only values allowed to differ between equivalent runs.
TIMING_KEYS = frozenset({"time", "data_time", "elapsed"})


def is_timing_key(key: str) -> bool:
    return isinstance(key, str) and (key in TIMING_KEYS or key.startswith("seconds") or key.endswith("_seconds"))


def strip_timing(obj: Any) -> Any:
    """``obj`` without timing keys (recursively)."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if not is_timing_key(k)}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def _tensors_equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = strip_timing_shallow(a), strip_timing_shallow(b)
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def strip_timing_shallow(d: dict) -> dict:
    return {k: v for k, v in d.items() if not is_timing_key(k)}


def _npz_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal arrays; a 0-d string holding JSON metadata may differ in timing keys only."""
    if np.array_equal(a, b):
        return True
    if a.ndim == b.ndim == 0 and a.dtype.kind == b.dtype.kind == "U":
        import json

        try:
            return strip_timing(json.loads(str(a))) == strip_timing(json.loads(str(b)))
        except ValueError:
            return False
    return False


def compare_trees(a: Path, b: Path, strict_bytes: tuple[str, ...] = (".png", ".npy")) -> tuple[list[str], list[str]]:
    """Compare every output file under ``a`` and ``b`` (same relative paths).

    Bytes must be equal, except: json / jsonl may differ only in TIMING_KEYS; .npz (zip timestamps)
    and .pth (pickle layout) are compared by content; zarr stores by arrays and attrs (minus timing).
    Logs, benchmarks and Snakemake's own files are ignored. Returns (differences, timing-only files).
    """
    import json

    import torch
    import zarr

    def files(root: Path) -> set[str]:
        out = set()
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if any(part.endswith(".zarr") for part in rel.parts[:-1]):
                continue  # compared as a store
            if p.is_dir() and p.suffix == ".zarr" or p.is_file() and p.suffix in (
                    ".json", ".jsonl", ".png", ".npy", ".npz", ".pth"):
                out.add(rel.as_posix())
        return out

    fa, fb = files(a), files(b)
    diffs = [f"only in one run: {x}" for x in sorted(fa ^ fb)]
    timing_only = []
    for rel in sorted(fa & fb):
        pa, pb = a / rel, b / rel
        if pa.is_dir():  # zarr store
            ga, gb = zarr.open_group(str(pa), mode="r"), zarr.open_group(str(pb), mode="r")
            if strip_timing(dict(ga.attrs)) != strip_timing(dict(gb.attrs)):
                diffs.append(f"{rel}: attrs differ")
            with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp inside directory outputs
                warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
                names = sorted(set(ga.array_keys()) | set(gb.array_keys()))
            for name in names:
                if name not in ga or name not in gb or not np.array_equal(ga[name][:], gb[name][:]):
                    diffs.append(f"{rel}/{name}: arrays differ")
            continue
        if pa.read_bytes() == pb.read_bytes():
            continue
        if pa.suffix in strict_bytes:
            diffs.append(f"{rel}: bytes differ")
        elif pa.suffix == ".json":
            same = strip_timing(json.loads(pa.read_text())) == strip_timing(json.loads(pb.read_text()))
            (timing_only if same else diffs).append(rel if same else f"{rel}: content differs")
        elif pa.suffix == ".jsonl":
            ra = [strip_timing(json.loads(line)) for line in pa.read_text().splitlines()]
            rb = [strip_timing(json.loads(line)) for line in pb.read_text().splitlines()]
            (timing_only if ra == rb else diffs).append(rel if ra == rb else f"{rel}: rows differ")
        elif pa.suffix == ".npz":
            with np.load(pa, allow_pickle=False) as za, np.load(pb, allow_pickle=False) as zb:
                if set(za.files) != set(zb.files) or any(not _npz_equal(za[k], zb[k]) for k in za.files):
                    diffs.append(f"{rel}: arrays differ")
        elif pa.suffix == ".pth":
            if not _tensors_equal(torch.load(pa, weights_only=True), torch.load(pb, weights_only=True)):
                diffs.append(f"{rel}: tensors differ")
        else:
            diffs.append(f"{rel}: bytes differ")
    return diffs, timing_only
