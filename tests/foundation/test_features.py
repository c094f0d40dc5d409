"""Feature shards: zarr v3 round trip, the CLI, and resume (only a missing shard is recomputed)."""
from __future__ import annotations

import json

import numpy as np
import zarr

from tests.conftest import run_snakemake
from u2seg.cli import main
from u2seg.features import open_shard, shard_arrays, store_shard, write_shard


def test_shard_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(3, 8, 4, 5)).astype(np.float32)
    glob = rng.normal(size=(3, 6)).astype(np.float32)
    path = tmp_path / "s.zarr"
    write_shard(path, dense, glob, np.array([5, 7, 9]), np.array([[10, 20], [30, 40], [50, 60]]),
                {"backbone": "x", "stride": 16})
    g = open_shard(path)
    assert g.metadata.zarr_format == 3
    assert g["dense"].dtype == np.float16 and g["dense"].shape == (3, 8, 4, 5)
    np.testing.assert_allclose(g["dense"][:], dense, atol=2e-3)
    np.testing.assert_array_equal(g["global"][:], glob)
    np.testing.assert_array_equal(g["image_id"][:], [5, 7, 9])
    np.testing.assert_array_equal(g["orig_size"][1], [30, 40])
    assert g.attrs["backbone"] == "x" and g.attrs["n_images"] == 3 and g.attrs["feature_dim"] == 8
    # the dask view documented in docs/architecture.md
    import dask.array as da

    assert da.from_zarr(zarr.open_array(str(path / "dense"), mode="r")).shape == (3, 8, 4, 5)
    # no temporary folders are left behind
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_in_memory_shard_reads_as_the_stored_one(tmp_path):
    """What the fused pass hands to MaskCut / embed in memory equals what they read from the zarr store."""
    rng = np.random.default_rng(1)
    mem = shard_arrays("s.zarr", rng.normal(size=(5, 6, 3, 4)).astype(np.float32), rng.normal(size=(5, 2)),
                       np.arange(5) + 10, np.full((5, 2), 32), {"backbone": "x", "stride": 16, "seconds": 0.5})
    assert open_shard(mem) is mem and str(mem) == "s.zarr (in memory)"
    store_shard(tmp_path / "s.zarr", mem)
    g = open_shard(tmp_path / "s.zarr")
    for key in ("dense", "global", "image_id", "orig_size"):
        assert g[key].dtype == mem[key].dtype and g[key].shape == mem[key].shape, key
        np.testing.assert_array_equal(g[key][:], mem[key])
        np.testing.assert_array_equal(g[key][1:3], mem[key][1:3])
    assert dict(g.attrs) == mem.attrs


def test_features_cli_on_samples(tmp_path):
    assert main(["ingest", "--kind", "samples", "--samples-dir", str(tmp_path / "img"),
                 "--manifest", str(tmp_path / "m.json"), "--skipped", str(tmp_path / "s.json")]) == 0
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert main(["features", "--manifest", str(tmp_path / "m.json"), "--shard", "1", "--shard-size", "3",
                 "--backbone", "random_vit_tiny", "--input-size", "64", "--device", "cpu",
                 "--out", str(tmp_path / "f.zarr")]) == 0
    g = open_shard(tmp_path / "f.zarr")
    ids = [im["id"] for im in manifest["images"][3:6]]
    assert list(g["image_id"][:]) == ids
    assert g["dense"].shape == (3, 192, 4, 4) and g.attrs["shard_index"] == 1
    assert [list(s) for s in g["orig_size"][:]] == [[im["height"], im["width"]] for im in manifest["images"][3:6]]


def test_resume_recomputes_only_missing_shard(tmp_path):
    cfg = {"backbone": "random_vit_tiny", "features": {"shard_size": 3, "input_size": 64}}
    run_snakemake(tmp_path, ["extract_features"], cfg)
    shards = sorted((tmp_path / "results" / "samples" / "features").glob("shard_*.zarr"))
    assert [s.name for s in shards] == ["shard_00000.zarr", "shard_00001.zarr", "shard_00002.zarr"]
    stamps = {s.name: (s / "zarr.json").stat().st_mtime_ns for s in shards}
    import shutil

    shutil.rmtree(shards[1])
    proc = run_snakemake(tmp_path, ["extract_features"], cfg)
    assert "features_shard" in proc.stdout + proc.stderr
    after = {s.name: (s / "zarr.json").stat().st_mtime_ns for s in shards}
    assert after["shard_00000.zarr"] == stamps["shard_00000.zarr"]
    assert after["shard_00002.zarr"] == stamps["shard_00002.zarr"]
    assert (shards[1] / "zarr.json").exists()
    log = (tmp_path / "results" / "logs" / "samples" / "features")
    assert sorted(p.name for p in log.iterdir()) == ["shard_00000.log", "shard_00001.log", "shard_00002.log"]


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os
    import stat

    from u2seg import atomic

    old = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        with atomic.atomic_path(tmp_path / "d", directory=True) as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
