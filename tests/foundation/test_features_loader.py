"""`u2seg features --loader-workers N`: the same shard as decoding in the main thread; errors named."""
from __future__ import annotations

import json
import logging

import numpy as np

from u2seg.cli import main
from u2seg.features import open_shard


def _ingest(tmp_path):
    assert main(["ingest", "--kind", "samples", "--samples-dir", str(tmp_path / "img"),
                 "--manifest", str(tmp_path / "m.json"), "--skipped", str(tmp_path / "s.json")]) == 0
    return json.loads((tmp_path / "m.json").read_text())


def _features(tmp_path, name, workers):
    return main(["features", "--manifest", str(tmp_path / "m.json"), "--shard", "0", "--shard-size", "5",
                 "--backbone", "random_vit_tiny", "--input-size", "64", "--batch-size", "2", "--device", "cpu",
                 "--threads", "1", "--loader-workers", str(workers), "--out", str(tmp_path / f"{name}.zarr")])


def test_loader_workers_give_the_same_shard(tmp_path):
    manifest = _ingest(tmp_path)
    for workers in (0, 1, 3):
        assert _features(tmp_path, f"w{workers}", workers) == 0
    ref = open_shard(tmp_path / "w0.zarr")
    assert list(ref["image_id"][:]) == [im["id"] for im in manifest["images"][:5]]
    assert ref["dense"].shape[0] == 5  # batches of 2, 2 and 1
    for workers in (1, 3):
        g = open_shard(tmp_path / f"w{workers}.zarr")
        for key in ("dense", "global", "image_id", "orig_size"):
            np.testing.assert_array_equal(g[key][:], ref[key][:])


def test_loader_error_names_the_image(tmp_path, caplog):
    manifest = _ingest(tmp_path)
    bad = manifest["images"][3]
    (tmp_path / "img" / bad["file_name"]).write_bytes(b"not an image")
    with caplog.at_level(logging.ERROR):
        assert _features(tmp_path, "bad", 2) == 1
    assert bad["file_name"] in caplog.text and "not a recognised image format" in caplog.text
    assert not (tmp_path / "bad.zarr").exists()
