"""Config and environment errors fail while the Snakefile is parsed (before any job), naming the cause.

Schema errors (invalid values, unknown keys) come from ``validate()``; environment errors (missing
dataset folder or COCO split, missing weights file, unwritable results folder) from
``u2seg.preflight`` called right after it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.configs import tiny_config
from tests.snakemake_runner import run_snakemake
from u2seg import preflight
from u2seg.errors import UserError

SMALL = tiny_config("small", dataset="samples")


def _fails_before_any_job(workdir: Path, config: dict, *needles: str) -> str:
    proc = run_snakemake(workdir, ["extract_features"], dict(SMALL, **config), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for needle in needles:
        assert needle in out, (needle, out[-3000:])
    # no job was scheduled, nothing was written
    assert "Select jobs to execute" not in out and "checkpoint ingest" not in out
    assert not (workdir / "results").exists()
    return out


@pytest.mark.parametrize("config,needles", [
    ({"features": dict(SMALL["features"], input_size=100)}, ["Error validating config", "input_size", "100"]),
    ({"ingest": {"max_skiped_fraction": 0.1}}, ["Error validating config", "max_skiped_fraction"]),
    ({"split": "folder"}, ["Error validating config", "folder"]),
], ids=["invalid-value", "unknown-key", "invalid-enum"])
def test_schema_errors(tmp_path, config, needles):
    _fails_before_any_job(tmp_path, config, *needles)


def test_missing_folder_weights_and_unwritable_results_are_all_named(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = _fails_before_any_job(
        tmp_path,
        {"dataset": "images", "images_dir": str(tmp_path / "no such folder"), "backbone": "dino_vits16",
         "weights": str(tmp_path / "missing.pth"), "results": str(tmp_path / "a-file" / "results")},
        "images_dir=", "no such folder", "is not an existing folder",
        "weights=", "missing.pth", "is not an existing file",
        "results=", "exists and is not a folder")
    assert "Traceback" not in out


@pytest.mark.parametrize("config,needles", [
    ({"dataset": "images", "images_dir": None}, ["dataset=images needs `images_dir`"]),
    ({"dataset": "coco", "split": "val", "coco_root": "COCO", "evaluate": {"download": False}},
     ["coco_root='COCO'", "instances_val2017.json", "val2017/ images folder", "evaluate.download"]),
    ({"dataset": "folder"}, ["dataset='folder' is not samples, images, coco or a name under `datasets`"]),
    ({"dataset": "voc", "datasets": {"voc": {"images": "VOC", "panoptic": "p.json"}}},
     ["datasets.voc.images='VOC' is not an existing folder", "`panoptic_dir`", "datasets.voc.panoptic='p.json'"]),
    ({"results": "/proc/u2seg-results"}, ["results='/proc/u2seg-results'", "cannot be created in /proc"]),
    ({"results": "out/{ds}"}, ["results='out/{ds}'", "may not contain"]),
], ids=["images-dir-unset", "coco-split-missing", "dataset-unknown", "coco-format-missing", "results-unwritable",
        "results-braces"])
def test_environment_errors(tmp_path, config, needles):
    (tmp_path / "COCO" / "annotations").mkdir(parents=True)  # a COCO root without the split
    _fails_before_any_job(tmp_path, config, *needles)


# --------------------------------------------------------------------- preflight unit checks (fast)
def _cfg(tmp_path, **kw):
    cfg = {"results": str(tmp_path / "results"), "dataset": "samples", "backbone": "efficientnet_lite2",
           "weights": None, "coco_root": "data/coco", "split": "val", "images_dir": None}
    cfg.update(kw)
    return cfg


def test_preflight_accepts_a_runnable_config_without_side_effects(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "w.pth").write_bytes(b"x")
    preflight.check(_cfg(tmp_path, dataset="images", images_dir=str(tmp_path / "imgs"),
                         backbone="dino_vitb8", weights=str(tmp_path / "w.pth")))
    preflight.check(_cfg(tmp_path, backbone="dino_vitb8", weights="https://example.org/w.pth"))  # URL: job time
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "w.pth"]  # results not created, probe removed


def test_preflight_read_only_results_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.geteuid() == 0:  # root writes anywhere: probe a read-only location instead
            found = preflight.check_results("/proc/self/u2seg")
        else:
            found = preflight.check_results(str(ro / "results"))
    finally:
        ro.chmod(0o700)
    assert found and "results=" in found[0]


def test_preflight_coco_complete_root_passes(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text("{}")
    (tmp_path / "coco" / "val2017").mkdir()
    preflight.check(_cfg(tmp_path, dataset="coco", coco_root=str(tmp_path / "coco")))
    with pytest.raises(UserError, match="train2017"):
        preflight.check(_cfg(tmp_path, dataset="coco", coco_root=str(tmp_path / "coco"), split="train"))
    # with evaluate.download the missing split is fetched by rule coco_ready: not an error
    preflight.check(_cfg(tmp_path, dataset="coco", coco_root=str(tmp_path / "nope"), evaluate={"download": True}))
