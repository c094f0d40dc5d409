"""Bad input at the pipeline level: every odd image kind is converted and processed, or listed in
``skipped.json`` with its reason; the run completes; too many unreadable images fail the ingest rule
with a clear message.

Decisions (docs/reliability.md): images with a side below ``ingest.min_side`` (default 8 px: the 1x1
and the 5x40 image) are skipped; images at least ``min_side`` but smaller than a backbone patch (the
12x12 image) are resized up to ``features.input_size`` and processed like any other.
"""
from __future__ import annotations

import json

import numpy as np

from tests.configs import tiny_config
from tests.snakemake_runner import run_snakemake
from tests.reliability.helpers import ODD_IMAGES, expected_split
from u2seg.features import open_shard
from u2seg.manifest import image_stem


def test_every_odd_kind_is_processed_or_skipped_with_its_reason(odd_run):
    ok, skip = expected_split()
    manifest = json.loads((odd_run.out / "manifest.json").read_text())
    skipped = json.loads((odd_run.out / "skipped.json").read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in manifest["images"]}
    assert sizes == ok  # converted and processed, at their (EXIF-oriented) size
    reasons = {s["file_name"]: s["reason"] for s in skipped["skipped"]}
    assert set(reasons) == set(skip)
    for name, needle in skip.items():
        assert needle in reasons[name], (name, reasons[name])
    # nothing silently dropped: every image file is either in the manifest or in skipped.json
    assert skipped["num_images"] == len(ODD_IMAGES) == len(sizes) + len(reasons)
    assert manifest["num_skipped"] == len(skip)
    # per-image output names are unique: photo_rgb.jpg and photo_rgb.png must not share PNG names
    stems = [image_stem(im) for im in manifest["images"]]
    assert len({s.casefold() for s in stems}) == len(stems)
    assert image_stem(next(im for im in manifest["images"] if im["file_name"] == "photo_rgb.jpg")) == "photo_rgb"
    # the ingest log names each skipped file
    log = (odd_run.results / "logs" / "images" / "ingest.log").read_text()
    for name in skip:
        assert f"skipped {name}" in log


def test_features_cover_exactly_the_ingested_images(odd_run):
    manifest = json.loads((odd_run.out / "manifest.json").read_text())
    shards = sorted((odd_run.out / "features").glob("shard_*.zarr"))
    assert [s.name for s in shards] == ["shard_00000.zarr"]  # shard_size 16 >= 10 images
    g = open_shard(shards[0])
    assert list(g["image_id"][:]) == [im["id"] for im in manifest["images"]]
    assert [list(s) for s in g["orig_size"][:]] == [[im["height"], im["width"]] for im in manifest["images"]]
    dense = np.asarray(g["dense"][:], dtype=np.float32)
    assert dense.shape[0] == len(manifest["images"]) and dense.shape[2:] == (8, 8)  # 128 px / stride 16
    assert np.isfinite(dense).all() and np.isfinite(g["global"][:]).all()


def test_pseudo_labels_cover_the_ingested_images(odd_run):
    manifest = json.loads((odd_run.out / "manifest.json").read_text())
    panoptic = json.loads((odd_run.out / "pseudo" / "panoptic.json").read_text())
    assert sorted(a["image_id"] for a in panoptic["annotations"]) == sorted(im["id"] for im in manifest["images"])
    for ann in panoptic["annotations"]:
        assert (odd_run.out / "pseudo" / "panoptic" / ann["file_name"]).is_file()


def test_too_many_unreadable_images_fail_the_ingest_rule_clearly(odd_run, tmp_path):
    # same folder, default threshold 0.2 < 7/17 unreadable
    proc = run_snakemake(tmp_path, ["extract_features"],
                         tiny_config("small", dataset="images", images_dir=str(odd_run.images_dir)), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule ingest" in out
    results = tmp_path / "results"
    assert not (results / "images" / "manifest.json").exists()  # nothing downstream can start
    assert not (results / "images" / "features").exists()
    log = (results / "logs" / "images" / "ingest.log").read_text()
    n_skip = len(expected_split()[1])
    assert (f"{n_skip} of {len(ODD_IMAGES)} images ({n_skip / len(ODD_IMAGES):.1%}) could not be read, "
            "more than ingest.max_skipped_fraction=0.2") in log
    assert "Traceback" not in log  # a UserError: message only
    assert "empty file (0 bytes)" in log  # the first reasons are listed


def test_colliding_stems_get_distinct_output_names():
    from u2seg.manifest import assign_stems

    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.png"}, {"id": 3, "file_name": "A.tif"},
              {"id": 4, "file_name": "sub/b.png"}, {"id": 5, "file_name": "sub__b.png"}, {"id": 6, "file_name": "c.png"}]
    assign_stems(images)
    stems = [image_stem(im) for im in images]
    assert stems == ["a", "a__id2", "A__id3", "sub__b", "sub__b__id5", "c"]
    assert [("stem" in im) for im in images] == [False, True, True, False, True, False]  # only where needed
