"""Manifest building for folders, samples and COCO; skipped files are listed, never dropped silently."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import COCO_MINI, require_shared
from u2seg import ingest
from u2seg.errors import UserError


def _make_folder(root, n_good=4, n_bad=1):
    (root / "sub").mkdir(parents=True)
    for i in range(n_good):
        Image.fromarray(np.full((30 + i, 40, 3), i * 40, np.uint8)).save(root / ("sub" if i % 2 else "") / f"img{i}.png")
    for i in range(n_bad):
        (root / f"bad{i}.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    (root / ".hidden").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / ".hidden" / "x.png")


def test_folder_manifest_and_skipped(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root)
    manifest, skipped = ingest.build_manifest("images", root)
    names = [im["file_name"] for im in manifest["images"]]
    assert names == sorted(names) and set(names) == {"img0.png", "sub/img1.png", "img2.png", "sub/img3.png"}
    assert [im["id"] for im in manifest["images"]] == sorted(im["id"] for im in manifest["images"])
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in manifest["images"]}
    assert sizes["sub/img3.png"] == (40, 33)
    assert skipped == [{"file_name": "bad0.jpg", "reason": "empty file (0 bytes)"}]


def test_cli_fails_when_too_many_skipped(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root, n_good=2, n_bad=2)
    args = ["ingest", "--kind", "images", "--root", str(root), "--max-skipped-fraction", "0.25",
            "--manifest", str(tmp_path / "m.json"), "--skipped", str(tmp_path / "s.json")]
    from u2seg.cli import main

    assert main(args) == 1  # 2 of 4 unreadable > 25 %
    assert not (tmp_path / "m.json").exists()
    assert len(json.loads((tmp_path / "s.json").read_text())["skipped"]) == 2
    args[args.index("0.25")] = "0.5"
    assert main(args) == 0
    assert len(json.loads((tmp_path / "m.json").read_text())["images"]) == 2


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        ingest.build_manifest("images", tmp_path / "nope")


def test_samples_are_real_photos(tmp_path):
    manifest, skipped = ingest.build_manifest("samples", tmp_path, samples_dir=tmp_path / "s")
    names = {im["file_name"] for im in manifest["images"]}
    assert {"astronaut.png", "chelsea.png", "coffee.png", "rocket.png"} <= names
    chelsea = next(im for im in manifest["images"] if im["file_name"] == "chelsea.png")
    assert (chelsea["width"], chelsea["height"]) == (451, 300)
    assert not skipped


def test_coco_split_with_limit():
    root = require_shared(COCO_MINI)
    manifest, skipped = ingest.build_manifest("coco", root, split="val", limit=5)
    gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    first5 = sorted(gt["images"], key=lambda im: im["id"])[:5]
    assert [im["id"] for im in manifest["images"]] == [im["id"] for im in first5]
    for mine, theirs in zip(manifest["images"], first5):
        assert (mine["width"], mine["height"]) == (theirs["width"], theirs["height"])
    assert manifest["annotations"].endswith("instances_val2017.json")
    assert manifest["panoptic"] is None and not skipped


def test_coco_missing_annotations(tmp_path):
    (tmp_path / "val2017").mkdir()
    with pytest.raises(UserError, match="instances_val2017.json"):
        ingest.build_manifest("coco", tmp_path, split="val")
