"""Per-shard panoptic merge + validation, then the streaming concatenations: the same labels as the
whole-dataset `u2seg merge-panoptic` (segment ids may differ by a per-shard offset)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from tests.pseudo.conftest import SHARD_SIZE, Synthetic
from tests.pseudo.test_pipeline_cli import K, S, run_stages
from u2seg.cli import main
from u2seg.coco_format import rgb2id
from u2seg.pseudo.panoptic.shard import first_segment_id


def _sharded(data: Synthetic, pseudo: Path, out: Path) -> int:
    assert main(["cluster-instances", "--manifest", str(data.manifest), "--shard-size", str(SHARD_SIZE),
                 "--embed-dir", str(pseudo / "embed"), "--masks-dir", str(data.masks), "--k", str(K),
                 "--iterations", "20", "--seed", "0", "--chunk-size", "4",
                 "--out-instances", str(out / "instances.json"), "--out-centroids", str(out / "c.npy"),
                 "--summary", str(out / "cluster_summary.json"), "--out-shards", str(out / "inst")]) == 0
    n = json.loads((out / "inst" / "index.json").read_text())
    shards = out / "panoptic_shards"
    for s in range(len(n["shards"])):
        assert main(["merge-panoptic-shard", "--manifest", str(data.manifest), "--instances-dir", str(out / "inst"),
                     "--shard", str(s), "--shard-size", str(SHARD_SIZE), "--stuff-dir", str(pseudo / "stuff"),
                     "--k", str(K), "--num-stuff", str(S), "--gallery-size", "2",
                     "--out-json", str(shards / f"shard_{s:05d}.json"),
                     "--out-dir", str(shards / f"shard_{s:05d}")]) == 0
        assert main(["validate-panoptic", "--panoptic-json", str(shards / f"shard_{s:05d}.json"),
                     "--panoptic-dir", str(shards / f"shard_{s:05d}" / "panoptic"),
                     "--semantic-dir", str(shards / f"shard_{s:05d}" / "semantic"),
                     "--instances", str(out / "inst" / f"shard_{s:05d}.json"), "--num-things", str(K),
                     "--report", str(shards / f"shard_{s:05d}.validation.json")]) == 0
    assert main(["concat-panoptic", "--shards-dir", str(shards), "--num-shards", str(len(n["shards"])),
                 "--k", str(K), "--num-stuff", str(S), "--max-thing-overlap", "0.7",
                 "--cluster-summary", str(pseudo / "cluster_summary.json"),
                 "--stuff-summary", str(pseudo / "stuff_summary.json"), "--out-json", str(out / "panoptic.json"),
                 "--out-panoptic", str(out / "panoptic"), "--out-semantic", str(out / "semantic"),
                 "--gallery", str(out / "gallery"), "--summary", str(out / "summary.json")]) == 0
    assert main(["concat-validation", "--reports-dir", str(shards), "--num-shards", str(len(n["shards"])),
                 "--report", str(out / "validation.json")]) == 0
    return len(n["shards"])


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("seconds", "segment_ids")}


def test_sharded_merge_equals_whole_merge(synthetic: Synthetic, tmp_path: Path):
    whole = run_stages(synthetic, tmp_path / "whole")
    out = tmp_path / "sharded"
    assert _sharded(synthetic, whole, out) == 3
    # the per-shard instance files hold exactly the annotations of instances.json, shard by shard
    inst = json.loads((whole / "instances.json").read_text())
    assert (out / "instances.json").read_bytes() == (whole / "instances.json").read_bytes()
    parts = [json.loads((out / "inst" / f"shard_{s:05d}.json").read_text()) for s in range(3)]
    assert [a for p in parts for a in p["annotations"]] == inst["annotations"]
    assert [im for p in parts for im in p["images"]] == inst["images"]
    a, b = (json.loads((d / "panoptic.json").read_text()) for d in (whole, out))
    assert a["images"] == b["images"] and a["categories"] == b["categories"]
    for ann_a, ann_b in zip(a["annotations"], b["annotations"]):
        assert ann_a["file_name"] == ann_b["file_name"]
        pa = rgb2id(np.asarray(Image.open(whole / "panoptic" / ann_a["file_name"])))
        pb = rgb2id(np.asarray(Image.open(out / "panoptic" / ann_b["file_name"])))
        remap = {sa["id"]: sb["id"] for sa, sb in zip(ann_a["segments_info"], ann_b["segments_info"])}
        assert [dict(s, id=remap[s["id"]]) for s in ann_a["segments_info"]] == ann_b["segments_info"]
        assert np.array_equal(np.vectorize(lambda v: remap.get(v, 0))(pa), pb)
        assert (whole / "semantic" / ann_a["file_name"]).read_bytes() == (out / "semantic" / ann_b["file_name"]).read_bytes()
    ids = [s["id"] for ann in b["annotations"] for s in ann["segments_info"]]
    assert len(ids) == len(set(ids))  # still unique in the dataset (small enough for the 24-bit range)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (whole, out))
    assert _strip(sa) == _strip(sb) and sb["segment_ids"] == "unique in the dataset"
    assert sorted(p.name for p in (out / "gallery").iterdir()) == sorted(sa["gallery"])
    va, vb = (json.loads((d / "validation.json").read_text()) for d in (whole, out))
    assert va == vb and vb["ok"] is True
    # the PNG folders are hard links to the shard folders (no second copy on disk)
    png = out / "panoptic" / b["annotations"][0]["file_name"]
    assert png.stat().st_nlink == 2


def test_segment_id_offsets_and_the_24_bit_fallback():
    index = {"shards": [{"images": 2, "annotations": 3}, {"images": 2, "annotations": 0}, {"images": 1, "annotations": 4}]}
    assert [first_segment_id(index, s, 27)[0] for s in range(3)] == [1, 1 + 3 + 54, 1 + 57 + 54]
    big = {"shards": [{"images": 1_000_000, "annotations": 3_000_000}] * 2}
    assert first_segment_id(big, 1, 27) == (1, "shard")  # 2 * 30M > 2^24 - 1: unique per shard only


def test_concat_validation_fails_on_a_bad_shard(tmp_path: Path, caplog):
    good = {"panoptic": {"images": 2, "annotations": 2, "segments": 5, "categories": 5, "errors": 0, "messages": []},
            "ok": True}
    bad = {"panoptic": {"images": 1, "annotations": 1, "segments": 2, "categories": 5, "errors": 1,
                        "messages": ["image 7: PNG missing"]}, "ok": False}
    for i, rep in enumerate([good, bad]):
        (tmp_path / f"shard_{i:05d}.validation.json").write_text(json.dumps(rep))
    assert main(["concat-validation", "--reports-dir", str(tmp_path), "--num-shards", "2",
                 "--report", str(tmp_path / "v.json")]) == 1
    assert "image 7: PNG missing" in caplog.text
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["ok"] is False and rep["panoptic"]["images"] == 3 and rep["panoptic"]["errors"] == 1
    assert main(["concat-validation", "--reports-dir", str(tmp_path), "--num-shards", "3",
                 "--report", str(tmp_path / "w.json")]) == 1  # a missing shard report


def test_bounded_resolution_merge_is_consistent_at_full_size(synthetic: Synthetic, tmp_path: Path, caplog):
    """Images above --max-merge-pixels are merged on a smaller grid and pasted back: full-size PNGs whose
    areas and boxes the validator accepts, close to the full-resolution merge."""
    whole = run_stages(synthetic, tmp_path / "whole")
    out = tmp_path / "bounded"
    caplog.set_level(logging.INFO)
    assert main(["merge-panoptic", "--manifest", str(synthetic.manifest), "--instances", str(whole / "instances.json"),
                 "--stuff-dir", str(whole / "stuff"), "--k", str(K), "--num-stuff", str(S), "--gallery-size", "2",
                 "--max-merge-pixels", "600", "--out-json", str(out / "panoptic.json"),
                 "--out-panoptic", str(out / "panoptic"), "--out-semantic", str(out / "semantic"),
                 "--gallery", str(out / "gallery"), "--summary", str(out / "summary.json")]) == 0
    assert caplog.text.count("pasted back at full size") == 5  # every image (1,440-2,560 px) took that path
    assert main(["validate-panoptic", "--panoptic-json", str(out / "panoptic.json"), "--panoptic-dir",
                 str(out / "panoptic"), "--semantic-dir", str(out / "semantic")]) == 0
    pan = json.loads((out / "panoptic.json").read_text())
    agree = []
    for im, ann in zip(pan["images"], pan["annotations"]):
        full = np.asarray(Image.open(whole / "semantic" / ann["file_name"]))
        got = np.asarray(Image.open(out / "semantic" / ann["file_name"]))
        assert got.shape == full.shape == (im["height"], im["width"])
        agree.append((got == full).mean())
    assert min(agree) > 0.85, agree  # 600 px grids of 1,900-2,600 px images: borders move by a pixel or two
    summary = json.loads((out / "summary.json").read_text())
    fr = summary["pixel_fraction"]
    assert abs(fr["thing"] + fr["stuff"] + fr["void"] - 1) < 1e-5
    assert abs(fr["thing"] - json.loads((whole / "summary.json").read_text())["pixel_fraction"]["thing"]) < 0.1
