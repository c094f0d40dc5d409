"""`u2seg maskcut` / `u2seg merge-masks` on synthetic shards, and the Snakemake rules end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_snakemake
from tests.maskcut.synthetic import blob_features
from u2seg.cli import main
from u2seg.coco_format import decode_mask
from u2seg.features import write_shard
from u2seg.gallery import gallery_ids

SIZE, GRID = 96, 12  # input size and patch grid (stride 8)
BOXES = [(1, 1, 6, 5), (7, 6, 11, 11)]


def _dataset(tmp: Path) -> tuple[dict, np.ndarray]:
    """Three images (two non-square scenes with two objects, one flat grey) and their features."""
    images, feats = [], []
    for image_id, (height, width, flat) in zip([11, 22, 33], [(60, 150, False), (50, 70, True), (120, 90, False)]):
        small = np.full((SIZE, SIZE, 3), 128 if flat else 120, np.uint8)
        if flat:
            feats.append(blob_features(GRID, GRID, [(5, 5, 7, 7)], noise=0.2))
        else:
            small[8:48, 8:40] = (220, 40, 40)
            small[56:88, 48:88] = (40, 40, 220)
            feats.append(blob_features(GRID, GRID, BOXES, noise=0.3, seed=image_id))
        name = f"img_{image_id}.png"
        Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST).save(tmp / name)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    manifest = {"dataset": {"kind": "images"}, "root": str(tmp), "images": images, "annotations": None}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    return manifest, np.stack(feats)


def _shard(tmp: Path, manifest: dict, feats: np.ndarray, index: int, members: slice) -> Path:
    ims = manifest["images"][members]
    path = tmp / f"shard_{index:05d}.zarr"
    write_shard(path, feats[members], np.zeros((len(ims), 4), np.float32), np.array([im["id"] for im in ims]),
                np.array([[im["height"], im["width"]] for im in ims]),
                {"backbone": "synthetic", "input_size": SIZE, "stride": SIZE // GRID, "shard_index": index})
    return path


def _maskcut(tmp: Path, shard: Path, name: str, *extra: str) -> int:
    return main(["maskcut", "--manifest", str(tmp / "manifest.json"), "--features", str(shard),
                 "--out", str(tmp / f"{name}.json"), "--gallery", str(tmp / f"{name}_gallery"),
                 "--gallery-size", "2", "--threads", "1", "--device", "cpu", *extra])


def test_maskcut_shard_json_gallery_and_merge(tmp_path):
    manifest, feats = _dataset(tmp_path)
    whole = _shard(tmp_path, manifest, feats, 0, slice(0, 3))
    assert _maskcut(tmp_path, whole, "whole") == 0
    data = json.loads((tmp_path / "whole.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "fg", "supercategory": "fg"}]
    assert [(im["id"], im["width"], im["height"]) for im in data["images"]] == [(11, 150, 60), (22, 70, 50), (33, 90, 120)]
    per_image = {im["id"]: [a for a in data["annotations"] if a["image_id"] == im["id"]] for im in data["images"]}
    assert len(per_image[11]) == 2 and len(per_image[33]) == 2
    assert per_image[22] == []  # no acceptable mask: the image stays, without annotations
    assert sorted(a["id"] for a in data["annotations"]) == [1, 2, 3, 4]
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        h, w = sizes[ann["image_id"]]
        assert ann["segmentation"]["size"] == [h, w] and isinstance(ann["segmentation"]["counts"], str)
        m = decode_mask(ann["segmentation"], h, w)
        assert ann["area"] == m.sum() > 0 and ann["category_id"] == 1 and ann["iscrowd"] == 0
    # the first object (top-left box of the 12 x 12 grid) lands top-left in the 60 x 150 original
    top_left = [a for a in per_image[11] if a["bbox"][0] < 30]
    assert len(top_left) == 1
    x, y, w, h = top_left[0]["bbox"]  # box (y0, x0, y1, x1) = (1, 1, 6, 5) of 12 x 12 -> x 12.5, y 5, w 50, h 25
    assert abs(x - 12.5) <= 3 and abs(y - 5) <= 3 and abs(w - 50) <= 4 and abs(h - 25) <= 4
    assert decode_mask(top_left[0]["segmentation"], 60, 150)[15, 30]
    assert data["stats"]["masks_per_image"] == {"11": 2, "22": 0, "33": 2}
    sample = gallery_ids([11, 22, 33], 2)
    assert sorted(p.name for p in (tmp_path / "whole_gallery").iterdir()) == sorted(f"img_{i}.png" for i in sample)

    # the same images in two shards, then merged: ids renumbered, same masks, same gallery sample
    a = _shard(tmp_path, manifest, feats, 1, slice(0, 2))
    b = _shard(tmp_path, manifest, feats, 2, slice(2, 3))
    assert _maskcut(tmp_path, a, "a") == 0 and _maskcut(tmp_path, b, "b") == 0
    rc = main(["merge-masks", "--inputs", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
               "--galleries", str(tmp_path / "a_gallery"), str(tmp_path / "b_gallery"),
               "--out", str(tmp_path / "masks.json"), "--summary", str(tmp_path / "summary.json"),
               "--gallery-out", str(tmp_path / "gallery")])
    assert rc == 0
    merged = json.loads((tmp_path / "masks.json").read_text())
    assert "stats" not in merged
    assert [ann["id"] for ann in merged["annotations"]] == [1, 2, 3, 4]
    assert [ann["segmentation"] for ann in merged["annotations"]] == [ann["segmentation"] for ann in data["annotations"]]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_images"] == 3 and summary["n_masks"] == 4
    assert summary["masks_per_image_histogram"] == {"0": 1, "2": 2}
    assert summary["images_without_masks_files"] == ["img_22.png"]
    assert summary["eigen"]["fallbacks"] == 0 and summary["eigen"]["solves"] == 9
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == sorted(f"img_{i}.png" for i in sample)

    # merging a shard twice is an error, reported without a traceback (exit code 1)
    assert main(["merge-masks", "--inputs", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                 "--out", str(tmp_path / "x.json"), "--summary", str(tmp_path / "y.json"),
                 "--gallery-out", str(tmp_path / "g")]) == 1


def test_maskcut_cli_errors(tmp_path):
    manifest, feats = _dataset(tmp_path)
    shard = _shard(tmp_path, manifest, feats, 0, slice(0, 1))
    manifest["images"][0]["width"] = 151  # the manifest no longer matches the shard
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert _maskcut(tmp_path, shard, "bad") == 1
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad_gallery").exists()
    assert _maskcut(tmp_path, tmp_path / "missing.zarr", "bad") == 1
    with pytest.raises(SystemExit):
        _maskcut(tmp_path, shard, "bad", "--solver", "arpack")


def test_snakemake_rules_from_feature_shards(tmp_path):
    """Rules `maskcut` (per shard), `merge_masks` and target `maskcut_masks` on ready feature shards
    (a workdir with a space in its path; the manifest and shards stand in for ingest + features)."""
    work = tmp_path / "work dir"
    res = work / "results"
    ds = res / "samples"
    images = ds / "images"
    images.mkdir(parents=True)
    manifest, feats = _dataset(images)
    (ds / "manifest.json").write_text(json.dumps(manifest))
    (ds / "skipped.json").write_text("[]")
    _shard(ds / "features", manifest, feats, 0, slice(0, 2))
    _shard(ds / "features", manifest, feats, 1, slice(2, 3))
    cfg = {"results": str(res), "features": {"shard_size": 2},
           "maskcut": {"gallery_size": 3, "crf": {"iterations": 5}, "device": "cpu"}}
    proc = run_snakemake(work, ["maskcut_masks"], cfg)
    assert "features_shard" not in proc.stdout + proc.stderr  # the ready shards were used
    out = ds / "maskcut"
    masks = json.loads((out / "masks.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert [im["id"] for im in masks["images"]] == [11, 22, 33]
    assert [a["id"] for a in masks["annotations"]] == [1, 2, 3, 4]
    assert summary["params"]["crf"]["iterations"] == 5 and summary["masks_per_image_histogram"] == {"0": 1, "2": 2}
    assert len(list((out / "gallery").glob("*.png"))) == 3
    for shard in ("00000", "00001"):
        assert (res / "logs" / "samples" / "maskcut" / f"shard_{shard}.log").is_file()
        assert (res / "benchmarks" / "samples" / "maskcut" / f"shard_{shard}.tsv").is_file()
