"""configs/u2seg-imagenet.yaml: valid on top of config.yaml, and its eval_zero_shot DAG resolves."""
from __future__ import annotations

import copy

import jsonschema
import yaml

from tests.conftest import COCO_MINI, REPO, require_shared
from tests.snakemake_runner import run_snakemake
from u2seg import atomic, preflight

import numpy as np


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_imagenet_preset_validates_and_plans(tmp_path):
    preset = yaml.safe_load((REPO / "configs" / "u2seg-imagenet.yaml").read_text())
    cfg = _merge(yaml.safe_load((REPO / "config.yaml").read_text()), preset)
    jsonschema.validate(cfg, yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text()))
    assert preflight.check_dataset_names(cfg) == []
    assert (cfg["dataset"], cfg["zero_shot"]["train"], cfg["zero_shot"]["eval"]) == ("images", "images", ["coco-val"])
    # dry run of the target with a stand-in image folder: the DAG up to the ingest checkpoints
    coco = require_shared(COCO_MINI)
    atomic.save_png(tmp_path / "imgs" / "a.png", np.zeros((32, 32, 3), np.uint8))
    proc = run_snakemake(tmp_path / "work", ["eval_zero_shot", "-n"],
                         _merge(preset, {"images_dir": str(tmp_path / "imgs"), "coco_root": str(coco)}))
    out = proc.stdout + proc.stderr
    assert "checkpoint ingest" in out or "rule ingest" in out, out[-2000:]
    assert "coco_ready" in out
