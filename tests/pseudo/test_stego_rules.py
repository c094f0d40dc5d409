"""rules/stego.smk through Snakemake: stuff.model stego on hand-made feature shards (no backbone run)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tests.conftest import run_snakemake
from tests.pseudo.conftest import SIZES, make_synthetic

TINY_STEGO = {"dim": 6, "batch_size": 4, "max_steps": 4, "checkpoint_period": 2, "log_period": 2, "knn": 4,
              "num_neighbors": 2, "feature_samples": 4, "neg_samples": 2}


def test_stego_rules_make_the_stuff_outputs(tmp_path):
    work = tmp_path / "work dir"
    res = work / "results"
    data = make_synthetic(res / "images")  # = {RES}/images/manifest.json + features/shard_*.zarr (3 shards of 2)
    (res / "images" / "skipped.json").write_text("[]")
    config = {"dataset": "images", "images_dir": str(data.root / "images"), "features": {"shard_size": 2},
              "stuff": {"model": "stego", "k": 3, "stego": TINY_STEGO}}
    target = str(res / "images" / "pseudo" / "stuff_summary.json")
    run_snakemake(work, [target], config)
    summary = json.loads((res / "images" / "pseudo" / "stuff_summary.json").read_text())
    assert summary["model"] == "stego" and summary["images"] == 5 and summary["k"] == 3
    stego = res / "images" / "pseudo" / "stego"
    hist = json.loads((stego / "train_history.json").read_text())
    assert [r["step"] for r in hist["history"]] == [2, 4]
    shards = ["shard_00000", "shard_00001", "shard_00002"]
    assert (stego / "loss.png").is_file() and sorted(p.name for p in (stego / "maps").iterdir() if p.is_dir()) == shards
    # each `stego infer` run's resolved config sits beside its maps folder
    assert sorted(p.name for p in (stego / "maps").glob("*.config.json")) == [f"{s}.config.json" for s in shards]
    train_record = json.loads((stego / "trained.config.json").read_text())
    assert train_record["stage"] == "stego" and train_record["args"]["action"] == "train"
    assert train_record["args"]["k"] == 3 and train_record["args"]["out_model"] == "trained.npz"
    for im, (h, w) in zip(data.images, SIZES):
        png = np.asarray(Image.open(res / "images" / "pseudo" / "stuff" / im["file_name"]))
        assert png.shape == (h, w) and int(png.max()) < 3
    again = run_snakemake(work, [target], config)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_stego_checkpoint_needs_a_checkpoint(tmp_path):
    proc = run_snakemake(tmp_path, ["-n"], {"stuff": {"model": "stego_checkpoint"}}, check=False)
    assert proc.returncode != 0 and "stuff.checkpoint" in proc.stdout + proc.stderr


def test_stego_checkpoint_rules_pass_the_inference_settings(tmp_path):
    """stuff.stego_inference reaches `stego infer` (its resolved-config record) and shapes the maps."""
    from tests.pseudo.stego_seeded import write_seeded_checkpoint

    work = tmp_path / "work"
    res = work / "results"
    data = make_synthetic(res / "images")
    (res / "images" / "skipped.json").write_text("[]")
    write_seeded_checkpoint(tmp_path / "seeded.ckpt")
    config = {"dataset": "images", "images_dir": str(data.root / "images"), "features": {"shard_size": 2},
              "stuff": {"model": "stego_checkpoint", "checkpoint": str(tmp_path / "seeded.ckpt"), "k": 5,
                        "stego_inference": {"flip": False, "crop": "center", "crop_size": 24}}}
    run_snakemake(work, [str(res / "images" / "pseudo" / "stuff_summary.json")], config)
    record = json.loads((res / "images" / "pseudo" / "stego" / "maps" / "shard_00000.config.json").read_text())
    assert record["args"]["flip"] is False and record["args"]["crop"] == "center" and record["args"]["crop_size"] == 24
    for im, (h, w) in zip(data.images, SIZES):
        png = np.asarray(Image.open(res / "images" / "pseudo" / "stuff" / im["file_name"]))
        assert png.shape == (h, w) and (png < 5).any()
        assert (png == 255).any() == (h != w)  # void outside STEGO's centre crop
