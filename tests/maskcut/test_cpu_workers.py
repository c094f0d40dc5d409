"""`u2seg maskcut --cpu-workers N`: the same json and gallery PNGs as the in-process path, errors named."""
from __future__ import annotations

import json
import logging

import numpy as np
from PIL import Image

from tests.conftest import run_snakemake
from tests.maskcut.test_cli import _dataset, _maskcut, _shard

TIMING_KEYS = ("seconds", "seconds_total", "cpu_workers", "seconds_waiting_for_cpu")


def _outputs(tmp, name):
    data = json.loads((tmp / f"{name}.json").read_text())
    stats = data.pop("stats")
    assert stats["cpu_workers"] == int(name[-1])
    pngs = {p.name: p.read_bytes() for p in sorted((tmp / f"{name}_gallery").iterdir())}
    return data, {k: v for k, v in stats.items() if k not in TIMING_KEYS}, pngs


def test_workers_give_the_same_json_and_gallery(tmp_path):
    manifest, feats = _dataset(tmp_path)
    shard = _shard(tmp_path, manifest, feats, 0, slice(0, 3))
    # batch size 2: the second batch's N-cut runs while the workers refine the first batch
    assert _maskcut(tmp_path, shard, "w0", "--batch-size", "2", "--gallery-size", "3") == 0
    assert _maskcut(tmp_path, shard, "w2", "--batch-size", "2", "--gallery-size", "3", "--cpu-workers", "2") == 0
    data0, stats0, png0 = _outputs(tmp_path, "w0")
    data2, stats2, png2 = _outputs(tmp_path, "w2")
    assert len(data0["annotations"]) == 4 and len(png0) == 3
    assert json.dumps(data2) == json.dumps(data0)  # same masks, same ids, same order, same key order
    assert stats2 == stats0
    assert png2 == png0
    w0 = json.loads((tmp_path / "w0.json").read_text())["stats"]["seconds"]
    assert w0["crf"] > 0 and w0["eigen"] > 0 and "encode" in w0
    stats0 = json.loads((tmp_path / "w0.json").read_text())["stats"]
    assert stats0["seconds_waiting_for_cpu"] >= w0["crf"]  # in-process: the main process runs the CRF itself


def test_worker_error_names_the_image(tmp_path, caplog):
    manifest, feats = _dataset(tmp_path)
    shard = _shard(tmp_path, manifest, feats, 0, slice(0, 3))
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "img_22.png")  # no longer 70 x 50
    with caplog.at_level(logging.ERROR):
        assert _maskcut(tmp_path, shard, "bad", "--cpu-workers", "2", "--batch-size", "1") == 1
    assert "img_22.png: size changed since ingestion" in caplog.text
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad_gallery").exists()


def test_rules_pass_the_workers_and_split_the_threads(tmp_path):
    """maskcut.cpu_workers / features.loader_workers reach the commands; the maskcut job asks for one core
    per worker + one for the N-cut and gives torch one thread (dry run on ready shards)."""
    work = tmp_path / "work"
    ds = work / "results" / "samples"
    (ds / "images").mkdir(parents=True)
    manifest, feats = _dataset(ds / "images")
    (ds / "manifest.json").write_text(json.dumps(manifest))
    (ds / "skipped.json").write_text("[]")
    _shard(ds / "features", manifest, feats, 0, slice(0, 3))
    cfg = {"results": str(work / "results"), "features": {"shard_size": 3, "loader_workers": 2},
           "maskcut": {"cpu_workers": 3, "device": "cpu"}}
    proc = run_snakemake(work, ["maskcut_masks"], cfg, extra=["-n", "-p", "--forcerun", "features_shard"],
                         cores=8)
    out = proc.stdout + proc.stderr
    assert "--cpu-workers 3 --threads 1 " in out
    assert "--loader-workers 2" in out
    assert "threads: 4" in out
