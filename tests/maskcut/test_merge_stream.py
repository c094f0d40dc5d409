"""`u2seg merge-masks --shards-dir`: the streamed merge equals the plain concatenation, errors name the shard."""
from __future__ import annotations

import json
from pathlib import Path

from u2seg.cli import main


def _shard(i: int, n_images: int, masks_per_image: int, params: dict | None = None) -> dict:
    images = [{"id": 100 * i + j, "file_name": f"s{i}_{j}.jpg", "width": 10 + j, "height": 8} for j in range(n_images)]
    anns = [{"id": k + 1, "image_id": im["id"], "category_id": 1, "iscrowd": 0, "area": 4 + k,
             "bbox": [0.0, 0.0, 2.0, 2.0], "segmentation": {"size": [8, im["width"]], "counts": f"c{k}"}}
            for im in images[1:] for k in range(masks_per_image)]  # the first image of a shard: no mask
    return {"images": images, "annotations": anns,
            "stats": {"params": params or {"tau": 0.2}, "seconds": {"ncut": 1.0 + i}, "seconds_total": 2.0,
                      "eigen": {"solves": 3}, "backbone": "b"}}


def _write(folder: Path, shards: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        (folder / f"shard_{i:05d}.json").write_text(json.dumps(shard))
        (folder / f"shard_{i:05d}_gallery").mkdir(exist_ok=True)
        (folder / f"shard_{i:05d}_gallery" / f"s{i}.png").write_bytes(b"png")


def _merge(folder: Path, n: int, out: Path) -> int:
    return main(["merge-masks", "--shards-dir", str(folder), "--num-shards", str(n), "--out", str(out / "masks.json"),
                 "--summary", str(out / "summary.json"), "--gallery-out", str(out / "gallery")])


def test_streamed_merge_equals_concatenation(tmp_path: Path):
    shards = [_shard(i, 3, 2) for i in range(4)] + [{"images": [], "annotations": []}]
    _write(tmp_path / "mc", shards)
    assert _merge(tmp_path / "mc", 5, tmp_path) == 0
    images = [im for s in shards for im in s["images"]]
    anns = [dict(a, id=n + 1) for n, a in enumerate(a for s in shards for a in s["annotations"])]
    expect = {"info": {"description": "u2seg MaskCut class-agnostic pseudo-masks", "maskcut": {"tau": 0.2}},
              "images": images, "annotations": anns, "categories": [{"id": 1, "name": "fg", "supercategory": "fg"}]}
    assert (tmp_path / "masks.json").read_text() == json.dumps(expect, separators=(",", ":")) + "\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_images"] == 12 and summary["n_masks"] == 16 and summary["images_without_masks"] == 4
    assert summary["masks_per_image_histogram"] == {"0": 4, "2": 8}
    assert summary["seconds_by_step"] == {"ncut": 10.0} and summary["eigen"] == {"solves": 12}
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == [f"s{i}.png" for i in range(5)]
    assert not list(tmp_path.glob(".masks.json*"))  # no temporary left behind


def test_merge_errors_name_the_problem(tmp_path: Path, caplog):
    _write(tmp_path / "mc", [_shard(0, 2, 1), _shard(1, 2, 1)])
    assert _merge(tmp_path / "mc", 3, tmp_path / "a") == 1  # shard 2 missing
    assert "shard_00002.json" in caplog.text
    caplog.clear()
    dup = _shard(1, 2, 1)
    dup["images"][0]["id"] = 0  # image 0 is in shard 0 too
    dup["annotations"] = []
    _write(tmp_path / "dup", [_shard(0, 2, 1), dup])
    assert _merge(tmp_path / "dup", 2, tmp_path / "b") == 1
    assert "image id 0 appears in more than one shard" in caplog.text
    assert not (tmp_path / "b" / "masks.json").exists()
    caplog.clear()
    _write(tmp_path / "mixed", [_shard(0, 2, 1), _shard(1, 2, 1, {"tau": 0.3})])
    assert _merge(tmp_path / "mixed", 2, tmp_path / "c") == 1
    assert "different MaskCut parameters" in caplog.text
